"""The Dataset type every source returns: in-memory arrays plus metadata."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import numpy as np


# eq=False: the generated __eq__ would compare arrays elementwise and raise.
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """All examples of a dataset; `num_classes` is None for regression.

    `features`/`targets` are the pool that is split by fractions. A dataset that
    ships fixed splits (MNIST's 10,000 test images) holds them, kept apart from
    that pool, in `predefined_splits`: split name -> (features, targets), or a split
    object read lazily (`len` and `take`, e.g. `streaming.RecordSplit`).
    `metadata` carries what a task needs to interpret the arrays (e.g. the mean and
    standard deviation a normalised target is reported back in, or a vocabulary).
    """

    name: str
    features: np.ndarray
    targets: np.ndarray
    num_classes: int | None
    description: str
    predefined_splits: Mapping[str, tuple[np.ndarray, np.ndarray] | Any] | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check_rows(self.name, "", self.features, self.targets)
        if self.predefined_splits is not None:
            for split, rows in self.predefined_splits.items():
                if not hasattr(rows, "take"):  # a lazy split's rows come whole from take
                    _check_rows(self.name, f" split {split!r}", *rows)
            # Read-only view, so the frozen dataclass cannot be changed through the dict.
            object.__setattr__(self, "predefined_splits",
                               types.MappingProxyType(dict(self.predefined_splits)))

    def __len__(self) -> int:
        return len(self.features)


def _check_rows(name: str, where: str, features: np.ndarray, targets: np.ndarray) -> None:
    if len(features) != len(targets):
        raise ValueError(f"Dataset {name!r}{where}: {len(features)} feature rows but "
                         f"{len(targets)} targets.")
