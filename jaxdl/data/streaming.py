"""Splits read lazily from random-access records, for datasets larger than host memory.

A `RecordSplit` keeps no examples. `take(indices)` reads exactly the records asked for and
decodes them on a pool of host threads, so it serves `train_batches` / `eval_batches` the way
an in-memory `ArraySplit` does (same batches, same order, exact resume), and a feeder that
asks each process for only its slice of a global batch makes each process read only that
slice. What a record is and how it becomes an (input, target) pair is the source's business
(`tfds_source.record_split`: ArrayRecord files of serialized examples); this module knows only
random access and threads, and imports neither TFDS nor TensorFlow.

Decoding runs on threads, not processes: image codecs and TensorFlow ops release the GIL, and
threads share the open record files without pickling anything.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]
Record = Any  # one stored record, e.g. the bytes of a serialized tf.train.Example
Decode = Callable[[Record], tuple[np.ndarray, np.ndarray]]
# Records whose labels are parsed together when `targets` is read (memory, not a setting).
_LABEL_CHUNK = 4096


class RecordSplit:
    """One split of `records`, decoded row by row on `num_workers` threads.

    `records`: a random-access sequence (`len`, and `__getitems__(list)` or `__getitem__`),
    such as a TFDS ArrayRecord data source. `decode(record) -> (input, target)` returns the
    arrays the model sees; it runs on the worker threads. `read_labels(records) -> labels`
    (optional) parses only the labels of some records, so `targets` need not decode inputs.
    """

    def __init__(self, records: Sequence[Record], decode: Decode, *, num_workers: int,
                 read_labels: Callable[[Sequence[Record]], np.ndarray] | None = None,
                 name: str = "records"):
        if num_workers < 1:
            raise ValueError(f"RecordSplit {name}: num_workers must be >= 1, got {num_workers}.")
        self.name = name
        self.num_workers = num_workers
        self._records = records
        self._decode = decode
        self._read_labels = read_labels
        self._lock = threading.Lock()  # guards the targets read once
        self._pool_lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"RecordSplit({self.name}, {len(self)} rows, {self.num_workers} workers)"

    def take(self, indices: np.ndarray) -> Batch:
        """Rows `indices`, in that order, as {'inputs', 'targets'}; reads only those records.
        Safe to call from several threads at once."""
        indices = self._checked(indices)
        if not len(indices):  # shapes still come from a decoded row
            inputs, target = self._decode_rows(np.zeros(1, np.int64))[0]
            return {"inputs": np.empty((0, *inputs.shape), inputs.dtype),
                    "targets": np.empty((0, *np.shape(target)), np.asarray(target).dtype)}
        pairs = self._decode_rows(indices)
        try:
            inputs = np.stack([x for x, _ in pairs])
        except ValueError:
            shapes = sorted({np.shape(x) for x, _ in pairs})
            raise ValueError(f"RecordSplit {self.name}: rows decode to different shapes "
                             f"{shapes[:3]}; a batch needs one shape") from None
        return {"inputs": inputs, "targets": np.stack([y for _, y in pairs])}

    @property
    def targets(self) -> np.ndarray:
        """Every row's target, in order. Read once, then kept: with `read_labels` no input is
        decoded, but every record is still read from disk (the labels live inside the
        records), so on ImageNet's train split this is one pass over its files."""
        with self._lock:
            if self._targets is None:
                chunks = [np.arange(start, min(start + _LABEL_CHUNK, len(self)))
                          for start in range(0, len(self), _LABEL_CHUNK)]
                self._targets = np.concatenate(list(self._map(self._labels_of, chunks)))
            return self._targets

    def _checked(self, indices) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.ndim != 1 or not (indices.dtype.kind in "iu" or indices.size == 0):
            raise IndexError(f"RecordSplit {self.name}: take needs a 1-D integer array, "
                             f"got {indices.dtype} of shape {indices.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"RecordSplit {self.name}: rows {indices.min()}..{indices.max()} "
                             f"asked of {len(self)}")
        return indices.astype(np.int64, copy=False)

    def _read(self, rows: np.ndarray) -> list[Record]:
        keys = rows.tolist()
        if hasattr(self._records, "__getitems__"):  # one batched read per file
            return list(self._records.__getitems__(keys))
        return [self._records[key] for key in keys]

    def _decode_chunk(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self._decode(record) for record in self._read(rows)]

    def _decode_rows(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        chunks = np.array_split(rows, min(self.num_workers, len(rows)))
        return [pair for chunk in self._map(self._decode_chunk, chunks) for pair in chunk]

    def _labels_of(self, rows: np.ndarray) -> np.ndarray:
        if self._read_labels is not None:
            return np.asarray(self._read_labels(self._read(rows)))
        return np.stack([y for _, y in self._decode_chunk(rows)])

    def _map(self, function, chunks: list[np.ndarray]):
        """`function` over `chunks` on the worker threads, results in order."""
        if len(chunks) == 1:  # nothing to overlap: no hand-off
            return [function(chunks[0])]
        return self._workers().map(function, chunks)

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor:
        # Started on first use, so a split that is never read starts no thread.
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.num_workers, thread_name_prefix=f"jaxdl-{self.name}")
        return self._pool

    def close(self) -> None:
        """Stops the worker threads (they also end with the process)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
