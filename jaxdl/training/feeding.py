"""Batches onto the devices: a whole split kept on the devices, or host batches prefetched.

Both feeds hand the compiled step the very batches `jaxdl.data.pipeline` defines for a step
(the order is a pure function of seed, epoch and step), so switching `config.data.pipeline`
changes where the rows are gathered, never which rows: a run gives the same numbers either
way, and a resumed run sees the batches an uninterrupted one would.

- `DeviceFeed` ("device", and "auto" for in-memory splits): each split is copied to every device once. A step's batch is
  gathered on the devices from the epoch's order, so no example data crosses from the host
  per step; only the epoch's order (4 bytes per example, once per epoch) and the batch's
  position do. Each device gathers only its own rows.
- `HostFeed` ("host", and "auto" for splits read lazily): batches are gathered on the host (from arrays, or from a split read
  lazily from disk) by a background thread that keeps `prefetch` batches on the devices
  ahead of the step. Each process reads and places only its own rows of a global batch.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxdl import data as data_lib
from jaxdl.data import pipeline
from jaxdl.training import parallel

PIPELINES = ("auto", "device", "host")

DeviceBatch = dict[str, jax.Array]


class HostFeed:
    """Host-gathered batches, placed on the devices `prefetch` steps ahead by a thread."""

    def __init__(self, backend: parallel.Backend, splits: Mapping[str, Any], *,
                 batch_size: int, eval_batch_size: int, seed: int, prefetch: int,
                 sampling: str):
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.backend, self.splits, self.sampling = backend, splits, sampling
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.prefetch = prefetch
        self.wait_seconds = 0.0  # the step loop's time blocked on input, summed

    def _local_train_batch(self, split, order: np.ndarray, position: int) -> dict[str, np.ndarray]:
        indices = order[position * self.batch_size:(position + 1) * self.batch_size]
        batch = split.take(indices[self.backend.process_rows(self.batch_size)])
        return {**batch, "mask": np.ones(len(batch["targets"]), np.float32)}

    def train(self, split_name: str, start_step: int) -> Iterator[DeviceBatch]:
        """Training batches of the split for pipeline steps start_step, start_step + 1, ...
        (the batches `pipeline.train_batches` gives, on the devices)."""
        split = self.splits[split_name]

        def produce():
            for order, positions in pipeline.epoch_orders(split, self.batch_size, self.seed,
                                                          start_step, self.sampling):
                for pos in positions:
                    yield self.backend.put_local_batch(
                        self._local_train_batch(split, order, pos))

        return self._prefetched(produce())

    def eval(self, split_name: str) -> Iterator[DeviceBatch]:
        split = self.splits[split_name]
        rows = self.backend.process_rows(self.eval_batch_size)

        def produce():
            for b in range(pipeline.num_eval_batches(len(split), self.eval_batch_size)):
                indices, mask = pipeline.eval_indices(len(split), self.eval_batch_size, b)
                batch = split.take(indices[rows])
                yield self.backend.put_local_batch({**batch, "mask": mask[rows]})

        return self._prefetched(produce())

    def _prefetched(self, batches: Iterator[DeviceBatch]) -> Iterator[DeviceBatch]:
        return _Prefetcher(batches, self.prefetch, self._add_wait)

    def _add_wait(self, seconds: float) -> None:
        self.wait_seconds += seconds


_DONE = object()


class _Prefetcher:
    """Runs `batches` on a daemon thread, at most `depth` ahead of the consumer. An error
    there is raised here, at the batch it broke on; `close` (or garbage) stops the thread."""

    def __init__(self, batches: Iterator[Any], depth: int, on_wait: Callable[[float], None]):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._on_wait = on_wait
        self._thread = threading.Thread(target=self._work, args=(batches,), daemon=True,
                                        name="jaxdl-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, batches):
        try:
            for batch in batches:
                if not self._put((batch, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((None, e))
            return
        self._put((_DONE, None))

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        batch, error = self._queue.get()
        self._on_wait(time.perf_counter() - start)
        if error is not None:
            self.close()
            raise error
        if batch is _DONE:
            self.close()
            raise StopIteration
        return batch

    def close(self) -> None:
        self._stop.set()

    def __del__(self):
        self._stop.set()


class DeviceFeed:
    """Every split kept on every device; batches gathered there by a compiled function."""

    def __init__(self, backend: parallel.Backend, splits: Mapping[str, Any], *,
                 batch_size: int, eval_batch_size: int, seed: int, sampling: str):
        for name, split in splits.items():
            if not isinstance(split, data_lib.ArraySplit):
                raise ValueError(f"the {name} split is read lazily ({type(split).__name__}); "
                                 "keep it on the host: config.data.pipeline='host'")
        self.backend, self.seed, self.sampling = backend, seed, sampling
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.splits = splits
        self.lengths = {name: len(split) for name, split in splits.items()}
        self.data = {name: backend.put_replicated({"inputs": split.inputs,
                                                   "targets": split.targets})
                     for name, split in splits.items()}
        self.wait_seconds = 0.0
        self._gather_train = _compile_gather(backend, batch_size, _train_rows)
        self._gather_eval = {}  # by split length: the padding depends on it

    @property
    def bytes_per_device(self) -> int:
        return sum(x.nbytes for split in self.data.values() for x in split.values())

    def train(self, split_name: str, start_step: int) -> Iterator[DeviceBatch]:
        split, data = self.splits[split_name], self.data[split_name]
        for order, positions in pipeline.epoch_orders(split, self.batch_size, self.seed,
                                                      start_step, self.sampling):
            order = self.backend.put_replicated(order.astype(np.int32))
            for pos in positions:
                start = time.perf_counter()
                batch = self._gather_train(data, order, pos)
                self.wait_seconds += time.perf_counter() - start
                yield batch

    def eval(self, split_name: str) -> Iterator[DeviceBatch]:
        n = self.lengths[split_name]
        if n not in self._gather_eval:
            self._gather_eval[n] = _compile_gather(
                self.backend, self.eval_batch_size, functools.partial(_eval_rows, n))
        gather, data = self._gather_eval[n], self.data[split_name]
        for b in range(pipeline.num_eval_batches(n, self.eval_batch_size)):
            yield gather(data, None, b)


def _train_rows(order, first, size):
    """Rows [first, first + size) of the epoch's order; a mask of ones."""
    return lax.dynamic_slice(order, (first,), (size,)), jnp.ones((size,), jnp.float32)


