"""The train metrics of the steps since the last log, and every step's finiteness check."""

from __future__ import annotations

import math
from typing import Any

from jaxdl.training import parallel
from jaxdl.training.errors import NonFiniteError


def mean_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Merged (sum, count) metrics divided: the mean over every example counted."""
    count = sums.get("count", 0.0)
    if not count:  # every step of the window was skipped
        return {"loss": math.nan}
    return {k: v / count for k, v in sums.items() if k != "count"}


class Window:
    """Train metrics of the steps since the last log: kept on device until fetched, then
    summed on the host in step order, so a resumed run sums exactly as an uninterrupted one
    (the partial sums travel in the checkpoint). Every step's finiteness is checked here."""

    def __init__(self, sums: dict[str, float] | None = None,
                 scalars: dict[str, float] | None = None, skipped: int = 0, steps: int = 0):
        self.pending: list[tuple[int, Any]] = []
        self.sums = dict(sums or {})
        self.scalars = dict(scalars or {})
        self.skipped = skipped
        self.steps = steps  # fetched in this window, skipped ones included
        self.last_finite: tuple[int, dict[str, float]] | None = None

    def add(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))

    def absorb(self, backend: parallel.Backend, *, skip_nonfinite: bool) -> None:
        """Fetches the pending steps (waiting for the device) and merges them in order.

        A non-finite step raises NonFiniteError naming it, unless `skip_nonfinite`, where
        the step left the state unchanged and only counts as skipped.
        """
        fetched = backend.get_metrics([metrics for _, metrics in self.pending])
        pending, self.pending = self.pending, []
        for (step, _), metrics in zip(pending, fetched):
            sums = {name: float(value) for name, value in metrics["sums"].items()}
            scalars = {name: float(value) for name, value in metrics["scalars"].items()}
            health = {"loss": sums["loss"] / sums["count"], "grad_norm": scalars["grad_norm"],
                      "param_norm": scalars["param_norm"]}
            self.steps += 1
            if not scalars.pop("finite"):
                if skip_nonfinite:
                    self.skipped += 1
                    continue
                last = (f"the last finite step was {self.last_finite[0]}: " + ", ".join(
                    f"{k} {v:.6g}" for k, v in self.last_finite[1].items())
                    if self.last_finite else "no finite step was fetched before it")
                raise NonFiniteError(
                    f"non-finite training at step {step}: " + ", ".join(
                        f"{k} {v}" for k, v in health.items()) + f"; {last}")
            self.last_finite = (step, health)
            for name, value in sums.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
            self.scalars = scalars

    def take(self, backend: parallel.Backend, *, skip_nonfinite: bool, step: int,
             max_skipped_fraction: float) -> dict[str, float]:
        """The window's mean metrics, last scalars and skipped steps; starts a new window.
        Raises NonFiniteError when more than `max_skipped_fraction` of the window's steps
        were skipped: a model that only survives by skipping is not training."""
        self.absorb(backend, skip_nonfinite=skip_nonfinite)
        if skip_nonfinite and self.skipped > max_skipped_fraction * self.steps:
            raise NonFiniteError(
                f"{self.skipped} of the {self.steps} steps up to step {step} were non-finite "
                f"and skipped (more than config.guard.max_skipped_fraction="
                f"{max_skipped_fraction}); the last finite step was " + (
                    f"{self.last_finite[0]}: " + ", ".join(
                        f"{k} {v:.6g}" for k, v in self.last_finite[1].items())
                    if self.last_finite else "not in this window"))
        out = {**mean_metrics(self.sums), **self.scalars}
        if skip_nonfinite:
            out["skipped_steps"] = float(self.skipped)
        self.sums, self.scalars, self.skipped, self.steps = {}, {}, 0, 0
        return out

    def snapshot(self, backend: parallel.Backend, *, skip_nonfinite: bool) -> dict[str, Any]:
        self.absorb(backend, skip_nonfinite=skip_nonfinite)
        return {"sums": dict(self.sums), "scalars": dict(self.scalars), "skipped": self.skipped,
                "steps": self.steps}

