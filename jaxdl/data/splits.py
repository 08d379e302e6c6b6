"""Deterministic index splits (train/validation/test, ...) of a dataset."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

# Fractions come from configs as decimals (0.7 + 0.1 + 0.2 != 1.0 exactly in
# floating point), so "sums to 1" is checked with this tolerance.
_SUM_TOLERANCE = 1e-6


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions:
        raise ValueError("fractions must name at least one split.")
    negative = {k: v for k, v in fractions.items() if v < 0}
    if negative:
        raise ValueError(f"Split fractions must be >= 0, got {negative}.")
    total = math.fsum(fractions.values())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"Split fractions must sum to 1, got {total} from {dict(fractions)}.")


def _largest_remainder_counts(n: int, fractions: list[float]) -> np.ndarray:
    """Integer counts summing exactly to n, each within 1 of n * fraction.

    Ties in the remainders go to the split listed first, so the result is
    deterministic.
    """
    quotas = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(quotas).astype(np.int64)
    remainders = quotas - counts
    shortfall = n - int(counts.sum())
    # Stable sort keeps listing order among equal remainders.
    order = np.argsort(-remainders, kind="stable")
    counts[order[:shortfall]] += 1
    return counts


def _assign(
    groups: list[np.ndarray], fractions: Mapping[str, float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Shuffles each group of indices and deals it out by the fractions."""
    names = list(fractions)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for group in groups:
        shuffled = rng.permutation(group)
        counts = _largest_remainder_counts(len(group), [fractions[k] for k in names])
        bounds = np.cumsum(counts)[:-1]
        for name, chunk in zip(names, np.split(shuffled, bounds)):
            parts[name].append(chunk)
    return {
        name: np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.int64)
        for name, chunks in parts.items()
    }


def stratified_split(
    labels: np.ndarray, fractions: Mapping[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Splits indices of `labels` so every class is divided by `fractions`.

    Returns sorted, disjoint int64 index arrays covering all examples. A pure
    function of (labels, fractions, seed).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
    if np.issubdtype(labels.dtype, np.floating):
        # Each distinct float would become its own one-example class.
        raise ValueError("stratified_split needs class labels; use random_split for regression.")
    _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    # np.unique sorts the classes, so groups are visited in a fixed order.
    classes, inverse = np.unique(labels, return_inverse=True)
    groups = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    return _assign(groups, fractions, rng)


def random_split(n: int, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Like `stratified_split` without stratification (e.g. for regression)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    return _assign([np.arange(n)], fractions, rng)


def _check_folds(n: int, k: int) -> None:
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2 folds, got {k}.")
    if k > n:
        raise ValueError(f"{k} folds of {n} examples would leave a fold empty.")


def _deal(ordered: np.ndarray, k: int) -> list[np.ndarray]:
    """Position i of `ordered` goes to fold i % k: sizes differ by at most one."""
    return [np.sort(ordered[fold::k]).astype(np.int64) for fold in range(k)]


def stratified_kfold(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k sorted, disjoint index arrays that partition `labels`' examples, every class
    dealt over the folds in turn (its count per fold differs by at most one, and so do the
    fold sizes). A pure function of (labels, k, seed)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
    if np.issubdtype(labels.dtype, np.floating):
        raise ValueError("stratified_kfold needs class labels; use kfold for regression.")
    _check_folds(len(labels), k)
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    # Classes one after another, each shuffled: dealing this sequence round-robin
    # continues each class where the previous one stopped, so fold sizes stay even too.
    ordered = np.concatenate([rng.permutation(np.flatnonzero(inverse == c))
                              for c in range(len(classes))])
    return _deal(ordered, k)


def kfold(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Like `stratified_kfold` without stratification (e.g. for regression)."""
    _check_folds(n, k)
    return _deal(np.random.default_rng(seed).permutation(n), k)


def per_class_subsample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` examples of every class of `labels` (all of a class
    with fewer), drawn by `seed`: each class is permuted once and its first `per_class`
    taken, so with one seed 10 per class are among the 50 (the few-shot curves nest)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:per_class]
              for c in range(len(classes))]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def keep_classes(dataset, classes):
    """`dataset` restricted to `classes` in every split (pool and predefined), relabelled
    0, 1, ... in the order given (a few-shot task on classes 5-9 becomes a 5-class one)."""
    classes = [int(c) for c in classes]
    if dataset.num_classes is None:
        raise ValueError(f"data.classes needs a classification dataset; {dataset.name!r} "
                         "has no classes")
    unknown = sorted(set(c for c in classes if not 0 <= c < dataset.num_classes))
    if unknown or len(set(classes)) != len(classes):
        raise ValueError(f"data.classes={tuple(classes)}: each must appear once and be a class "
                         f"of {dataset.name!r} (0..{dataset.num_classes - 1})")
    relabel = np.full(dataset.num_classes, -1, np.int64)
    relabel[classes] = np.arange(len(classes))

    def keep(features, targets):
        rows = np.flatnonzero(np.isin(targets, classes))
        return features[rows], relabel[targets[rows]].astype(targets.dtype)

    predefined = dataset.predefined_splits or {}
    if any(hasattr(split, "take") for split in predefined.values()):
        raise ValueError(f"data.classes cannot filter the streamed splits of {dataset.name!r}")
    features, targets = keep(dataset.features, dataset.targets)
    return dataclasses.replace(
        dataset, features=features, targets=targets, num_classes=len(classes),
        predefined_splits={name: keep(*split) for name, split in predefined.items()} or None,
        description=f"{dataset.description} Classes {tuple(classes)} only, relabelled "
                    f"0..{len(classes) - 1}.")
