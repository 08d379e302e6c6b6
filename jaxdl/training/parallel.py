"""Data parallelism over every device of one or many hosts: `pmap` and `sharded`, one API.

Both run the same step function. `pmap` maps it per device (gradients and metrics are
averaged/summed over the `data` axis inside the step); `sharded` jit-compiles it once over
a 1-D `('data',)` mesh where the batch axis is global, so means and BatchNorm statistics
are global by construction. State arrays are built on each device with
`jax.make_array_from_callback` (so one code path serves one or many hosts), not with the
replicate/shard helpers that JAX 0.10 removed, nor Flax's replicate utility.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"
BACKENDS = ("pmap", "sharded")


def select_devices(num_devices: int) -> list[jax.Device]:
    """The first `num_devices` local devices (0 = all); across processes, every device."""
    if jax.process_count() > 1:
        devices = jax.devices()
        if num_devices not in (0, len(devices)):
            raise ValueError(f"config.parallel.num_devices={num_devices}: a run over "
                             f"{jax.process_count()} processes uses all {len(devices)} devices; "
                             "set it to 0")
        return devices
    devices = jax.local_devices()
    if num_devices > len(devices):
        raise ValueError(f"config.parallel.num_devices={num_devices} but only {len(devices)} "
                         f"local devices exist: {devices}")
    return devices[:num_devices] if num_devices else devices


class Backend:
    """Places state and batches on devices and compiles steps for one parallel backend.

    Every multi-device program it runs (steps, the feed's gathers, metric sums) goes
    through `dispatched`, which keeps at most `max_in_flight` of them queued ahead of the
    devices. XLA's CPU client aborts when about 30 programs with cross-device collectives
    are queued on host devices ("Termination timeout for all reduce RendezvousKey ... 40
    seconds"): an evaluation queued its batches, sums and gathers unbounded and killed
    mnist_cnn at step 1716 (benchmarks/README.md: a plain jitted all-reduce hangs the same).
    """

    def __init__(self, kind: str, devices: Sequence[jax.Device], *, max_in_flight: int):
        if kind not in BACKENDS:
            raise ValueError(f"unknown parallel backend {kind!r}; valid: {', '.join(BACKENDS)}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._in_flight: collections.deque = collections.deque()
        self.kind = kind
        self.devices = list(devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self._data = NamedSharding(self.mesh, P(AXIS))
        self._replicated = NamedSharding(self.mesh, P())

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def axis_name(self) -> str | None:
        """The axis that collectives inside the step (pmean, BatchNorm) reduce over."""
        return AXIS if self.kind == "pmap" else None

    @property
    def local_devices(self) -> list[jax.Device]:
        return [d for d in self.devices if d.process_index == jax.process_index()]

    # --- dispatch ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Programs dispatched and not yet waited for."""
        return len(self._in_flight)

    def dispatched(self, outputs):
        """Records a program just dispatched (by its outputs); waits for the oldest one
        while more than `max_in_flight` are queued. Returns `outputs`."""
        self._in_flight.append(outputs)
        while len(self._in_flight) > self.max_in_flight:
            _wait(self._in_flight.popleft())
        return outputs

    def wait_all(self) -> None:
        """Waits until every dispatched program has finished (before the host runs code
        that dispatches programs of its own, such as a task's evaluation extras)."""
        while self._in_flight:
            _wait(self._in_flight.popleft())

    # --- placement ---------------------------------------------------------------------
    # Every process calls these with the same host values (the global batch, the state);
    # each places only what its own devices hold, so one code path serves one or many hosts.

    def put_state(self, tree):
        """A host pytree, copied to every device."""
        if self.kind == "pmap":
            n = self.num_devices
            return jax.tree.map(lambda x: jax.make_array_from_callback(
                (n,) + np.shape(x), self._data,
                lambda index: np.broadcast_to(np.asarray(x), (n,) + np.shape(x))[index]), tree)
        return self.put_replicated(tree)

    def _one_copy(self, tree):
        """Host numpy of a replicated device pytree, read from this process's first device
        (a multi-process array cannot be fetched whole, and needs not be)."""
        shards = jax.device_get(jax.tree.map(lambda x: x.addressable_shards[0].data, tree))
        if self.kind == "pmap":  # one device's row of the mapped axis
            shards = jax.tree.map(lambda x: x[0], shards)
        return shards

    def get_state(self, tree):
        """The device pytree as host numpy arrays (one copy, not one per device)."""
        return self._one_copy(tree)

    def process_rows(self, global_batch_size: int) -> slice:
        """The rows of a global batch that this process places (all of them on one host)."""
        if global_batch_size % self.num_devices:
            raise ValueError(f"batch of {global_batch_size} examples does not split over "
                             f"{self.num_devices} devices")
        per_process = global_batch_size // jax.process_count()
        return slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)

    def put_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """The global host batch split along its first axis over the devices; each process
        places its own contiguous slice (no device-side copy)."""
        lengths = {value.shape[0] for value in batch.values()}
        if len(lengths) != 1:
            raise ValueError(f"batch entries differ in length: "
                             f"{ {k: v.shape for k, v in batch.items()} }")
        rows = self.process_rows(lengths.pop())
        return self.put_local_batch({key: value[rows] for key, value in batch.items()})

    def put_local_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of a global batch (`process_rows`), split over its devices;
        a feed that reads only its own rows places them with this."""
        n_local = len(self.local_devices)
        out = {}
        for key, value in batch.items():
            if value.shape[0] % n_local:
                raise ValueError(f"{value.shape[0]} rows do not split over {n_local} devices")
            if self.kind == "pmap":
                value = value.reshape((n_local, value.shape[0] // n_local) + value.shape[1:])
            out[key] = jax.make_array_from_process_local_data(self._data, value)
        return out

    def put_replicated(self, tree):
        """A host pytree, one whole copy on every device under a replicated sharding (for
        data every device reads from, whichever the backend)."""
        return jax.tree.map(lambda x: jax.make_array_from_callback(
            np.shape(x), self._replicated, lambda index: np.asarray(x)[index]), tree)

    @property
    def batch_sharding(self) -> NamedSharding:
        """How a batch lies on the devices: split along its first axis (for `pmap` that
        axis is the device axis of a (devices, per-device batch, ...) array)."""
        return self._data

    @property
    def replicated_sharding(self) -> NamedSharding:
        return self._replicated

    def get_metrics(self, metrics):
        """Step metrics on the host; they are equal on every device, take one copy."""
        return self._one_copy(metrics)

    # --- compilation -------------------------------------------------------------------

    def compile(self, fn: Callable, state, batch, *carry,
                donate_state: bool) -> tuple[Callable, float]:
        """`fn(state, batch, *carry)` compiled ahead of time for these shapes; and the
        seconds it took. `carry` (placed like the state, by `put_state`) is a value the
        program updates and returns, such as running totals.

        Compiling ahead of time means a batch of another shape fails loudly instead of
        recompiling silently.
        """
        donate = (0,) if donate_state else ()
        if self.kind == "pmap":
            mapped = jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=donate)
        else:
            mapped = jax.jit(fn, in_shardings=(self._replicated, self._data)
                             + (self._replicated,) * len(carry),
                             out_shardings=self._replicated, donate_argnums=donate)
        start = time.perf_counter()
        compiled = mapped.lower(state, batch, *carry).compile()
        return _CompiledStep(compiled, batch, self.dispatched), time.perf_counter() - start

    def throttled(self, fn: Callable) -> Callable:
        """`fn` (a compiled multi-device function) counted against `max_in_flight`."""
        return lambda *args: self.dispatched(fn(*args))


def _wait(outputs) -> None:
    """Blocks until the program that produced `outputs` finished. Its outputs become ready
    together, so one leaf that is still alive (not donated to a later step) is enough."""
    for leaf in jax.tree.leaves(outputs):
        if isinstance(leaf, jax.Array) and not leaf.is_deleted():
            leaf.block_until_ready()
            return


def _shapes(batch) -> dict[str, str]:
    return {k: f"{v.dtype}{list(v.shape)}" for k, v in batch.items()}


class _CompiledStep:
    """A step compiled once; a batch of another shape or dtype is an error that names both,
    never a silent recompilation."""

    def __init__(self, compiled, batch, dispatched: Callable):
        self._compiled = compiled
        self._expected = _shapes(batch)
        self._dispatched = dispatched

    def cost(self) -> dict[str, float]:
        """XLA's estimate for ONE device's share of a step: `flops`, `bytes_accessed`, and
        `memory_bytes` (arguments + outputs + temporaries, aliased buffers counted once).
        Both backends compile a per-device program, so the step's total is this times the
        device count."""
        analysis = self._compiled.cost_analysis() or {}
        if isinstance(analysis, list):  # older jaxlibs: one dict per program
            analysis = analysis[0] if analysis else {}
        memory = self._compiled.memory_analysis()
        out = {"flops": float(analysis.get("flops", float("nan"))),
               "bytes_accessed": float(analysis.get("bytes accessed", float("nan")))}
        if memory is not None:
            out["memory_bytes"] = float(memory.argument_size_in_bytes
                                        + memory.output_size_in_bytes
                                        + memory.temp_size_in_bytes
                                        - memory.alias_size_in_bytes)
        return out

    def hlo_text(self) -> str:
        """The optimized HLO of the compiled program: what a profile's op names refer to."""
        return self._compiled.as_text()

    def __call__(self, state, batch, *carry):
        try:
            return self._dispatched(self._compiled(state, batch, *carry))
        except (TypeError, ValueError) as e:
            got = _shapes(batch)
            if got == self._expected:
                raise
            raise ValueError(f"the step was compiled once for the batch {self._expected} but "
                             f"got {got}; keep batch shapes fixed (training drops the last "
                             "partial batch, evaluation pads it)") from e
