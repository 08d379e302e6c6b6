"""k-fold splits, class-balanced sampling, class weights, mixup and the class-count report."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest

from conftest import make_config, run_cli, stderr_tail
from jaxdl import tasks
from jaxdl.config import ConfigError
from jaxdl.data import Dataset, pipeline, splits
from jaxdl.tasks import classification
from jaxdl.training import loop

# Three classes of 50, 23 and 7 examples, interleaved so class and index are unrelated.
IMBALANCED = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [50, 23, 7]))


def _assert_partition(folds, n):
    everything = np.concatenate(folds)
    assert np.array_equal(np.sort(everything), np.arange(n)), "not a partition"
    for fold in folds:
        assert fold.dtype == np.int64 and np.array_equal(fold, np.sort(fold))
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1, sizes


# --- k-fold ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 7])
def test_stratified_kfold_partitions_and_spreads_every_class(k):
    folds = splits.stratified_kfold(IMBALANCED, k, seed=3)
    assert len(folds) == k
    _assert_partition(folds, len(IMBALANCED))
    for label, total in zip((0, 1, 2), (50, 23, 7)):
        per_fold = [int(np.sum(IMBALANCED[f] == label)) for f in folds]
        assert sum(per_fold) == total
        assert max(per_fold) - min(per_fold) <= 1, (label, per_fold)


def test_kfold_is_a_pure_function_of_its_inputs():
    a = splits.stratified_kfold(IMBALANCED, 5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, splits.stratified_kfold(IMBALANCED, 5, 3)))
    assert not all(np.array_equal(x, y)
                   for x, y in zip(a, splits.stratified_kfold(IMBALANCED, 5, 4)))
    b = splits.kfold(17, 4, seed=1)
    _assert_partition(b, 17)
    assert all(np.array_equal(x, y) for x, y in zip(b, splits.kfold(17, 4, 1)))
    assert not all(np.array_equal(x, y) for x, y in zip(b, splits.kfold(17, 4, 2)))


def test_kfold_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="k >= 2"):
        splits.kfold(10, 1, 0)
    with pytest.raises(ValueError, match="empty"):
        splits.stratified_kfold(np.array([0, 1, 1]), 4, 0)
    with pytest.raises(ValueError, match="use kfold"):
        splits.stratified_kfold(np.linspace(0, 1, 10), 2, 0)


# --- balanced sampling -----------------------------------------------------------------------


def _split(labels):
    # Row i of inputs encodes i, so a batch says which examples it holds.
    labels = np.asarray(labels, np.int32)
    return pipeline.ArraySplit(inputs=np.arange(len(labels), dtype=np.float32)[:, None],
                               targets=labels)


def test_balanced_epoch_oversamples_every_class_to_the_largest():
    split = _split(IMBALANCED)
    assert pipeline.epoch_length(split, "balanced") == 3 * 50
    order = pipeline.epoch_order(split, seed=5, epoch=2, sampling="balanced")
    assert len(order) == 150
    assert np.bincount(IMBALANCED[order]).tolist() == [50, 50, 50]
    drawn = np.bincount(order, minlength=len(IMBALANCED))
    # Majority examples once each; a minority example floor or ceil of its share.
    assert np.all(drawn[IMBALANCED == 0] == 1)
    assert set(drawn[IMBALANCED == 1]) <= {2, 3} and set(drawn[IMBALANCED == 2]) <= {7, 8}
    # Shuffled across classes, not class after class.
    assert len(set(IMBALANCED[order[:20]])) == 3


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    split = _split(IMBALANCED)
    def order(seed, epoch, sampling="balanced"):
        return pipeline.epoch_order(split, seed, epoch, sampling)
    assert np.array_equal(order(1, 4), order(1, 4))
    assert not np.array_equal(order(1, 4), order(1, 5))
    assert not np.array_equal(order(1, 4), order(2, 4))
    # 'shuffle' is the permutation every run so far was trained on.
    assert np.array_equal(order(1, 4, "shuffle"),
                          np.random.default_rng([1, 4]).permutation(len(IMBALANCED)))
    assert pipeline.epoch_length(split) == len(IMBALANCED)
    with pytest.raises(ValueError, match="unknown sampling"):
        order(1, 4, "oversample")
    with pytest.raises(ValueError, match="integer class label"):
        pipeline.epoch_order(pipeline.ArraySplit(np.zeros((4, 1)), np.linspace(0, 1, 4)), 0, 0,
                             "balanced")


def test_balanced_resume_gives_the_uninterrupted_batches():
    split = _split(IMBALANCED)  # 150 per epoch at batch 16: 9 steps, 6 examples dropped
    uninterrupted = list(itertools.islice(
        pipeline.train_batches(split, 16, seed=7, sampling="balanced"), 30))
    for start in (0, 4, 9, 13):
        resumed = pipeline.train_batches(split, 16, seed=7, start_step=start,
                                         sampling="balanced")
        for step in range(start, 30):
            got = next(resumed)
            assert np.array_equal(got["inputs"], uninterrupted[step]["inputs"]), (start, step)
            single = pipeline.train_batch(split, 16, seed=7, step=step, sampling="balanced")
            assert np.array_equal(single["targets"], uninterrupted[step]["targets"]), step
    epoch = np.concatenate([b["targets"] for b in uninterrupted[:9]])
    counts = np.bincount(epoch)
    assert counts.max() - counts.min() <= 6, counts  # only the dropped remainder is uneven


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"data.folds": 1}, "folds=1"),
    ({"data.folds": 5, "data.fold": 5, "data.validation_fraction": 0.0}, "fold=5 must be < "),
    ({"data.fold": 2}, "needs config.data.folds >= 2"),
    ({"data.folds": 5}, "validation_fraction must be 0.0 with folds=5"),
    ({"data.sampling": "oversample"}, "unknown 'oversample'"),
    ({"task.class_weighting": "inverse"}, "unknown 'inverse'"),
    ({"task.mixup_alpha": -0.5}, "must be >= 0"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_config("digits_mlp", **overrides)
    assert "\n" not in str(info.value)


def test_balanced_sampling_of_regression_targets_is_a_config_error():
    config = make_config("digits_mlp", **{"data.name": "diabetes", "data.sampling": "balanced"})
    with pytest.raises(ConfigError, match="integer class label"):
        loop.build(config)


def test_folds_split_the_pool_the_test_split_leaves():
    base = {"data.folds": 4, "data.validation_fraction": 0.0}
    runs = [loop.load_splits(make_config("digits_mlp", **base, **{"data.fold": k}))[1]
            for k in range(4)]

    def rows(split):
        return {r.tobytes() for r in split.inputs}

    test = rows(runs[0]["test"])
    assert all(rows(r["test"]) == test for r in runs), "the test split moved with the fold"
    validations = [rows(r["validation"]) for r in runs]
    pool = validations[0] | rows(runs[0]["train"])
    assert not pool & test and len(pool) + len(test) == 1797
    assert set().union(*validations) == pool and sum(map(len, validations)) == len(pool)
    for r, validation in zip(runs, validations):
        assert rows(r["train"]) == pool - validation


# --- class weights and mixup -----------------------------------------------------------------


def _task(train_labels, **task_fields):
    config = make_config("digits_mlp", **{"model.widths": (8,), "model.dropout_rate": 0.0,
                                          "model.num_classes": 3},
                         **{f"task.{k}": v for k, v in task_fields.items()})
    dataset = Dataset(name="toy", features=np.zeros((9, 4), np.float32),
                      targets=np.zeros(9, np.int32), num_classes=3, description="toy")
    return tasks.build_task(config, dataset, axis_name=None,
                            train_split=_split(train_labels))


def _batch():
    rng = np.random.default_rng(1)
    return {"inputs": rng.normal(size=(6, 4)).astype(np.float32),
            "targets": np.array([0, 1, 2, 2, 0, 1], np.int32)}


def _cross_entropy(logits, labels):
    logits = np.asarray(logits, np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def test_balanced_class_weights_scale_the_loss_not_the_accuracy():
    train_labels = [0, 0, 0, 0, 1, 1, 2]  # n = 7 over 3 classes: weights 7/12, 7/6, 7/3
    task = _task(train_labels, class_weighting="balanced")
    assert task.class_weights == pytest.approx((7 / 12, 7 / 6, 7 / 3))
    plain = _task(train_labels)
    batch, rng = _batch(), jax.random.PRNGKey(0)
    variables = task.init(rng, batch["inputs"])
    logits = np.asarray(task.model.apply(variables, batch["inputs"], train=False))
    by_hand = _cross_entropy(logits, batch["targets"]) * np.array([7 / 12, 7 / 6, 7 / 3])[
        batch["targets"]]
    for train in (True, False):
        values, _ = task.apply(variables, batch, train=train, rng=rng)
        unweighted, _ = plain.apply(variables, batch, train=train, rng=rng)
        np.testing.assert_allclose(values["loss"], by_hand, rtol=1e-5)
        np.testing.assert_array_equal(values["accuracy"], unweighted["accuracy"])
        np.testing.assert_allclose(unweighted["loss"],
                                   _cross_entropy(logits, batch["targets"]), rtol=1e-5)
    with pytest.raises(ConfigError, match=r"class\(es\) \[2\] have no training example"):
        _task([0, 1, 1], class_weighting="balanced")


def test_logit_adjustment_shifts_the_loss_by_the_log_prior_not_the_predictions():
    """Menon et al.'s logit-adjusted loss: cross-entropy of logits + tau * log(prior), the
    prior from the train split's counts (4/7, 2/7, 1/7); accuracy from the raw logits."""
    train_labels = [0, 0, 0, 0, 1, 1, 2]
    task = _task(train_labels, logit_adjustment=0.5)
    plain = _task(train_labels)
    batch, rng = _batch(), jax.random.PRNGKey(0)
    variables = task.init(rng, batch["inputs"])
    logits = np.asarray(task.model.apply(variables, batch["inputs"], train=False))
    shifted = logits + 0.5 * np.log(np.array([4, 2, 1]) / 7)
    values, _ = task.apply(variables, batch, train=False, rng=rng)
    unadjusted, _ = plain.apply(variables, batch, train=False, rng=rng)
    np.testing.assert_allclose(values["loss"], _cross_entropy(shifted, batch["targets"]),
                               rtol=1e-5)
    np.testing.assert_array_equal(values["accuracy"], unadjusted["accuracy"])
    with pytest.raises(ConfigError, match=r"logit_adjustment=0.5: class\(es\) \[2\] have no "
                                          "training example, so their prior is undefined"):
        _task([0, 1, 1], logit_adjustment=0.5)


