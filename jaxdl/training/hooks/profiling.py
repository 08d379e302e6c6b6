"""A jax.profiler trace of train steps START..END (`logging.profile_steps='START:END'`),
each step annotated (`StepTraceAnnotation('train', step_num=step)`), written to
`RunDir.profile` in the layout TensorBoard's profile plugin and xprof list:
<workdir>/profile/plugins/profile/<run>/<host>.xplane.pb, with a Perfetto JSON beside it.
The trace stops after step END has finished on the device; then `profile/ops.md` tables
where the traced steps' time went, per XLA op and per JAX primitive, named by the model code
(`jaxdl.training.op_profile`). Off (no hook at all) when the setting is ''."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

from jaxdl.schema import ConfigError
from jaxdl.training import op_profile
from jaxdl.training.hooks.base import Hook

OPS_FILENAME = "ops.md"
OPS_ROWS = 20  # rows of each table in ops.md


def parse_steps(text: str, total_steps: int) -> tuple[int, int]:
    """(START, END) of 'START:END', checked against the run's length."""
    start, _, end = text.partition(":")
    start, end = int(start), int(end)  # validate() checked the form
    if end > total_steps:
        raise ConfigError(f"config.logging.profile_steps={text!r}: the run has "
                          f"{total_steps} steps; END must be <= {total_steps}")
    return start, end


class Profile(Hook):
    """`hlo_text` gives the compiled train step's HLO (names the ops in ops.md); `devices`
    is how many devices run it (the table sums over them)."""

    def __init__(self, directory: Path, first: int, last: int,
                 hlo_text: Callable[[], str], devices: int):
        self.directory, self.first, self.last = Path(directory), first, last
        self.hlo_text, self.devices = hlo_text, devices
        self.tracing = False
        self.annotation = None
        self.traced_steps = 0
        self.earlier_traces: set[Path] = set()

    def before_step(self, ctx, step: int) -> None:
        if not self.first <= step <= self.last:
            return
        if not self.tracing:  # also when a resumed run starts inside the range
            self.directory.mkdir(parents=True, exist_ok=True)
            self.earlier_traces = set(self.directory.rglob(op_profile.TRACE_GLOB))
            jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
            self.tracing, self.traced_steps = True, 0
        self.traced_steps += 1
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
            self.write_ops()

    def write_ops(self) -> None:
        """profile/ops.md from the trace just written; a table that cannot be made says
        why there instead (the trace itself is kept either way, and the run goes on)."""
        try:
            found = op_profile.report(
                op_profile.find_trace(self.directory, self.earlier_traces),
                self.traced_steps, self.hlo_text(), limit=OPS_ROWS)
            text = op_profile.report_markdown(found, self.devices, limit=OPS_ROWS)
        except (OSError, ValueError, KeyError) as e:
            text = f"no op table: {type(e).__name__}: {e}"
        (self.directory / OPS_FILENAME).write_text(text + "\n")

    def on_close(self, ctx) -> None:
        if self.annotation is not None:
            self.annotation.__exit__(None, None, None)
            self.annotation = None
        self.stop()  # a run that failed inside the range still leaves its trace
