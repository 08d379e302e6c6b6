"""The sparsity of a pruned run (`config.prune`): the share of zeros among the prunable
weights at every evaluation (metrics.jsonl, split 'prune'), and at the end a table per
prunable parameter in the log and in summary.json ('sparsity', with the model's non-zero
parameter count). The masks themselves live in the optimizer state (training/prune.py)."""

from __future__ import annotations

from jaxdl.training import prune as prune_lib
from jaxdl.training.hooks.base import Hook

SPLIT = "prune"


class Pruning(Hook):
    def __init__(self, prune: prune_lib.Prune):
        self.prune = prune

    def report(self, ctx) -> dict:
        params = ctx.trainer.backend.get_state(ctx.state).params
        return prune_lib.sparsity_report(self.prune, params)

    def after_eval(self, ctx, step: int, results) -> None:
        report = self.report(ctx)
        ctx.writer.write(step, SPLIT, {"sparsity": report["prunable"],
                                       "nonzero_params": report["nonzero_params"]})

    def at_end(self, ctx, step: int) -> None:
        report = self.report(ctx)
        width = max(map(len, report["layers"]))
        ctx.message(f"sparsity at step {step} (target {self.prune.final:g}, scope "
                    f"{self.prune.scope}): {report['prunable']:.4f} of the prunable weights; "
                    f"{report['nonzero_params']:,} of {report['params']:,} parameters non-zero")
        for path, share in report["layers"].items():
            ctx.message(f"  {path:<{width}}  {share:.4f}")
        ctx.summary_extra["sparsity"] = report
