"""curves.png: every logged metric over steps, drawn at the end, and from what was logged
so far when the run fails or is interrupted (`logging.plot`; process 0 only)."""

from __future__ import annotations

from jaxdl import runs
from jaxdl.training import writers
from jaxdl.training.hooks.base import Hook

_BOOKKEEPING = ("epoch", "examples", "skipped_steps")


class Plots(Hook):
    def __init__(self):
        self.drawn = False

    def at_end(self, ctx, step: int) -> None:
        self.draw(ctx)

    def on_close(self, ctx) -> None:
        if not self.drawn:  # the curves so far
            self.draw(ctx)

    def draw(self, ctx) -> None:
        self.drawn = True
        if not ctx.primary:
            return
        records = [{k: v for k, v in r.items() if k not in _BOOKKEEPING}
                   for r in writers.read_metrics(ctx.workdir / writers.METRICS_FILENAME)]
        writers.plot_curves(records, ctx.workdir / runs.CURVES_FILENAME,
                            title=f"{ctx.config.model.name} on {ctx.config.data.name}")
