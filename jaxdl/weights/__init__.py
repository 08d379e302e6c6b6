"""Weights from other frameworks, written as a jaxdl checkpoint that `init_from` reads.

    python -m jaxdl.weights import --from torchvision --model resnet50 \\
        --state_dict resnet50.pth --out runs/resnet50_torchvision

or `import_torchvision("resnet50", "resnet50.pth", "runs/resnet50_torchvision")`. The
state_dict (a `torch.save` file, read with `torch.load(weights_only=True)`, or a
`.safetensors` file) is checked tensor by tensor against jaxdl's twin of the torchvision
network (jaxdl/weights/torchvision.py: the supported names and how each tensor maps),
converted, and written to `<out>/checkpoints/0` by the checkpoint code every run uses, as
the `params` and `model_state` that `init_from` reads. `<out>/config.json` holds the jaxdl
model section that is torchvision's network (name, num_classes as the state_dict's head,
and the fields torchvision's defaults imply), to copy into an experiment's config.

A state_dict of another architecture or size, with a tensor missing or extra, or a file
that does not read (truncated) is one line naming the first mismatching key and both
shapes, and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxdl import runs
from jaxdl.schema import ConfigError
from jaxdl.training.checkpoints import Checkpoints
from jaxdl.weights import files, torchvision

SOURCES = ("torchvision",)
# The step the imported weights are saved at (`init_from` reports it).
IMPORTED_STEP = 0

__all__ = ["SOURCES", "import_torchvision", "supported_models"]


def supported_models() -> list[str]:
    return torchvision.supported_models()


def import_torchvision(model: str, state_dict: str | Path | Mapping[str, Any],
                       out: str | Path) -> dict[str, Any]:
    """Converts torchvision's `model` with the weights `state_dict` (a file, or a mapping of
    names to tensors/arrays) into a jaxdl checkpoint in the new or empty directory `out`.
    Returns the jaxdl model section (also written to `<out>/config.json`). ConfigError,
    before anything is written, on any mismatch."""
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {str(out)!r} exists and is not an empty directory; give a "
                          "new one (nothing is overwritten)")
    torchvision.family(model)  # an unsupported name fails before the file is read
    if isinstance(state_dict, Mapping):
        source = "state_dict"
        tensors = files.as_arrays(state_dict, source)
    else:
        source = str(Path(state_dict).expanduser().absolute())
        tensors = files.read_state_dict(state_dict)
    variables, config = torchvision.convert(model, tensors, source=source)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(out / runs.CHECKPOINTS_DIRNAME, keep_last=1, keep_best=0,
                              best_mode="max")
    try:
        checkpoints.save(IMPORTED_STEP, {
            "params": variables["params"],
            "model_state": {k: v for k, v in variables.items() if k != "params"}}, {})
    finally:
        checkpoints.close()
    runs.RunDir(out).config.write_text(json.dumps({
        "config": {"model": config},
        "imported": {"from": "torchvision", "model": model, "state_dict": source}},
        indent=2) + "\n")
    return config
