"""The run's exceptions, and explaining an out-of-memory error in the numbers that decide it."""

from __future__ import annotations

import contextlib
import os
import re

import jax
import numpy as np


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss or gradient norm."""


class OutOfMemoryError(MemoryError):
    """The device ran out of memory; the message carries the sizes that decide it."""


def _megabytes(tree) -> str:
    total = sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                for x in jax.tree.leaves(tree))
    return f"{total / 2**20:.1f} MiB"


@contextlib.contextmanager
def explain_out_of_memory(config, abstract_state, num_devices: int):
    """Re-raises XLA's RESOURCE_EXHAUSTED with the numbers that decide memory use per
    device and what to change, instead of a bare allocation failure."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        raise OutOfMemoryError(
            f"out of device memory ({str(e).strip().splitlines()[0][:200]}): per-device batch "
            f"{config.data.batch_size // num_devices} of a global {config.data.batch_size}, "
            f"parameters {_megabytes(abstract_state.params)}, optimizer state "
            f"{_megabytes(abstract_state.opt_state)}, model state "
            f"{_megabytes(abstract_state.model_state)} per device. Lower data.batch_size and "
            "raise optimizer.grad_accum_steps to keep the effective batch, set "
            "precision='bf16', or add devices") from e


def os_reason(error: Exception) -> str:
    """The operating system's words for a write failure, which orbax buries in a path."""
    code = re.search(r"os_error_code='?(\d+)", str(error))
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the earlier ones are intact."""


class RunInterrupted(Exception):
    """Training stopped on request (a signal); the run is checkpointed at `step`."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; a checkpoint was saved there")
        self.step = step

