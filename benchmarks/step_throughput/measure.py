"""Timing jaxdl's compiled train step: pre-placed batches, windows, statistics, FLOPs.

At most `max_in_flight` steps (default: the config's `parallel.max_in_flight`) are
dispatched ahead of the device. Without a bound, JAX 0.10.2's CPU client with 2 forced host
devices deadlocks in the step's all-reduce once some 30 or more steps are queued
("Termination timeout for `all reduce RendezvousKey...` of 40 seconds exceeded", then
abort), with either backend; a plain jitted all-reduce reproduces it, so it is not jaxdl's
step. With pre-placed batches the queue fills at once; the training loop puts each batch
from the host, so its queue stays shorter (it did not hang in the runs tried). On 1 device
the bound of 8 cost nothing measurable (within the run-to-run noise of a few percent).
"""

from __future__ import annotations

import collections
import math
import time

# Dense peak TFLOP/s per device from the vendors' datasheets (not measured here), by a
# substring of `device.device_kind` and the config's precision. fp32 on NVIDIA GPUs: XLA's
# default matmul precision uses TF32 tensor cores, so TF32 is the relevant peak.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.4, "fp32": 494.7},
    "H100": {"bf16": 989.4, "fp32": 494.7},  # SXM; the PCIe card is lower (756 / 378)
    "A100": {"bf16": 312.0, "fp32": 156.0},
    "TPU v4": {"bf16": 275.0},
    "TPU v5 lite": {"bf16": 197.0},
    "TPU v5p": {"bf16": 459.0},
}


def peak_tflops(device_kind: str, precision: str) -> float | None:
    """The datasheet peak for this device and precision; None where none is known (CPUs)."""
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_kind:
            return peaks.get(precision)
    return None


def efficiency(trainer, ms_per_step: float) -> dict:
    """Model FLOPs per step (XLA's cost analysis of the compiled step, all devices),
    achieved TFLOP/s, MFU against the device's peak, and memory per device: the
    allocator's peak where the device reports one (GPU/TPU), else XLA's compiled estimate."""
    import jax

    n = trainer.backend.num_devices
    cost = trainer.train_step_cost
    flops = cost["flops"] * n
    achieved = flops / (ms_per_step / 1e3) / 1e12
    device = trainer.backend.devices[0]
    peak = peak_tflops(device.device_kind, trainer.config.precision)
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        memory, memory_source = stats["peak_bytes_in_use"], "allocator peak"
    else:
        memory, memory_source = cost.get("memory_bytes", math.nan), "compiled estimate"
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(trainer.abstract_state.params))
    return {"params": params, "flops_per_step": flops, "achieved_tflops": achieved,
            "peak_tflops": peak, "mfu": achieved / peak if peak else None,
            "memory_bytes_per_device": memory, "memory_source": memory_source}


def split(total: int, parts: int) -> list[int]:
    """`total` steps as at most `parts` windows of nearly equal size."""
    parts = min(parts, total)
    return [total // parts + (i < total % parts) for i in range(parts)]


class JaxdlSteps:
    """Runs `trainer.train_step` over `batches` device batches pre-placed from the
    trainer's own host batches (`host_batches[i]` = `trainer.train_batch(i)`).

    At most `max_in_flight` steps (0 = no bound) are dispatched ahead of the device: before
    dispatching more, the metrics of the step that many steps back are waited for. Metrics
    are not donated, so waiting on them is safe while the state is donated. `run(count)`
    returns after the last of its steps finished (`jax.block_until_ready`).
    """

    def __init__(self, trainer, *, batches: int, max_in_flight: int):
        import jax

        self.trainer, self.max_in_flight = trainer, max_in_flight
        self.host_batches = [trainer.train_batch(i) for i in range(batches)]
        self.device_batches = [trainer.backend.put_batch(b) for b in self.host_batches]
        jax.block_until_ready(self.device_batches)
        self.state, self.metrics = trainer.state, None  # the state is donated: keep the new one
        self.pending: collections.deque = collections.deque()
        self.step_index = 0
        self.first_metrics = None  # of step 0, from the initial state (not donated)

    def run(self, count: int) -> None:
        import jax

        train_step, batches = self.trainer.train_step, self.device_batches
        for _ in range(count):
            self.state, self.metrics = train_step(self.state,
                                                  batches[self.step_index % len(batches)])
            if self.step_index == 0:
                self.first_metrics = self.metrics
            self.step_index += 1
            if self.max_in_flight:
                self.pending.append(self.metrics)
                if len(self.pending) > self.max_in_flight:
                    jax.block_until_ready(self.pending.popleft())
        jax.block_until_ready((self.state, self.metrics))
        self.pending.clear()

    def loss(self, metrics=None) -> float:
        """Mean train loss of the last step, or of `metrics` (waits for it)."""
        sums = self.trainer.backend.get_metrics(
            self.metrics if metrics is None else metrics)["sums"]
        return float(sums["loss"]) / float(sums["count"])

    def finish(self) -> None:
        self.trainer.state = self.state  # the old buffers were donated


def window_stats(window_seconds: list[float]) -> dict:
    import numpy as np

    per_step = np.asarray(window_seconds)
    return {
        "window_ms_per_step": [round(s * 1e3, 4) for s in window_seconds],
        "ms_per_step_median": float(np.median(per_step) * 1e3),
        "ms_per_step_p10": float(np.percentile(per_step, 10) * 1e3),
        "ms_per_step_p90": float(np.percentile(per_step, 90) * 1e3),
    }


def measure(trainer, *, steps: int, warmup: int, repeats: int, batches: int,
            max_in_flight: int) -> dict:
    """Times `trainer.train_step` (see `JaxdlSteps`); returns the per-window step times and
    the last loss."""
    runner = JaxdlSteps(trainer, batches=batches, max_in_flight=max_in_flight)
    runner.run(warmup)
    window_seconds = []
    sizes = split(steps, repeats)
    for size in sizes:
        start = time.perf_counter()
        runner.run(size)
        window_seconds.append((time.perf_counter() - start) / size)
    loss = runner.loss()
    runner.finish()
    return {"window_steps": sizes, **window_stats(window_seconds), "last_train_loss": loss}

