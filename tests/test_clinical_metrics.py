"""Whole-split metrics against scikit-learn (to 1e-6) and hand computations, on random and
degenerate inputs (one class absent, all predictions equal, ties), and the threshold rules."""

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxdl.tasks import clinical_metrics as cm

TOL = 1e-6


def random_binary(seed, n=300, positives=0.3):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < positives).astype(int)
    scores = np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)
    return labels, scores


def sklearn_binary(labels, scores, threshold):
    predicted = (scores >= threshold).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "sensitivity": skm.recall_score(labels, predicted, zero_division=np.nan),
            "specificity": skm.recall_score(1 - labels, 1 - predicted, zero_division=np.nan),
            "precision": skm.precision_score(labels, predicted, zero_division=np.nan),
            "npv": skm.precision_score(1 - labels, 1 - predicted, zero_division=np.nan),
            "f1": skm.f1_score(labels, predicted, zero_division=np.nan),
            "balanced_accuracy": skm.balanced_accuracy_score(labels, predicted),
            "kappa": skm.cohen_kappa_score(labels, predicted),
            "mcc": skm.matthews_corrcoef(labels, predicted),
            "roc_auc": skm.roc_auc_score(labels, scores),
            "pr_auc": skm.average_precision_score(labels, scores),
            "brier": skm.brier_score_loss(labels, scores),
        }


def assert_close(ours, theirs):
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=TOL, nan_ok=True), name


@pytest.mark.parametrize("seed,threshold", [(0, 0.5), (1, 0.3), (2, 0.71)])
def test_binary_metrics_equal_sklearn_on_random_scores(seed, threshold):
    labels, scores = random_binary(seed)
    ours = cm.binary_metrics(labels, scores, threshold)
    assert set(ours) == set(cm.BINARY_METRICS)
    assert_close(ours, sklearn_binary(labels, scores, threshold))


def test_ties_and_all_equal_predictions():
    """Tied scores: ROC-AUC counts a tie as half (as sklearn); every score equal: AUC 1/2,
    nothing predicted positive above it, so precision undefined and kappa 0 (sklearn)."""
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    tied = np.array([0.2, 0.5, 0.5, 0.5, 0.5, 0.9, 0.1, 0.2])
    assert_close(cm.binary_metrics(labels, tied, 0.5), sklearn_binary(labels, tied, 0.5))
    equal = np.full(8, 0.4)
    ours = cm.binary_metrics(labels, equal, 0.5)
    assert_close(ours, sklearn_binary(labels, equal, 0.5))
    assert ours["roc_auc"] == 0.5 and math.isnan(ours["precision"])
    assert ours["sensitivity"] == 0.0 and ours["specificity"] == 1.0


def test_one_class_absent_is_nan_where_undefined():
    """No positive: sensitivity, ROC-AUC and PR-AUC are NaN (sklearn gives AP 0.0: the one
    documented difference); specificity, NPV, Brier and ECE stay defined."""
    labels = np.zeros(6, int)
    scores = np.array([0.1, 0.2, 0.6, 0.3, 0.05, 0.7])
    ours = cm.binary_metrics(labels, scores, 0.5)
    for name in ("sensitivity", "roc_auc", "pr_auc"):
        assert math.isnan(ours[name]), name
    assert ours["specificity"] == pytest.approx(4 / 6)
    assert ours["npv"] == 1.0 and ours["precision"] == 0.0 and ours["f1"] == 0.0
    assert ours["balanced_accuracy"] == pytest.approx(4 / 6)
    theirs = sklearn_binary(labels, scores, 0.5)
    assert theirs["pr_auc"] == 0.0  # what we refuse to report
    assert_close(ours, {k: v for k, v in theirs.items() if k != "pr_auc"})


