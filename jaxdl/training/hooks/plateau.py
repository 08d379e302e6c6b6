"""Reduce-on-plateau's monitored value: each evaluation of `checkpoint.monitor` is put in
the optimizer state (`optim.observe`), where the plateau transformation takes it at the
next update. It travels with the optimizer state, checkpoint included, so neither the
train state nor the task's update knows of it."""

from __future__ import annotations

import numpy as np

from jaxdl.training import optim
from jaxdl.training.hooks.base import Hook


class PlateauMonitor(Hook):
    def __init__(self, mode: str):
        self.sign = -1.0 if mode == "max" else 1.0  # the plateau minimises

    def after_eval(self, ctx, step: int, results) -> None:
        value = np.float32(self.sign * ctx.monitored(results))
        ctx.state = ctx.state.replace(opt_state=optim.observe(
            ctx.state.opt_state, value, place=ctx.trainer.backend.put_state))
