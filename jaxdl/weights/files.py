"""Reading a PyTorch state_dict from disk into numpy arrays, in the file's order.

`.safetensors` files are read with the `safetensors` package (no torch needed); anything
else is a `torch.save` file (`.pt`, `.pth`, `.bin`) read with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, never arbitrary objects. A checkpoint
that wraps the state_dict (`{"model": ...}` as torchvision's reference scripts save, or
`{"state_dict": ...}`) is unwrapped, and a `module.` prefix on every key (a model saved from
inside DataParallel) is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxdl.schema import ConfigError

_WRAPPERS = ("state_dict", "model")
_PARALLEL_PREFIX = "module."
SAFETENSORS_SUFFIX = ".safetensors"


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """state_dict key -> float32 (or integer) array. ConfigError (one line) when the file
    is missing, unreadable, truncated or not a state_dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--state_dict {str(path)!r}: no such file")
    if path.suffix == SAFETENSORS_SUFFIX:
        loaded = _read_safetensors(path)
    else:
        loaded = _read_torch(path)
    return as_arrays(loaded, f"--state_dict {str(path)!r}")


def as_arrays(loaded, source: str) -> dict[str, np.ndarray]:
    """A loaded state_dict (or a checkpoint wrapping one) as key -> numpy array; `source`
    names it in the error."""
    for key in _WRAPPERS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ConfigError(f"{source} holds a {type(loaded).__name__}, not a state_dict (a "
                          "mapping of tensor names to tensors)")
    if all(isinstance(k, str) and k.startswith(_PARALLEL_PREFIX) for k in loaded):
        loaded = {k.removeprefix(_PARALLEL_PREFIX): v for k, v in loaded.items()}
    out = {}
    for key, value in loaded.items():
        array = to_numpy(value)
        if array is None:
            raise ConfigError(f"{source}: entry {key!r} is a {type(value).__name__}, not a "
                              "tensor")
        out[str(key)] = array
    return out


def _read_torch(path: Path):
    try:
        import torch
    except ImportError:
        raise ConfigError(f"--state_dict {str(path)!r}: reading a torch.save file needs torch "
                          "(pip install 'jaxdl[torch]'), or give a .safetensors file") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a bad pickle, a forbidden global: all one line
        raise ConfigError(f"--state_dict {str(path)!r}: cannot read it as a torch.save file "
                          f"(truncated or not a state_dict?): {_first_line(e)}") from None


def _read_safetensors(path: Path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ConfigError(f"--state_dict {str(path)!r}: reading safetensors needs the "
                          "safetensors package (pip install safetensors)") from None
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ConfigError(f"--state_dict {str(path)!r}: cannot read it as safetensors "
                          f"(truncated?): {_first_line(e)}") from None


def to_numpy(value) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
        # numpy has no bfloat16: half-precision weights are widened here, as jaxdl keeps
        # float32 parameters anyway.
        return (value.float() if value.is_floating_point() else value).numpy()
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
