"""What a run ran on: versions, devices, commit. Written to env.json beside every run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets",
             "numpy", "ml-collections", "absl-py")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the jaxdl checkout, with '+dirty' if it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


# The vector extensions XLA:CPU's and PyTorch's kernels pick their paths by.
_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "neon",
               "asimd", "sve")


def host_cpu(cpuinfo: str | None = None) -> dict:
    """The host CPU as /proc/cpuinfo names it (vendor, family, model, model name) and which
    of `_SIMD_FLAGS` it has: two VMs that print the same model name can run the same
    convolution 5x apart. Empty where there is no /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"vendor": fields.get("vendor_id") or fields.get("CPU implementer"),
            "family": fields.get("cpu family"),
            "model": fields.get("model") or fields.get("CPU part"),
            "model_name": fields.get("model name"),
            "simd": [f for f in _SIMD_FLAGS if f in flags]}


def xla_flag(name: str, xla_flags: str | None = None) -> str | None:
    """The value XLA takes for --name in `xla_flags` (default: $XLA_FLAGS); the last one wins."""
    value = None
    for token in (os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags).split():
        flag, _, given = token.partition("=")
        if flag == f"--{name}":
            value = given or "true"  # a bare boolean flag means true
    return value


def deterministic_xla(xla_flags: str | None = None) -> bool:
    """Whether XLA_FLAGS asks XLA for run-to-run determinism on GPU (what --deterministic sets)."""
    return (xla_flag("xla_gpu_deterministic_ops", xla_flags) or "").lower() in ("true", "1")


def describe(devices, backend: str, *, deterministic: bool | None = None) -> dict:
    """The run's environment; `deterministic` defaults to what XLA_FLAGS asks for."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "backend": backend,
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "host_cpu": host_cpu(),
        "deterministic": deterministic_xla() if deterministic is None else deterministic,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "tf_deterministic_ops": os.environ.get("TF_DETERMINISTIC_OPS"),
        "git_commit": git_commit(),
    }
