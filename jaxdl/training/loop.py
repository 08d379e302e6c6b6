"""The one training loop: every experiment runs through `train_and_evaluate`.

`run` moves batches through the compiled step and keeps the cadence (log, evaluate,
checkpoint, stop); everything else a run does is a hook (jaxdl/training/hooks/), one
concern per module, sharing the run's Context (context.py). Building the run from its
config is build.py; the run's exceptions are errors.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jaxdl import runs
from jaxdl.training.build import (EVAL_SPLITS, TEST, TRAIN, Plan, Trainer,  # noqa: F401
                                  build, load_splits)
from jaxdl.training.context import open_run, truncate_metrics
from jaxdl.training.errors import (CheckpointWriteError, NonFiniteError,  # noqa: F401
                                   OutOfMemoryError, RunInterrupted, explain_out_of_memory)
from jaxdl.training.hooks import (checkpointing, early_stopping, ema, nonfinite, plateau,
                                  plots, profiling, pruning, summary, warm_start)
from jaxdl.training.hooks.base import Cadence, Hook
from jaxdl.training import optim
from jaxdl.training.window import Window

# Names tests and tools used when all of this lived here.
PREVIEW_FILENAME = runs.PREVIEW_FILENAME
_Window, _truncate_metrics = Window, truncate_metrics
_initial_weights = warm_start.initial_weights


def make_hooks(config, trainer: Trainer, workdir: Path,
               clock: Callable[[], float] = time.monotonic) -> list[Hook]:
    """The hooks of a run, in the order they are called; built before anything is written,
    so a setting they refuse is bad input. A hook that is off is not in the list."""
    hooks: list[Hook] = []
    if config.init_from:
        hooks.append(warm_start.WarmStart(config.init_from, workdir,
                                          reinit=config.init_from_reinit,
                                          abstract_state=trainer.abstract_state))
    if config.optimizer.ema_decay > 0:
        hooks.append(ema.EMA())
    if not config.guard.skip_nonfinite:
        hooks.append(nonfinite.NonFiniteGuard(config.parallel.max_in_flight))
    if config.logging.profile_steps:
        first, last = profiling.parse_steps(config.logging.profile_steps,
                                            trainer.plan.total_steps)
        hooks.append(profiling.Profile(runs.RunDir(workdir).profile, first, last,
                                       trainer.train_step_hlo, trainer.backend.num_devices))
    if optim.observes(trainer.abstract_state.opt_state):  # a plateau schedule
        hooks.append(plateau.PlateauMonitor(config.checkpoint.mode))
    hooks += [early_stopping.EarlyStopping(config),
              checkpointing.Checkpointing(trainer.plan.checkpoint_seconds, clock)]
    if trainer.prune is not None:
        hooks.append(pruning.Pruning(trainer.prune))
    if config.logging.plot:
        hooks.append(plots.Plots())
    return hooks + [summary.Summary()]  # last: summary.json marks the run complete


def run(config, workdir: Path, *, stream=sys.stderr,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic) -> Iterator[dict[str, Any]]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if it has one;
    yields one report per evaluation. The last report carries the run summary.

    `should_stop` is polled after every step; when it turns true the run is checkpointed
    and RunInterrupted is raised. A non-finite step raises NonFiniteError and leaves the
    last good checkpoint as the latest (unless config.guard.skip_nonfinite). `clock`
    (seconds) times `checkpoint.every` given as wall time.
    """
    workdir = Path(workdir)
    trainer = build(config)
    hooks = make_hooks(config, trainer, workdir, clock)
    ctx = open_run(config, workdir, trainer, hooks, stream)
    plan, total, backend = trainer.plan, trainer.plan.total_steps, trainer.backend
    # The test split is evaluated at the end (and at the best checkpoint), or at every
    # evaluation when asked, for curves: it never chooses anything.
    periodic = [name for name in trainer.eval_splits
                if name != TEST or config.train.test_every_eval]
    batches = None
    try:
        for hook in hooks:
            hook.on_start(ctx)
        if ctx.stopped_early or ctx.start == total:  # killed before the summary
            yield {"step": ctx.start, "summary": _finish(ctx, hooks, ctx.start)}
            return
        segment_start = time.perf_counter()
        batches = trainer.feed.train(TRAIN, ctx.start)
        for step in range(ctx.start + 1, total + 1):
            for hook in hooks:
                hook.before_step(ctx, step)
            ctx.state, metrics = trainer.train_step(ctx.state, next(batches))
            ctx.window.add(step, metrics)
            ctx.examples_seen += config.data.batch_size
            for hook in hooks:
                hook.after_step(ctx, step, metrics)
            due = Cadence(log=Plan.due(step, plan.log_every, total),
                          eval=Plan.due(step, plan.eval_every, total),
                          save=Plan.due(step, plan.checkpoint_every, total), stop=should_stop())
            if not any(due):
                continue
            ctx.window.absorb(backend, skip_nonfinite=config.guard.skip_nonfinite)  # waits
            ctx.train_seconds += time.perf_counter() - segment_start
            report, results = {"step": step}, {}
            if due.log or due.eval:
                ctx.log_train(step)
            if due.eval:
                last = step == total
                results = ctx.evaluate(ctx.state, step=step, final=last, write_files=ctx.primary,
                                       splits=trainer.eval_splits if last else periodic,
                                       limit=trainer.eval_limit(last))
                ctx.log_eval(step, results, last)
                report.update(results)
                for hook in hooks:
                    hook.after_eval(ctx, step, results)
            for hook in hooks:
                hook.at_sync(ctx, step, due, results)
            if ctx.stopped_early or step == total:
                report["summary"] = _finish(ctx, hooks, step)
                yield report
                return
            if due.stop:
                raise RunInterrupted(step)
            if due.eval:
                yield report
            segment_start = time.perf_counter()
    finally:
        if batches is not None:
            batches.close()  # stops a prefetching thread
        ctx.close()
        for hook in hooks:
            hook.on_close(ctx)


def _finish(ctx, hooks: list[Hook], step: int) -> dict[str, Any]:
    for hook in hooks:
        hook.at_end(ctx, step)
    return ctx.summary


def train_and_evaluate(config, workdir: Path, *, stream=sys.stderr,
                       should_stop: Callable[[], bool] = lambda: False,
                       clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Runs (or resumes) the whole training; returns the summary, also in summary.json."""
    report = {}
    for report in run(config, workdir, stream=stream, should_stop=should_stop, clock=clock):
        pass
    return report["summary"]
