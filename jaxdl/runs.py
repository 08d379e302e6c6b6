"""Reading a finished (or checkpointed) run from its workdir: its config and its latest
weights. Below training and tasks, so a task may use another run's model (a classifier
that scores generated samples, a teacher) without importing the training package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

# The items of every checkpoint step: the TrainState and the loop's progress.
STATE, PROGRESS = "state", "progress"
CONFIG_FILENAME = "config.json"


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


def read_weights(path: str | Path, *, role: str = "init_from") -> tuple[dict[str, Any], int]:
    """(`params` and `model_state` as nested dicts of arrays, step) of the latest checkpoint
    of another run: `path` is its workdir or its checkpoints directory. `role` names the
    setting that pointed here, for the error message."""
    path = Path(path).expanduser().absolute()
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not directory.is_dir() or not any(p.name.isdigit() for p in directory.iterdir()):
        raise CheckpointError(f"{role}={str(path)!r} holds no jaxdl checkpoint; give the "
                              "--workdir of a finished or checkpointed run")
    manager = ocp.CheckpointManager(directory, item_names=(STATE, PROGRESS),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore()}))[STATE]
    finally:
        manager.close()
    return {"params": restored["params"], "model_state": restored.get("model_state", {})}, step


def read_config(path: str | Path, *, role: str) -> dict[str, Any]:
    """The resolved config (a nested dict) a run saved in its workdir `path`."""
    file = Path(path).expanduser().absolute() / CONFIG_FILENAME
    if not file.is_file():
        raise CheckpointError(f"{role}={str(file.parent)!r} holds no {CONFIG_FILENAME}; give "
                              "the --workdir of a jaxdl run")
    return json.loads(file.read_text())["config"]
