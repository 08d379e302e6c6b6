"""Warm start (`init_from`): parameters and model state from another run's latest
checkpoint, matched by parameter path; what did not match is reported, not hidden. A
resumed run keeps its own checkpoint instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxdl import runs
from jaxdl.schema import ConfigError
from jaxdl.training.checkpoints import CheckpointError, merge_by_path, read_weights
from jaxdl.training.hooks.base import Hook


class WarmStart(Hook):
    def __init__(self, path: str, workdir: Path):
        """Reads the weights now, before anything is written: a wrong path is bad input."""
        self.path = path
        checkpoints = Path(workdir) / runs.CHECKPOINTS_DIRNAME
        resuming = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
        self.weights = None
        if not resuming:
            try:
                self.weights = read_weights(path)
            except CheckpointError as e:
                raise ConfigError(f"config.init_from: {e}") from None

    def on_start(self, ctx) -> None:
        if self.weights is not None:
            ctx.state = initial_weights(ctx.trainer, self.path, *self.weights, ctx.message)


def initial_weights(trainer, path: str, loaded: dict[str, Any], step: int,
                    message: Callable[[str], None]):
    """The trainer's initial state with parameters and model state taken from another run
    (`loaded`, read from `path`). The EMA of the weights, if kept, starts from them too."""
    host = trainer.backend.get_state(trainer.state)
    params, report = merge_by_path(host.params, loaded["params"])
    model_state, state_report = merge_by_path(host.model_state, loaded.get("model_state", {}))
    message(f"init_from {path} (step {step}): loaded {report['loaded'] + state_report['loaded']}"
            " arrays" + "".join(
                f"; {kind}: {', '.join(report[kind] + state_report[kind])}"
                for kind in ("missing", "unexpected", "mismatched")
                if report[kind] + state_report[kind]))
    host = host.replace(params=params, model_state=model_state)
    if host.ema_params is not None:
        host = host.replace(ema_params=params)
    return trainer.backend.put_state(host)
