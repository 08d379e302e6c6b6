"""The non-finite guard between logs: every step's finiteness is checked when its metrics
are fetched (jaxdl/training/window.py); this hook also looks at the flag of the oldest step
still in flight, which is ready by then, so a diverged run stops within
`parallel.max_in_flight` steps instead of at the next log, naming the step."""

from __future__ import annotations

import collections

from jaxdl.training.hooks.base import Hook


class NonFiniteGuard(Hook):
    def __init__(self, max_in_flight: int):
        # The backend keeps at most max_in_flight programs queued (Backend.dispatched).
        self.recent = collections.deque(maxlen=max_in_flight)

    def after_step(self, ctx, step: int, metrics) -> None:
        backend = ctx.trainer.backend
        if len(self.recent) == self.recent.maxlen:
            oldest = self.recent.popleft()
            if not backend.get_metrics(oldest["scalars"]["finite"]):
                ctx.window.absorb(backend, skip_nonfinite=False)  # raises, naming the step
        self.recent.append(metrics)
