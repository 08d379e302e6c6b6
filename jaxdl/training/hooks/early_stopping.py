"""Early stopping on `checkpoint.monitor`: the best value so far (kept on disk when
`checkpoint.keep_best`), and after `early_stopping.patience` evaluations without an
improvement of more than `min_delta`, the best checkpoint restored and evaluated as the
run's final result. With patience 0 it only keeps the best."""

from __future__ import annotations

from jaxdl.training.build import is_test
from jaxdl.training.context import better
from jaxdl.training.hooks.base import Hook


class EarlyStopping(Hook):
    def __init__(self, config):
        self.patience = config.early_stopping.patience
        self.min_delta = config.early_stopping.min_delta
        self.mode = config.checkpoint.mode
        self.keep_best = bool(config.checkpoint.keep_best)

    def on_start(self, ctx) -> None:
        # Killed after the last checkpoint but before the summary: finish the bookkeeping.
        if self.patience and ctx.stopping["bad_evals"] >= self.patience:
            ctx.stopped_early = True

    def after_eval(self, ctx, step: int, results) -> None:
        stopping, monitored = ctx.stopping, ctx.monitored(results)
        if better(monitored, stopping["best"], self.mode, self.min_delta):
            stopping.update(best=monitored, best_step=step, bad_evals=0)
            ctx.save_requested |= self.keep_best  # early stopping restores it
        else:
            stopping["bad_evals"] += 1
            ctx.stopped_early = bool(self.patience) and stopping["bad_evals"] >= self.patience

    def at_end(self, ctx, step: int) -> None:
        """Restores the best checkpoint, evaluates it on every eval split, says which won."""
        if not ctx.stopped_early:
            return
        trainer, stopping, plan = ctx.trainer, ctx.stopping, ctx.plan
        best_step = stopping["best_step"]
        host_state, _, _ = ctx.checkpoints.restore(trainer.abstract_state, step=best_step)
        results = ctx.evaluate(trainer.backend.put_state(host_state), step=best_step,
                               final=True, splits=trainer.eval_splits,
                               write_files=ctx.primary, limit=trainer.eval_limit(True))
        ctx.final.update(results)
        for name in results:
            if is_test(name):
                ctx.best[name] = {**results[name], "step": best_step}
        ctx.message(
            f"early stopping at step {step} (epoch {step / plan.steps_per_epoch:g}): "
            f"{ctx.config.checkpoint.monitor} did not improve by more than {self.min_delta} "
            f"for {stopping['bad_evals']} evaluations; the best, {stopping['best']:.4f} at "
            f"step {best_step} (epoch {best_step / plan.steps_per_epoch:g}), is restored: "
            + "  ".join(f"{name} {k} {v:.4f}" for name in results
                        for k, v in results[name].items() if k != "examples"))
        ctx.summary_extra["early_stopping"] = {
            "stopped_at_step": step, "best_step": best_step,
            "best_epoch": best_step / plan.steps_per_epoch,
            "monitor": ctx.config.checkpoint.monitor, "best_value": stopping["best"],
            "final_is_best_checkpoint": True}
