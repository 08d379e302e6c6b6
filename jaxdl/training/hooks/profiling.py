"""A jax.profiler trace of train steps START..END (`logging.profile_steps='START:END'`),
each step annotated (`StepTraceAnnotation('train', step_num=step)`), written to
`RunDir.profile` in the layout TensorBoard's profile plugin and xprof list:
<workdir>/profile/plugins/profile/<run>/<host>.xplane.pb. The trace stops after step END
has finished on the device. Off (no hook at all) when the setting is ''."""

from __future__ import annotations

from pathlib import Path

import jax

from jaxdl.schema import ConfigError
from jaxdl.training.hooks.base import Hook


def parse_steps(text: str, total_steps: int) -> tuple[int, int]:
    """(START, END) of 'START:END', checked against the run's length."""
    start, _, end = text.partition(":")
    start, end = int(start), int(end)  # validate() checked the form
    if end > total_steps:
        raise ConfigError(f"config.logging.profile_steps={text!r}: the run has "
                          f"{total_steps} steps; END must be <= {total_steps}")
    return start, end


class Profile(Hook):
    def __init__(self, directory: Path, first: int, last: int):
        self.directory, self.first, self.last = Path(directory), first, last
        self.tracing = False
        self.annotation = None

    def before_step(self, ctx, step: int) -> None:
        if not self.first <= step <= self.last:
            return
        if not self.tracing:  # also when a resumed run starts inside the range
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.tracing = True
        self.annotation = jax.profiler.StepTraceAnnotation("train", step_num=step)
        self.annotation.__enter__()

    def after_step(self, ctx, step: int, metrics) -> None:
        if self.annotation is not None:
            self.annotation.__exit__(None, None, None)
            self.annotation = None
        if self.tracing and step == self.last:
            jax.block_until_ready(ctx.state)  # the trace holds END's device work
            self.stop()

    def stop(self) -> None:
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False

    def on_close(self, ctx) -> None:
        if self.annotation is not None:
            self.annotation.__exit__(None, None, None)
            self.annotation = None
        self.stop()  # a run that failed inside the range still leaves its trace
