"""Offline datasets: fully in-memory arrays plus metadata.

The scikit-learn sources read files bundled with the package, so they never
touch the network. sklearn is imported inside each loader to keep
`import jaxdl.data` cheap.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdl.data.registry import register_source


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


def _sklearn_bundle() -> str | None:
    # find_spec locates the package without importing it (importing sklearn takes seconds).
    return "scikit-learn bundle" if importlib.util.find_spec("sklearn") else None


# The raw digit images are 4-bit intensities in 0..16.
_DIGITS_MAX_INTENSITY = 16.0


@register_source("digits", locate=_sklearn_bundle)
def load_digits() -> Dataset:
    """sklearn's 1,797 8x8 handwritten digits as [N, 8, 8, 1] float32 in [0, 1]."""
    from sklearn import datasets

    bunch = datasets.load_digits()
    images = bunch.images.astype(np.float32) / np.float32(_DIGITS_MAX_INTENSITY)
    return Dataset(
            name="digits",
            features=images[..., None],  # NHWC with one channel, as conv nets expect.
            targets=bunch.target.astype(np.int32),
            num_classes=len(bunch.target_names),
            description="UCI optical handwritten digits (sklearn bundle), 8x8x1, 10 classes.",
    )


@register_source("breast_cancer", locate=_sklearn_bundle)
def load_breast_cancer() -> Dataset:
    """Wisconsin breast cancer: 569 x 30 raw float32 features; 0=malignant, 1=benign."""
    from sklearn import datasets

    bunch = datasets.load_breast_cancer()
    return Dataset(
            name="breast_cancer",
            features=bunch.data.astype(np.float32),
            targets=bunch.target.astype(np.int32),
            num_classes=len(bunch.target_names),
            description="Breast cancer Wisconsin diagnostic (sklearn bundle), 30 raw features, "
            "targets 0=malignant 1=benign.",
    )


@register_source("diabetes", locate=_sklearn_bundle)
def load_diabetes() -> Dataset:
    """Diabetes regression: 442 x 10 float32 features, float32 targets."""
    from sklearn import datasets

    bunch = datasets.load_diabetes()
    return Dataset(
            name="diabetes",
            features=bunch.data.astype(np.float32),
            targets=bunch.target.astype(np.float32),
            num_classes=None,
            description="Diabetes progression regression (sklearn bundle), 10 features "
            "as scaled by sklearn.",
    )
