"""summary.json, the run's completion marker, written last of all its files: the final and
best metrics per split, the test split at the checkpoint chosen on validation, the monitor,
steps, time and throughput."""

from __future__ import annotations

import time
from typing import Any

from jaxdl import runs
from jaxdl.training.build import EMA_SUFFIX, TEST
from jaxdl.training.hooks.base import Hook


class Summary(Hook):
    def at_end(self, ctx, step: int) -> None:
        if not ctx.stopped_early:
            ctx.best.update(test_at_best(ctx, ctx.stopping["best_step"], step))
        trainer, plan = ctx.trainer, ctx.plan
        summary = {
            "final": ctx.final, "best": ctx.best, "monitor": trainer.task.monitor,
            "monitor_mode": trainer.task.monitor_mode, "steps": step,
            "epochs": step / plan.steps_per_epoch, "resumed_from_step": ctx.start,
            "train_examples_per_second": ctx.examples_seen / max(ctx.train_seconds, 1e-9),
            # Of the whole run, every segment (process) since step 0.
            "train_seconds": ctx.train_seconds,
            # Of this segment only: this process, which started at resumed_from_step.
            "segment_compile_seconds": trainer.compile_seconds,
            "segment_wall_seconds": time.perf_counter() - ctx.wall_start,
            # The step loop's time blocked on the next batch.
            "segment_input_wait_seconds": trainer.feed.wait_seconds,
            **ctx.summary_extra}
        if ctx.primary:
            runs.RunDir(ctx.workdir).write_summary(summary)
        ctx.summary = summary


def test_at_best(ctx, best_step: int | None, step: int) -> dict[str, Any]:
    """The test split's metrics at the checkpoint chosen on validation (`best_step`), as
    `{"test": {..., "step": best_step}}` (and "test_ema" with EMA); empty without a test
    split or when that checkpoint was not kept (`checkpoint.keep_best=0`): then only the
    end is reported."""
    trainer = ctx.trainer
    if TEST not in trainer.eval_splits or best_step is None:
        return {}
    names = [name for name in (TEST, TEST + EMA_SUFFIX) if name in ctx.final]
    if best_step == step:
        return {name: {**ctx.final[name], "step": step} for name in names}
    if best_step not in ctx.checkpoints.steps():
        return {}
    host_state, _, _ = ctx.checkpoints.restore(trainer.abstract_state, step=best_step)
    # The task's host metrics too (NSE, Frechet distance...); no files: they show the end.
    results = ctx.evaluate(trainer.backend.put_state(host_state), step=best_step, final=False,
                           splits=[TEST], write_files=False, limit=trainer.eval_limit(True))
    ctx.message(f"test at the best {ctx.config.checkpoint.monitor} checkpoint (step "
                f"{best_step}): " + "  ".join(f"{k} {v:.4f}" for k, v in results[TEST].items()
                                              if k != "examples"))
    return {name: {**result, "step": best_step} for name, result in results.items()}