def test_ece_and_reliability_by_hand():
    """Bins [0, .5) and [.5, 1]: (0.1, 0.3 | y 0, 1) and (0.6, 0.8, 1.0 | y 1, 1, 0)."""
    labels = np.array([0, 1, 1, 1, 0])
    p = np.array([0.1, 0.3, 0.6, 0.8, 1.0])
    counts, confidence, frequency = cm.reliability(labels, p, 2)
    np.testing.assert_array_equal(counts, [2, 3])
    np.testing.assert_allclose(confidence, [0.2, 0.8])
    np.testing.assert_allclose(frequency, [0.5, 2 / 3])
    expected = 2 / 5 * abs(0.5 - 0.2) + 3 / 5 * abs(2 / 3 - 0.8)
    assert cm.expected_calibration_error(labels, p, 2) == pytest.approx(expected, abs=1e-12)
    assert cm.binary_metrics(labels, p, bins=2)["ece"] == pytest.approx(expected, abs=1e-12)


def test_specificity_and_npv_by_hand():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.4])
    # At 0.5: tp 2 (0.9, 0.6), fn 1, fp 1 (0.7), tn 3.
    assert cm.binary_counts(labels, scores, 0.5) == (3, 1, 1, 2)
    ours = cm.binary_metrics(labels, scores, 0.5)
    assert ours["specificity"] == pytest.approx(3 / 4) and ours["npv"] == pytest.approx(3 / 4)
    assert ours["sensitivity"] == pytest.approx(2 / 3) and ours["precision"] == pytest.approx(2 / 3)


