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


SAMPLINGS = ("shuffle", "balanced")


def _class_members(split) -> list[np.ndarray]:
    """Indices of each class present in the split, classes in sorted order."""
    labels = np.asarray(getattr(split, "targets", None))
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"balanced sampling needs one integer class label per example, got "
                         f"targets of {labels.dtype} {labels.shape}")
    if not len(labels):
        raise ValueError("balanced sampling of an empty split")
    _, inverse = np.unique(labels, return_inverse=True)
    return [np.flatnonzero(inverse == c) for c in range(inverse.max() + 1)]


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")


def epoch_length(split: ArraySplit, sampling: str = "shuffle") -> int:
    """Examples in one epoch of `epoch_order`: the split's size, or with 'balanced' the
    number of classes present times the largest class's count."""
    _check_sampling(sampling)
    if sampling == "shuffle":
        return len(split)
    members = _class_members(split)
    return len(members) * max(len(m) for m in members)


def epoch_order(split: ArraySplit, seed: int, epoch: int, sampling: str = "shuffle",
                ) -> np.ndarray:
    """Indices into `split` in the order epoch `epoch` visits them.

    'shuffle': a permutation of the split. 'balanced': every class present oversampled to
    the largest class's count (each of its examples drawn equally often, up to one), all
    shuffled together. Seeded by (seed, epoch), so each epoch's order is independent of how
    many epochs ran before: that is what makes resumption exact.
    """
    _check_sampling(sampling)
    rng = np.random.default_rng([seed, epoch])
    if sampling == "shuffle":
        return rng.permutation(len(split))
    members = _class_members(split)
    target = max(len(m) for m in members)
    drawn = []
    for indices in members:
        whole, rest = divmod(target, len(indices))
        drawn += [rng.permutation(indices) for _ in range(whole)]
        drawn.append(rng.choice(indices, size=rest, replace=False))
    return rng.permutation(np.concatenate(drawn))


def train_batch(split: ArraySplit, batch_size: int, seed: int, step: int,
                sampling: str = "shuffle") -> Batch:
    """The training batch at global `step`; a pure function of (seed, step)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    steps = steps_per_epoch(epoch_length(split, sampling), batch_size)
    epoch, position = divmod(step, steps)
    order = epoch_order(split, seed, epoch, sampling)
    return split.take(order[position * batch_size : (position + 1) * batch_size])


def epoch_orders(split: ArraySplit, batch_size: int, seed: int, start_step: int = 0,
                 sampling: str = "shuffle") -> Iterator[tuple[np.ndarray, range]]:
    """From step `start_step` on, forever: each epoch's order and the batch positions to
    take from it (batch p is rows order[p * batch_size:(p + 1) * batch_size]). The one
    walk over epochs that every feed follows, on the host or on the devices."""
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    steps = steps_per_epoch(epoch_length(split, sampling), batch_size)
    epoch, position = divmod(start_step, steps)
    while True:
        yield epoch_order(split, seed, epoch, sampling), range(position, steps)
        epoch, position = epoch + 1, 0


def train_batches(split: ArraySplit, batch_size: int, seed: int, start_step: int = 0,
                  sampling: str = "shuffle") -> Iterator[Batch]:
    """Infinite batches for steps start_step, start_step + 1, ...

    Yields exactly what `train_batch` returns for each step, but draws each
    epoch's order once.
    """
    for order, positions in epoch_orders(split, batch_size, seed, start_step, sampling):
        for pos in positions:
            yield split.take(order[pos * batch_size : (pos + 1) * batch_size])


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
        yield {**split.take(indices), "mask": mask}


def eval_indices(n: int, batch_size: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of evaluation batch `b` of a split of `n` examples and its mask (see
    `eval_batches`)."""
    positions = np.arange(b * batch_size, (b + 1) * batch_size)
    real = positions < n
    return np.where(real, positions, 0), real.astype(np.float32)