def _eval_rows(n, order, first, size):
    """Rows [first, first + size) in split order, row 0 standing in past the end (masked),
    exactly as `pipeline.eval_indices` pads on the host."""
    del order
    positions = first + jnp.arange(size)
    real = positions < n
    return jnp.where(real, positions, 0), real.astype(jnp.float32)


def _compile_gather(backend: parallel.Backend, batch_size: int, rows_of):
    """`gather(data, order, position)`: batch `position`'s rows of `data`, laid out on the
    devices as `Backend.put_batch` lays out a host batch (so the same compiled step takes
    it). Each device computes only its own share of the rows."""
    rows = backend.process_rows(batch_size)
    per_device = (rows.stop - rows.start) // len(backend.local_devices)
    stacked = backend.kind == "pmap"  # pmap's batch has a leading device axis

    def gather_one_device(data, order, position):
        first = position * batch_size + lax.axis_index(parallel.AXIS) * per_device
        rows, mask = rows_of(order, first, per_device)
        batch = {key: jnp.take(value, rows, axis=0) for key, value in data.items()}
        batch["mask"] = mask
        return jax.tree.map(lambda x: x[None], batch) if stacked else batch

    mapped = jax.shard_map(gather_one_device, mesh=backend.mesh,
                           in_specs=(P(), P(), P()), out_specs=P(parallel.AXIS),
                           check_vma=False)
    return backend.throttled(jax.jit(mapped, out_shardings=backend.batch_sharding))


def make_feed(kind: str, backend: parallel.Backend, splits: Mapping[str, Any], *,
              batch_size: int, eval_batch_size: int, seed: int, prefetch: int,
              sampling: str = "shuffle"):
    """The feed `config.data.pipeline` names; "auto" keeps in-memory splits on the devices
    and reads lazily read ones (streamed from disk) on the host."""
    if kind == "auto":
        in_memory = all(isinstance(split, data_lib.ArraySplit) for split in splits.values())
        kind = "device" if in_memory else "host"
    if kind == "device":
        return DeviceFeed(backend, splits, batch_size=batch_size,
                          eval_batch_size=eval_batch_size, seed=seed, sampling=sampling)
    if kind == "host":
        return HostFeed(backend, splits, batch_size=batch_size,
                        eval_batch_size=eval_batch_size, seed=seed, prefetch=prefetch,
                        sampling=sampling)
    raise ValueError(f"unknown data pipeline {kind!r}; valid: {', '.join(PIPELINES)}")