def random_multiclass(seed, n=400, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    p = np.exp(logits)
    return labels, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_metrics_equal_sklearn(seed):
    labels, p = random_multiclass(seed)
    predicted = p.argmax(1)
    ours = cm.multiclass_metrics(labels, p)
    assert set(ours) == set(cm.MULTICLASS_METRICS)
    onehot = np.eye(4)[labels]
    expected = {
        "balanced_accuracy": skm.balanced_accuracy_score(labels, predicted),
        "macro_recall": skm.recall_score(labels, predicted, average="macro"),
        "macro_precision": skm.precision_score(labels, predicted, average="macro"),
        "macro_f1": skm.f1_score(labels, predicted, average="macro"),
        "weighted_f1": skm.f1_score(labels, predicted, average="weighted"),
        "roc_auc": skm.roc_auc_score(labels, p, multi_class="ovr", average="macro"),
        "kappa": skm.cohen_kappa_score(labels, predicted),
        "quadratic_kappa": skm.cohen_kappa_score(labels, predicted, weights="quadratic"),
        "brier": np.mean(np.sum((p - onehot) ** 2, axis=1)),
    }
    assert_close(ours, expected)
    report = cm.per_class_report(labels, p)
    np.testing.assert_allclose(report["recall"], skm.recall_score(labels, predicted,
                                                                 average=None), atol=TOL)
    np.testing.assert_allclose(report["f1"], skm.f1_score(labels, predicted, average=None),
                               atol=TOL)


def test_multiclass_with_a_class_absent_and_never_predicted():
    """Class 3 absent from the labels and never the argmax: its recall and precision are
    undefined (NaN) and left out of the macro means, its ROC-AUC too."""
    labels, p = random_multiclass(3, classes=4)
    keep = labels != 3
    labels, p = labels[keep], p[keep]
    p[:, 3] = 0.0
    ours = cm.multiclass_metrics(labels, p)
    report = cm.per_class_report(labels, p)
    assert math.isnan(report["recall"][3]) and math.isnan(report["roc_auc"][3])
    present = [0, 1, 2]
    predicted = p.argmax(1)
    assert ours["macro_recall"] == pytest.approx(
        skm.recall_score(labels, predicted, labels=present, average="macro"), abs=TOL)
    assert ours["roc_auc"] == pytest.approx(np.mean(report["roc_auc"][:3]), abs=TOL)


def test_top_label_ece_by_hand():
    labels = np.array([0, 1, 2, 2])
    p = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
    # Confidences 0.9 (right), 0.6 (wrong), 0.6 (right), 0.8 (right); 5 bins of 0.2:
    # bin [0.6, 0.8): 0.6, 0.6 -> frequency 1/2; bin [0.8, 1]: 0.9, 0.8 -> frequency 1.
    expected = 2 / 4 * abs(0.5 - 0.6) + 2 / 4 * abs(1.0 - 0.85)
    assert cm.multiclass_metrics(labels, p, bins=5)["ece"] == pytest.approx(expected)


# The operating point.


def brute_force(labels, scores, rule):
    """Every distinct cut, the one the rule's docstring describes, by a plain loop."""
    kind, target = cm.parse_rule(rule)
    rows = []
    for t in cm.candidate_thresholds(scores):
        tn, fp, fn, tp = cm.binary_counts(labels, scores, t)
        rows.append((t, tp / (tp + fn), tn / (tn + fp), 2 * tp / (2 * tp + fp + fn)))
    if kind == "sensitivity":
        return max(t for t, se, sp, _ in rows if se >= target)
    if kind == "specificity":
        return min(t for t, se, sp, _ in rows if sp >= target)
    if kind == "youden":
        best = max(se + sp - 1 for _, se, sp, _ in rows)
        return max(t for t, se, sp, _ in rows if se + sp - 1 == best)
    best = np.nanmax([f for *_, f in rows])
    return max(t for t, *_, f in rows if f == best)


@pytest.mark.parametrize("rule", ["sensitivity>=0.95", "specificity>=0.9", "youden", "f1",
                                  "sensitivity>=1"])
@pytest.mark.parametrize("seed", [0, 1])
def test_choose_threshold_agrees_with_a_plain_search(rule, seed):
    labels, scores = random_binary(seed, n=120)
    scores = np.round(scores, 2)  # ties
    point = cm.choose_threshold(labels, scores, rule)
    assert point.met
    assert point.threshold == brute_force(labels, scores, rule)
    m = cm.binary_metrics(labels, scores, point.threshold)
    if rule.startswith(("sensitivity", "specificity")):
        kind, target = cm.parse_rule(rule)
        assert m[kind] >= target and point.value == m[kind]


def test_sensitivity_rule_keeps_the_best_specificity():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1])
    point = cm.choose_threshold(labels, scores, "sensitivity>=0.75")
    assert point.threshold == 0.7 and point.value == 0.75
    point = cm.choose_threshold(labels, scores, "sensitivity>=0.95")
    assert point.threshold == 0.3 and point.value == 1.0  # specificity 2/4 there
    assert cm.choose_threshold(labels, scores, "specificity>=0.75").threshold == 0.6


def test_an_unreachable_rule_reports_the_best_value_instead_of_failing():
    """A validation split without positives meets no sensitivity bound; one without
    negatives no specificity bound: reported as not met, not raised."""
    scores = np.array([0.1, 0.4, 0.8])
    point = cm.choose_threshold(np.zeros(3), scores, "sensitivity>=0.999")
    assert not point.met and math.isnan(point.value)
    assert point.threshold == cm.DEFAULT_THRESHOLD
    assert "cannot be met" in point.describe()
    # Youden needs both classes; F1 is defined (0) without positives: the best is 0.
    assert not cm.choose_threshold(np.ones(3), scores, "youden").met
    point = cm.choose_threshold(np.ones(3), scores, "specificity>=0.9")
    assert not point.met and "best reachable is nan" in point.describe()


@pytest.mark.parametrize("text,message", [
    ("sensitivity>=1.5", "must lie in"), ("sensitivity>=0", "must lie in"),
    ("recall>=0.9", "unknown rule"), ("sensitivity>0.9", "unknown rule"),
    ("youden ", None), ("", None)])
def test_rule_check_names_the_forms(text, message):
    error = cm.check_rule(text)
    if message is None:
        assert error is None
    else:
        assert message in error and ("youden" in error or "(0, 1]" in error)
