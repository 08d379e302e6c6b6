"""Host-side batching of in-memory arrays (numpy; device transfer is the caller's)."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

Batch = dict[str, np.ndarray]


# eq=False: the generated __eq__ would compare arrays elementwise and raise.
@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split: row i of `inputs` goes with row i of `targets`."""

    inputs: np.ndarray
    targets: np.ndarray

    def __post_init__(self):
        if len(self.inputs) != len(self.targets):
            raise ValueError(
                f"ArraySplit: {len(self.inputs)} input rows but {len(self.targets)} targets."
            )

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, indices: np.ndarray) -> Batch:
        """Rows `indices`, in that order. A split read lazily (from disk, decoded on host
        workers) offers the same `__len__` and `take`, so every batching function here
        serves it unchanged."""
        return {"inputs": self.inputs[indices], "targets": self.targets[indices]}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full training batches per epoch; the remainder is dropped."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(
            f"The split is smaller than one batch: {num_examples} examples, "
            f"batch_size {batch_size}."
        )
    return steps


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    # Seeding with (seed, epoch) makes each epoch's order independent of how
    # many epochs ran before, which is what makes resumption exact.
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_order(split, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the split's rows (indices into it)."""
    return _epoch_order(len(split), seed, epoch)


def _take(split: ArraySplit, indices: np.ndarray) -> Batch:
    return split.take(indices)


def train_batch(split: ArraySplit, batch_size: int, seed: int, step: int) -> Batch:
    """The training batch at global `step`; a pure function of (seed, step)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    steps = steps_per_epoch(len(split), batch_size)
    epoch, position = divmod(step, steps)
    order = _epoch_order(len(split), seed, epoch)
    return _take(split, order[position * batch_size : (position + 1) * batch_size])


def train_batches(
    split: ArraySplit, batch_size: int, seed: int, start_step: int = 0
) -> Iterator[Batch]:
    """Infinite batches for steps start_step, start_step + 1, ...

    Yields exactly what `train_batch` returns for each step, but draws each
    epoch's permutation once.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    n = len(split)
    steps = steps_per_epoch(n, batch_size)
    epoch, position = divmod(start_step, steps)
    while True:
        order = _epoch_order(n, seed, epoch)
        for pos in range(position, steps):
            yield _take(split, order[pos * batch_size : (pos + 1) * batch_size])
        epoch, position = epoch + 1, 0


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """Batches needed to cover every example once (last one padded)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    return -(-num_examples // batch_size)


def eval_batches(split: ArraySplit, batch_size: int) -> Iterator[Batch]:
    """Every example once, in order, in fixed-size batches.

    The last batch is padded by repeating row 0 (a valid example, so models
    see no out-of-distribution padding); `'mask'` is 1.0 for real rows and
    0.0 for padding, so metrics weight by it.
    """
    n = len(split)
    for b in range(num_eval_batches(n, batch_size)):
        indices, mask = eval_indices(n, batch_size, b)
        yield {**_take(split, indices), "mask": mask}


def eval_indices(n: int, batch_size: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of evaluation batch `b` of a split of `n` examples and its mask (see
    `eval_batches`)."""
    positions = np.arange(b * batch_size, (b + 1) * batch_size)
    real = positions < n
    return np.where(real, positions, 0), real.astype(np.float32)
