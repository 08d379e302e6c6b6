"""The exponential moving average of the weights (`optimizer.ema_decay` > 0), evaluated
beside the raw weights. The train step keeps it (`TrainState.ema_params`, updated inside the
compiled step from the parameters every device holds alike, so it does not depend on the
device count) and every checkpoint holds it; this hook reports it: each evaluated split
`<split>` gets a `<split>_ema` record (validation_ema, test_ema in metrics.jsonl, the
summary and TensorBoard), which `checkpoint.monitor` may name ('validation_ema/accuracy').
The task's host metrics (`Task.on_eval`) are computed for it too; its files are not written."""

from __future__ import annotations

from jaxdl.training.build import EMA_SUFFIX
from jaxdl.training.hooks.base import Hook


class EMA(Hook):
    def evaluations(self, ctx, state, *, step: int, splits):
        averaged = state.replace(params=state.ema_params)
        results = ctx.trainer.evaluate_all(averaged, step=step, final=False,
                                           workdir=ctx.workdir, write_files=False,
                                           splits=splits)
        return {name + EMA_SUFFIX: result for name, result in results.items()}
