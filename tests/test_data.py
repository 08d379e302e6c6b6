"""Tests for jaxdl.data: sources, splits and host-side batching."""

import numpy as np
import pytest

from jaxdl import data
from jaxdl.data import pipeline, splits

FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}


# --- sources -----------------------------------------------------------------


def test_digits():
    ds = data.load_source("digits")
    assert ds.name == "digits"
    assert ds.features.shape == (1797, 8, 8, 1)
    assert ds.features.dtype == np.float32
    assert ds.features.min() == 0.0 and ds.features.max() == 1.0
    assert ds.targets.shape == (1797,) and ds.targets.dtype == np.int32
    assert ds.num_classes == 10
    assert set(np.unique(ds.targets)) == set(range(10))


def test_breast_cancer():
    ds = data.load_source("breast_cancer")
    assert ds.features.shape == (569, 30) and ds.features.dtype == np.float32
    assert ds.targets.shape == (569,) and ds.targets.dtype == np.int32
    assert ds.num_classes == 2
    # sklearn's encoding: 212 malignant (0), 357 benign (1).
    assert np.bincount(ds.targets).tolist() == [212, 357]


def test_diabetes():
    ds = data.load_source("diabetes")
    assert ds.features.shape == (442, 10) and ds.features.dtype == np.float32
    assert ds.targets.shape == (442,) and ds.targets.dtype == np.float32
    assert ds.num_classes is None


def test_source_names_sorted_and_complete():
    names = data.source_names()
    assert names == sorted(names)
    assert {"digits", "breast_cancer", "diabetes"} <= set(names)


def test_unknown_source_lists_names():
    with pytest.raises(ValueError, match="no_such_data") as info:
        data.load_source("no_such_data")
    message = str(info.value)
    assert "no_such_data" in message
    assert "\n" not in message
    assert ", ".join(data.source_names()) in message


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match="digits"):
        data.register_source("digits")(lambda: None)


# --- splits ------------------------------------------------------------------


def _labels():
    # Uneven class sizes so rounding matters: 37, 23, 11 and 3 examples.
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(4), [37, 23, 11, 3]))


def test_stratified_split_disjoint_and_covering():
    labels = _labels()
    parts = splits.stratified_split(labels, FRACTIONS, seed=1)
    assert list(parts) == list(FRACTIONS)
    merged = np.concatenate(list(parts.values()))
    assert len(merged) == len(labels)
    assert np.array_equal(np.sort(merged), np.arange(len(labels)))
    for idx in parts.values():
        assert np.array_equal(idx, np.sort(idx))


def test_stratified_split_per_class_proportions():
    labels = _labels()
    parts = splits.stratified_split(labels, FRACTIONS, seed=1)
    for c in np.unique(labels):
        class_size = np.sum(labels == c)
        for name, frac in FRACTIONS.items():
            got = np.sum(labels[parts[name]] == c)
            assert abs(got - frac * class_size) < 1, (c, name, got)


def test_stratified_split_exact_counts_for_divisible_classes():
    labels = np.repeat(np.arange(3), 20)
    parts = splits.stratified_split(labels, FRACTIONS, seed=5)
    for c in range(3):
        assert [np.sum(labels[parts[k]] == c) for k in FRACTIONS] == [14, 2, 4]


def test_stratified_split_deterministic_in_seed():
    labels = _labels()
    a = splits.stratified_split(labels, FRACTIONS, seed=3)
    b = splits.stratified_split(labels, FRACTIONS, seed=3)
    c = splits.stratified_split(labels, FRACTIONS, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in FRACTIONS)
    assert not all(np.array_equal(a[k], c[k]) for k in FRACTIONS)


@pytest.mark.parametrize(
    "fractions", [{"train": 0.7, "test": 0.2}, {"train": 0.9, "test": 0.2}, {"a": 1.2, "b": -0.2}]
)
def test_split_fractions_must_sum_to_one(fractions):
    expected = (r"Split fractions must be >= 0, got \{'b': -0.2\}" if "b" in fractions else
                r"Split fractions must sum to 1, got ")
    with pytest.raises(ValueError, match=expected):
        splits.stratified_split(_labels(), fractions, seed=0)
    with pytest.raises(ValueError, match=expected):
        splits.random_split(10, fractions, seed=0)


def test_zero_fraction_gives_empty_split():
    parts = splits.stratified_split(_labels(), {"train": 1.0, "test": 0.0}, seed=0)
    assert parts["test"].shape == (0,)
    assert len(parts["train"]) == len(_labels())


