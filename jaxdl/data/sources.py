"""Offline datasets: fully in-memory arrays plus metadata.

The scikit-learn sources read files bundled with the package, so they never
touch the network. sklearn is imported inside each loader to keep
`import jaxdl.data` cheap.
"""

from __future__ import annotations

import importlib.util

import numpy as np

# Dataset lives in its own file, which the registry can name without importing the
# loaders; re-exported here for the callers that take it from this module.
from jaxdl.data.dataset import Dataset  # noqa: F401
from jaxdl.data.registry import register_source


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
