"""Warm start (`init_from`): parameters and model state from another run's latest
checkpoint, matched by parameter path; what did not match is reported, not hidden. A
resumed run keeps its own checkpoint instead.

`init_from_reinit` names paths (globs, as `finetune.trainable`) that keep their fresh
initialisation: a new head for another number of classes. Any other array whose shape
differs from the checkpoint's is an error that names it and both shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flax import traverse_util

from jaxdl import runs
from jaxdl.schema import ConfigError, split_list
from jaxdl.training import finetune
from jaxdl.training.checkpoints import CheckpointError, merge_by_path, read_weights
from jaxdl.training.hooks.base import Hook


class WarmStart(Hook):
    def __init__(self, path: str, workdir: Path, *, reinit: str = "",
                 abstract_state: Any = None):
        """Reads the weights now, before anything is written: a wrong path, a reinit
        pattern that matches nothing or a shape the reinit list does not cover is bad
        input (checked against `abstract_state`, the run's state shapes)."""
        self.path, self.reinit = path, split_list(reinit)
        checkpoints = Path(workdir) / runs.CHECKPOINTS_DIRNAME
        resuming = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
        self.weights, self.reinitialised = None, []
        if not resuming:
            try:
                self.weights = read_weights(path)
            except CheckpointError as e:
                raise ConfigError(f"config.init_from: {e}") from None
            if abstract_state is not None:
                loaded, self.reinitialised = without_reinit(self.weights[0], abstract_state,
                                                            self.reinit)
                self.weights = (loaded, self.weights[1])

    def on_start(self, ctx) -> None:
        if self.weights is not None:
            ctx.state = initial_weights(ctx.trainer, self.path, *self.weights, ctx.message)
            if self.reinit:
                ctx.message(f"init_from_reinit {', '.join(self.reinit)}: initialised afresh "
                            f"{', '.join(self.reinitialised) or 'nothing of the checkpoint'}")


def without_reinit(loaded: dict[str, Any], abstract_state, patterns: list[str]
                   ) -> tuple[dict[str, Any], list[str]]:
    """(`loaded` less the arrays at paths `patterns` match (in params and in every model
    state collection); ConfigError for a pattern that matches no parameter or a shape
    mismatch it does not cover, naming the path and both shapes; 'path (old) -> (new)' of
    each checkpoint array left out)."""
    params = abstract_state.params
    paths = finetune.param_paths(params)
    chosen = finetune.select(patterns, paths, params, "config.init_from_reinit")
    covered = lambda path: path in chosen or any(finetune.matches(p, path) for p in patterns)
    out, dropped = {}, []
    for part, target in (("params", params), ("model_state", abstract_state.model_state)):
        flat_target = traverse_util.flatten_dict(target or {}, sep="/")
        flat = traverse_util.flatten_dict(loaded.get(part) or {}, sep="/")
        # A model state path starts with its collection ('batch_stats/head_bn/mean').
        own = (lambda k: k) if part == "params" else (lambda k: k.partition("/")[2])
        for key, value in flat.items():
            if covered(own(key)):
                new = tuple(flat_target[key].shape) if key in flat_target else "absent"
                dropped.append(f"{key} {tuple(np.shape(value))} -> {new}")
                continue
            if key in flat_target and np.shape(value) != tuple(flat_target[key].shape):
                raise ConfigError(
                    f"config.init_from: {part} {key!r} has shape {tuple(np.shape(value))} in "
                    f"the checkpoint but {tuple(flat_target[key].shape)} in this model; add "
                    "it to config.init_from_reinit to start it afresh")
        out[part] = traverse_util.unflatten_dict(
            {k: v for k, v in flat.items() if not covered(own(k))}, sep="/") if flat else {}
    return {**loaded, **out}, dropped


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