def test_focal_loss_is_a_classification_loss_option():
    train_labels = [0, 0, 0, 0, 1, 1, 2]
    focal = _task(train_labels, loss="softmax_focal", focal_gamma=2.0)
    batch, rng = _batch(), jax.random.PRNGKey(0)
    variables = focal.init(rng, batch["inputs"])
    logits = np.asarray(focal.model.apply(variables, batch["inputs"], train=False))
    ce = _cross_entropy(logits, batch["targets"])
    values, _ = focal.apply(variables, batch, train=False, rng=rng)
    np.testing.assert_allclose(values["loss"], (1 - np.exp(-ce)) ** 2 * ce, rtol=1e-5)
    with pytest.raises(ConfigError, match="focal_gamma applies to softmax_focal, not to "
                                          "'softmax_cross_entropy'"):
        _task(train_labels, focal_gamma=2.0)


def test_mixup_off_is_the_plain_loss_and_on_mixes_by_hand():
    batch, rng = _batch(), jax.random.PRNGKey(3)
    plain = _task([0, 1, 2])
    variables = plain.init(rng, batch["inputs"])
    reference, _ = plain.apply(variables, batch, train=True, rng=rng)
    off, _ = _task([0, 1, 2], mixup_alpha=0.0).apply(variables, batch, train=True, rng=rng)
    np.testing.assert_array_equal(off["loss"], reference["loss"])

    mixing = _task([0, 1, 2], mixup_alpha=0.4)
    values, _ = mixing.apply(variables, batch, train=True, rng=rng)
    again, _ = mixing.apply(variables, batch, train=True, rng=rng)
    other, _ = mixing.apply(variables, batch, train=True, rng=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(values["loss"], again["loss"])
    assert not np.allclose(values["loss"], reference["loss"])
    assert not np.allclose(values["loss"], other["loss"])

    mixed, partner, lam = classification.mixup(
        jax.random.fold_in(rng, classification.MIXUP_STREAM), batch["inputs"], 0.4)
    partner, lam = np.asarray(partner), float(lam)
    assert sorted(partner) == list(range(6)) and 0 < lam < 1
    np.testing.assert_allclose(mixed, lam * batch["inputs"] + (1 - lam) * batch["inputs"][partner],
                               rtol=1e-6)
    logits = np.asarray(mixing.model.apply(variables, mixed, train=True))
    labels = batch["targets"]
    by_hand = (lam * _cross_entropy(logits, labels)
               + (1 - lam) * _cross_entropy(logits, labels[partner]))
    np.testing.assert_allclose(values["loss"], by_hand, rtol=1e-5)
    # Evaluation is never mixed.
    evaluated, _ = mixing.apply(variables, batch, train=False, rng=rng)
    plain_eval, _ = plain.apply(variables, batch, train=False, rng=rng)
    np.testing.assert_array_equal(evaluated["loss"], plain_eval["loss"])


# --- the experiment, through the CLI ---------------------------------------------------------


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_breast_cancer_folds_run_with_counts_reported(tmp_path):
    """One shrunken fold of the experiment, with balanced sampling and mixup on as well:
    the class counts are logged and saved, the folds are stratified, the epoch is the
    balanced one."""
    workdir = tmp_path / "run"
    result = run_cli("experiments.breast_cancer_mlp", f"--workdir={workdir}",
                     "--config.data.fold=3", "--config.data.sampling=balanced",
                     "--config.task.mixup_alpha=0.4", "--config.train.duration=2 epochs",
                     "--config.train.eval_every=2 epochs", "--config.logging.progress=False",
                     "--config.logging.plot=False", "--config.logging.tensorboard=False",
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "final test: accuracy" in result.stdout
    saved = json.loads((workdir / "config.json").read_text())
    counts = saved["class_counts"]
    assert {k: sum(v) for k, v in counts.items()} == saved["num_examples"]
    # 212 malignant / 357 benign: 20% of each for test, a fifth of the rest validates.
    assert counts["test"] == [42, 71]
    assert counts["validation"][0] in (34, 34 + 1) and counts["validation"][1] in (57, 57 + 1)
    assert [a + b + c for a, b, c in zip(*counts.values())] == [212, 357]
    for name, split_counts in counts.items():
        line = f"class counts {name} ({sum(split_counts)} examples): 0: {split_counts[0]}  1: "
        assert line in result.stdout + result.stderr, line
    assert saved["derived"]["steps_per_epoch"] == 2 * max(counts["train"]) // 32