def test_stratified_split_rejects_float_labels():
    with pytest.raises(ValueError, match="random_split"):
        splits.stratified_split(np.linspace(0, 1, 10), FRACTIONS, seed=0)


def test_random_split():
    parts = splits.random_split(101, FRACTIONS, seed=2)
    assert [len(parts[k]) for k in FRACTIONS] == [71, 10, 20]
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(101))
    again = splits.random_split(101, FRACTIONS, seed=2)
    other = splits.random_split(101, FRACTIONS, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in FRACTIONS)
    assert not np.array_equal(parts["train"], other["train"])


# --- pipeline ----------------------------------------------------------------


def _split(n):
    # Row i of inputs encodes i so tests can recover which examples a batch holds.
    inputs = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return pipeline.ArraySplit(inputs=inputs, targets=np.arange(n, dtype=np.int32))


def test_steps_per_epoch():
    assert pipeline.steps_per_epoch(10, 4) == 2
    with pytest.raises(ValueError, match="smaller than one batch.*3.*4"):
        pipeline.steps_per_epoch(3, 4)


def test_train_batch_shape_and_determinism():
    split = _split(10)
    batch = pipeline.train_batch(split, batch_size=4, seed=0, step=3)
    assert batch["inputs"].shape == (4, 3) and batch["targets"].shape == (4,)
    again = pipeline.train_batch(split, batch_size=4, seed=0, step=3)
    assert np.array_equal(batch["inputs"], again["inputs"])
    assert np.array_equal(batch["targets"], again["targets"])
    # Rows stay paired.
    assert np.array_equal(batch["inputs"][:, 0], batch["targets"].astype(np.float32))


@pytest.mark.parametrize("start_step", [0, 2, 5, 7])
def test_generator_matches_train_batch(start_step):
    split = _split(12)  # 3 steps per epoch at batch 4; 5 and 7 start mid-epoch.
    gen = pipeline.train_batches(split, batch_size=4, seed=9, start_step=start_step)
    for step in range(start_step, start_step + 8):
        got = next(gen)
        want = pipeline.train_batch(split, batch_size=4, seed=9, step=step)
        assert np.array_equal(got["inputs"], want["inputs"]), step
        assert np.array_equal(got["targets"], want["targets"]), step


def test_each_epoch_is_a_permutation_and_epochs_differ():
    split = _split(12)
    gen = pipeline.train_batches(split, batch_size=4, seed=1)
    epochs = [np.concatenate([next(gen)["targets"] for _ in range(3)]) for _ in range(3)]
    for order in epochs:
        assert np.array_equal(np.sort(order), np.arange(12))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_train_batch_depends_on_seed():
    split = _split(12)
    a = pipeline.train_batch(split, 4, seed=0, step=0)["targets"]
    b = pipeline.train_batch(split, 4, seed=1, step=0)["targets"]
    assert not np.array_equal(a, b)


def test_eval_batches_pads_and_masks():
    split = _split(10)
    batches = list(pipeline.eval_batches(split, batch_size=4))
    assert len(batches) == pipeline.num_eval_batches(10, 4) == 3
    for b in batches:
        assert b["inputs"].shape == (4, 3) and b["targets"].shape == (4,)
        assert b["mask"].shape == (4,) and b["mask"].dtype == np.float32
    assert [b["mask"].sum() for b in batches] == [4, 4, 2]
    assert sum(b["mask"].sum() for b in batches) == len(split)
    real = np.concatenate([b["targets"][b["mask"] == 1] for b in batches])
    assert np.array_equal(real, np.arange(10))  # each once, in order


def test_eval_batches_exact_multiple_has_no_padding():
    batches = list(pipeline.eval_batches(_split(8), batch_size=4))
    assert len(batches) == 2
    assert all(b["mask"].min() == 1.0 for b in batches)


def test_data_layer_does_not_import_jax_or_upper_layers():
    import pathlib
    import subprocess
    import sys

    code = (
        "import sys, jaxdl.data; "
        "bad = [m for m in sys.modules if m == 'jax' or m.startswith(('jaxdl.training', "
        "'jaxdl.tasks', 'jaxdl.models', 'sklearn'))]; "
        "print(bad); sys.exit(bool(bad))"
    )
    repo_root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root
    )
    assert result.returncode == 0, result.stdout + result.stderr
