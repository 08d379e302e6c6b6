"""Checkpoints: by steps or epochs (`checkpoint.every='10 epochs'`), by wall time
(`checkpoint.every='10 minutes'`, what a preemptible job needs), on a stop request, when
early stopping keeps the best so far, and at the end.

Wall time is checked only where the loop already waits for the device for a log or an
evaluation: those steps follow from the step count alone, so every process of a multi-host
run asks at the same steps, and process 0's clock decides for all (broadcast), so they
save together. The interval is therefore met at the first log or evaluation after it
passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxdl.training.errors import CheckpointWriteError, os_reason
from jaxdl.training.hooks.base import Cadence, Hook


class Checkpointing(Hook):
    def __init__(self, seconds: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds  # 0: by steps only (the loop's cadence says when)
        self.clock = clock
        self.last = None

    def on_start(self, ctx) -> None:
        self.last = self.clock()

    def time_is_up(self) -> bool:
        up = bool(self.seconds) and self.clock() - self.last >= self.seconds
        if jax.process_count() > 1:  # every process calls this at the same steps
            up = bool(multihost_utils.broadcast_one_to_all(np.asarray(up)))
        return up

    def at_sync(self, ctx, step: int, due: Cadence, results) -> None:
        timed = bool(self.seconds) and (due.log or due.eval) and self.time_is_up()
        if due.save or due.stop or timed or ctx.save_requested or ctx.stopped_early:
            save(ctx, step, ctx.monitored(results))
            self.last = self.clock()
        ctx.save_requested = False


def save(ctx, step: int, monitor: float | None) -> None:
    """Writes the checkpoint of `step`: the state and the run's record."""
    checkpoints, backend = ctx.checkpoints, ctx.trainer.backend
    record = ctx.record()
    previous = checkpoints.steps()
    try:
        checkpoints.save(step, backend.get_state(ctx.state), record, monitor=monitor)
    except Exception as e:  # noqa: BLE001 - disk full, quota, permissions, orbax errors
        kept = (f"the checkpoint at step {previous[-1]} stays usable"
                if previous else "no earlier checkpoint exists")
        raise CheckpointWriteError(
            f"could not write the checkpoint at step {step} in {checkpoints.directory} "
            f"({os_reason(e)}); {kept}. Free disk space and rerun the same command to "
            "resume") from e
