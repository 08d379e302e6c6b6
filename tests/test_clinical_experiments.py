"""experiments/breast_cancer_screening and experiments/imbalanced_mnist: their configs, the
seeded step imbalance, and (slow) each study end to end on a tiny config."""

import json

import numpy as np
import pytest
from conftest import data_path, make_config

from experiments import breast_cancer_screening, imbalanced_mnist
from jaxdl.data import mnist

QUIET = ["--config.logging.progress=False", "--config.logging.tensorboard=False"]
needs_mnist = pytest.mark.skipif(
    not data_path("mnist").is_dir(),
    reason=f"MNIST IDX files absent ({data_path('mnist')}; set JAXDL_DATA_DIR)")


def test_configs_validate_and_differ_only_in_the_method():
    plain = make_config("imbalanced_mnist").to_dict()
    for method in imbalanced_mnist.METHODS:
        config = imbalanced_mnist.get_config(method)
        assert config.task.split_metrics
    assert imbalanced_mnist.get_config("focal").task.focal_gamma == 2.0
    assert imbalanced_mnist.get_config("balanced").data.sampling == "balanced"
    assert imbalanced_mnist.get_config("weighted").task.class_weighting == "balanced"
    assert plain["task"]["loss"] == "softmax_cross_entropy"
    with pytest.raises(ValueError, match="unknown variant 'smote'"):
        imbalanced_mnist.get_config("smote")
    screening = make_config("breast_cancer_screening")
    assert screening.task.positive_class == 0 and screening.task.operating_point == \
        "sensitivity>=0.95" and screening.checkpoint.monitor == "validation/roc_auc"


@needs_mnist
def test_step_imbalance_is_seeded_and_leaves_the_test_split_alone():
    a = imbalanced_mnist.step_imbalance(minority_classes=(5, 6, 7, 8, 9), ratio=100, seed=0)
    full = mnist.load(mnist.MNIST)
    b = imbalanced_mnist.subsample(full, (5, 6, 7, 8, 9), 100, 0)
    c = imbalanced_mnist.subsample(full, (5, 6, 7, 8, 9), 100, 1)
    counts = np.bincount(a.targets, minlength=10)
    full = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])  # MNIST
    np.testing.assert_array_equal(counts[:5], full[:5])
    np.testing.assert_array_equal(counts[5:], np.round(full[5:] / 100))
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features[a.targets == 5], c.features[c.targets == 5])
    _, test_targets = a.predefined_splits["test"]
    assert len(test_targets) == 10_000 and np.bincount(test_targets).min() > 800


def test_screening_baseline_chooses_on_validation_only():
    """The logistic-regression baseline's test figures are at the threshold its validation
    scores chose; other test labels change the figures, not the threshold."""
    from jaxdl.training import loop

    splits = loop.load_splits(make_config("breast_cancer_screening"))[1]
    first = breast_cancer_screening.baseline(splits)
    assert first["met_on_validation"]
    flipped = {**splits, "test": type(splits["test"])(splits["test"].inputs,
                                                      1 - splits["test"].targets)}
    second = breast_cancer_screening.baseline(flipped)
    assert second["threshold"] == first["threshold"]
    assert second["sensitivity"] != first["sensitivity"]


@pytest.mark.slow
def test_screening_study_runs_on_a_tiny_config(tmp_path):
    results = breast_cancer_screening.study(tmp_path, QUIET, "tiny", folds=range(2))
    assert len(results["mlp"]) == len(results["logistic_regression"]) == 2
    for fold in results["mlp"]:
        # The test figures are at the threshold the same checkpoint's validation chose.
        assert fold["threshold"] == fold["validation"]["threshold"]
        assert fold["validation"]["sensitivity"] >= 0.95
    assert json.loads((tmp_path / "study.json").read_text())["mlp"][0]["sensitivity"] == \
        results["mlp"][0]["sensitivity"]
    text = breast_cancer_screening.table(results)
    assert "logistic_regression" in text and "sensitivity" in text and "+-" in text


@pytest.mark.slow
@needs_mnist
def test_imbalanced_mnist_study_runs_on_a_tiny_config(tmp_path):
    # Two of the four methods (each config is validated in the fast tier): each run costs a
    # compilation.
    results = imbalanced_mnist.study(tmp_path, QUIET, methods=("weighted", "focal"),
                                     seeds=(0,), tiny=True)
    assert list(results) == ["weighted", "focal"]
    for runs in results.values():
        (run,) = runs
        assert 0 <= run["minority_recall"] <= 1 and len(run["recall"]) == 10
        assert 0 < run["balanced_accuracy"] <= 1 and 0 < run["roc_auc"] <= 1
    text = imbalanced_mnist.table(results)
    assert text.count("\n") == 2 and "minority_recall" in text
