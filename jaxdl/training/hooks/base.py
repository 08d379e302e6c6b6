"""The hook: a small object the loop calls at fixed points of a run, in the spirit of CLU's
periodic actions. Every method does nothing by default; a hook overrides the ones its
concern needs. Hooks run in the order the loop lists them, and share only the Context."""

from __future__ import annotations

from typing import Any, NamedTuple


class Cadence(NamedTuple):
    """What is due after a step: the loop waits for the device only when one of them is."""

    log: bool
    eval: bool
    save: bool  # checkpoint.every in steps or epochs
    stop: bool  # a stop was requested (a signal): checkpoint and raise RunInterrupted


class Hook:
    def on_start(self, ctx) -> None:
        """After the run resumed (or started) and before its first step."""

    def before_step(self, ctx, step: int) -> None:
        """Before train step `step` (1-based) is dispatched."""

    def after_step(self, ctx, step: int, metrics: Any) -> None:
        """After step `step` was dispatched; `metrics` still on the device. Called every
        step: keep it cheap, never wait for the device here unless the hook must."""

    def evaluations(self, ctx, state, *, step: int, splits) -> dict[str, dict[str, float]]:
        """More metrics to report beside every evaluation of `splits` for `state`."""
        return {}

    def after_eval(self, ctx, step: int, results: dict[str, dict[str, float]]) -> None:
        """After an evaluation at `step` was logged."""

    def at_sync(self, ctx, step: int, due: Cadence, results: dict[str, dict[str, float]]
                ) -> None:
        """At a step where the loop waited for the device (`due` says why); `results` is
        the evaluation at this step, empty when there was none."""

    def at_end(self, ctx, step: int) -> None:
        """The run is over at `step` (finished or stopped early): final reports."""

    def on_close(self, ctx) -> None:
        """Always, last, also when the run failed or was interrupted."""
