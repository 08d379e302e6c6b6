"""Metrics of a whole split's predicted probabilities, on the host, exactly (not averaged
over batches), and the operating point: a decision threshold chosen by a rule.

Binary metrics score one class (the positive one) against the rest from P(positive);
multiclass metrics take the [N, C] probabilities. scikit-learn computes what it computes
exactly (ROC-AUC, average precision, kappa, MCC, Brier, F1...); what it has no function for
(specificity, NPV, expected calibration error, the threshold search) is numpy here.

Undefined values are NaN, silently (an evaluation runs many times; a warning each time
would bury the log), never a guess:
- sensitivity without positives, specificity without negatives, precision (and F1) with
  no predicted positive and no positive, NPV with no predicted negative;
- ROC-AUC and PR-AUC when the split holds one class only (scikit-learn gives NaN for
  ROC-AUC; for average precision without positives it gives 0.0, NaN here);
- Cohen's kappa when the expected agreement is 1 (one label in both y and prediction);
- MCC follows scikit-learn: 0.0 when a row or column of the confusion matrix is empty;
- balanced accuracy: scikit-learn's (the mean recall over the classes present in y).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
from sklearn import metrics as skm

# The binary metrics at a threshold, then those of the scores alone.
THRESHOLD_METRICS = ("sensitivity", "specificity", "precision", "npv", "f1",
                     "balanced_accuracy", "kappa", "mcc")
SCORE_METRICS = ("roc_auc", "pr_auc", "brier", "ece")
BINARY_METRICS = ("threshold", *THRESHOLD_METRICS, *SCORE_METRICS)
MULTICLASS_METRICS = ("balanced_accuracy", "macro_recall", "macro_precision", "macro_f1",
                      "weighted_f1", "roc_auc", "kappa", "quadratic_kappa", "brier", "ece")
# Without an operating point a binary split is thresholded where argmax would cut two
# classes: P(positive) >= 1/2.
DEFAULT_THRESHOLD = 0.5
RULES = ("sensitivity>=X", "specificity>=X", "youden", "f1")
_BOUND = re.compile(r"^(sensitivity|specificity)\s*>=\s*([0-9.eE+-]+)$")


def _ratio(numerator, denominator) -> float:
    return float(numerator / denominator) if denominator else math.nan


def _quiet(fn, *args, **kwargs):
    """scikit-learn's value with its undefined-metric warnings muted (see the module doc)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args, **kwargs))


def binary_counts(labels, scores, threshold: float) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) when `scores >= threshold` is called positive."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    return (int(np.sum(~labels & ~predicted)), int(np.sum(~labels & predicted)),
            int(np.sum(labels & ~predicted)), int(np.sum(labels & predicted)))


def reliability(labels, probabilities, bins: int):
    """Equal-width bins of `probabilities` over [0, 1] (the last one closed): per bin the
    count, the mean probability and the observed frequency of `labels` (NaN when empty)."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels, np.float64)
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=bins) / counts
        frequency = np.bincount(index, weights=y, minlength=bins) / counts
    return counts, confidence, frequency


def expected_calibration_error(labels, probabilities, bins: int) -> float:
    """sum_b n_b / N * |frequency_b - mean probability_b| over `reliability`'s bins
    (Naeini et al. 2015; Guo et al. 2017 with the top label's confidence)."""
    counts, confidence, frequency = reliability(labels, probabilities, bins)
    if not counts.sum():
        return math.nan
    used = counts > 0
    return float(np.sum(counts[used] * np.abs(frequency[used] - confidence[used]))
                 / counts.sum())


def binary_metrics(labels, scores, threshold: float = DEFAULT_THRESHOLD, *,
                   bins: int = 10) -> dict[str, float]:
    """Every name of BINARY_METRICS for `labels` in {0, 1} (1 = positive) and `scores` =
    P(positive), the thresholded ones calling `scores >= threshold` positive; ECE over
    `bins` equal-width bins of P(positive) (what the reliability diagram draws)."""
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, np.float64)
    tn, fp, fn, tp = binary_counts(labels, scores, threshold)
    predicted = (scores >= threshold).astype(np.int64)
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    both = labels.min(initial=1) == 0 and labels.max(initial=0) == 1
    present = [r for r in (sensitivity, specificity) if not math.isnan(r)]
    return {
        "threshold": float(threshold),
        "sensitivity": sensitivity, "specificity": specificity,
        "precision": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": float(np.mean(present)) if present else math.nan,
        "kappa": _quiet(skm.cohen_kappa_score, labels, predicted),
        "mcc": _quiet(skm.matthews_corrcoef, labels, predicted),
        "roc_auc": _quiet(skm.roc_auc_score, labels, scores) if both else math.nan,
        "pr_auc": _quiet(skm.average_precision_score, labels, scores) if both else math.nan,
        "brier": _quiet(skm.brier_score_loss, labels, scores, pos_label=1) if len(labels)
        else math.nan,
        "ece": expected_calibration_error(labels, scores, bins),
    }


def multiclass_metrics(labels, probabilities, *, bins: int = 10) -> dict[str, float]:
    """Every name of MULTICLASS_METRICS from `probabilities` [N, C], predicting the argmax:
    macro and weighted averages as scikit-learn takes them (zero_division NaN: a class
    never predicted and absent has no precision and is left out of the macro mean),
    one-vs-rest ROC-AUC averaged over the classes present (scikit-learn's 'ovr' macro when
    all are), Cohen's kappa plain and quadratic-weighted (for ordinal labels), the
    multiclass Brier score (mean over examples of the squared distance to the one-hot
    label) and ECE of the top label's confidence."""
    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    num_classes = probabilities.shape[-1]
    predicted = probabilities.argmax(axis=-1)
    classes = list(range(num_classes))
    average = {
        f"{kind}_{name}": _quiet(fn, labels, predicted, labels=classes, average=kind,
                                 zero_division=np.nan)
        for kind, name, fn in (("macro", "recall", skm.recall_score),
                               ("macro", "precision", skm.precision_score),
                               ("macro", "f1", skm.f1_score),
                               ("weighted", "f1", skm.f1_score))}
    aucs = per_class_roc_auc(labels, probabilities)
    onehot = np.eye(num_classes)[labels]
    return {
        "balanced_accuracy": _quiet(skm.balanced_accuracy_score, labels, predicted),
        **average,
        "roc_auc": float(np.nanmean(aucs)) if not np.isnan(aucs).all() else math.nan,
        "kappa": _quiet(skm.cohen_kappa_score, labels, predicted, labels=classes),
        "quadratic_kappa": _quiet(skm.cohen_kappa_score, labels, predicted, labels=classes,
                                  weights="quadratic"),
        "brier": float(np.mean(np.sum((probabilities - onehot) ** 2, axis=-1)))
        if len(labels) else math.nan,
        "ece": expected_calibration_error(predicted == labels,
                                          probabilities.max(axis=-1), bins),
    }


def per_class_roc_auc(labels, probabilities) -> np.ndarray:
    """One-vs-rest ROC-AUC of each class (NaN for a class absent, or alone, in `labels`)."""
    labels = np.asarray(labels)
    out = np.full(probabilities.shape[-1], math.nan)
    for c in range(probabilities.shape[-1]):
        positive = labels == c
        if positive.any() and not positive.all():
            out[c] = skm.roc_auc_score(positive, probabilities[:, c])
    return out


def per_class_report(labels, probabilities) -> dict[str, list[float]]:
    """Per class: recall, precision, F1 (NaN where undefined), support, OvR ROC-AUC."""
    labels = np.asarray(labels).astype(np.int64)
    classes = list(range(probabilities.shape[-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            labels, np.asarray(probabilities).argmax(axis=-1), labels=classes,
            zero_division=np.nan)
    return {"recall": recall.tolist(), "precision": precision.tolist(), "f1": f1.tolist(),
            "support": support.tolist(),
            "roc_auc": per_class_roc_auc(labels, probabilities).tolist()}


# The operating point.


def parse_rule(text: str) -> tuple[str, float | None]:
    """('sensitivity'|'specificity', target) or ('youden'|'f1', None); ValueError naming
    the forms otherwise."""
    text = text.strip()
    if text in ("youden", "f1"):
        return text, None
    match = _BOUND.match(text)
    if match:
        try:
            target = float(match.group(2))
        except ValueError:
            target = math.nan
        if 0.0 < target <= 1.0:
            return match.group(1), target
        raise ValueError(f"{text!r}: the target must lie in (0, 1]")
    raise ValueError(f"unknown rule {text!r}; valid: {', '.join(RULES)} (X in (0, 1])")


def check_rule(value) -> str | None:
    """A schema check: '' (off) or a rule `parse_rule` reads."""
    if value == "":
        return None
    try:
        parse_rule(value)
    except ValueError as e:
        return str(e)
    return None


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """The threshold a rule chose on one split's scores. `met`: whether a threshold
    satisfied the rule's bound (always for youden and f1 when both classes are present);
    `value`: the bounded metric there (sensitivity or specificity), or J, or F1; when not
    met, the best value any threshold reached (NaN when none is defined)."""

    rule: str
    threshold: float
    met: bool
    value: float

    def describe(self) -> str:
        if self.met:
            return f"{self.rule}: threshold {self.threshold:.6g} ({self.value:.4f})"
        return (f"{self.rule} cannot be met on this split: the best reachable is "
                f"{self.value:.4f}; threshold {self.threshold:.6g} used")


def candidate_thresholds(scores) -> np.ndarray:
    """Every distinct score (each a cut `scores >= t`) plus one above the largest (nothing
    positive), ascending: every distinct confusion matrix the scores allow."""
    distinct = np.unique(np.asarray(scores, np.float64))
    top = np.nextafter(distinct[-1], np.inf) if len(distinct) else DEFAULT_THRESHOLD
    return np.append(distinct, top)


def choose_threshold(labels, scores, rule: str) -> OperatingPoint:
    """The threshold `rule` picks on (`labels`, `scores`):
    - 'sensitivity>=X': the highest threshold whose sensitivity is >= X (so the largest
      specificity among them); 'specificity>=X': the lowest threshold with specificity
      >= X (the largest sensitivity);
    - 'youden': the largest sensitivity + specificity - 1; 'f1': the largest F1; ties go
      to the highest threshold.
    A bound no threshold meets (the split lacks the class it measures) is reported as not
    met, with the threshold of the best value reached, or 1/2 when none is defined."""
    kind, target = parse_rule(rule)
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    thresholds = candidate_thresholds(scores)
    order = np.sort(scores[labels])
    negatives = np.sort(scores[~labels])
    # Counts at every candidate by binary search: positives called positive, etc.
    tp = len(order) - np.searchsorted(order, thresholds, side="left")
    fp = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
    fn, tn = len(order) - tp, len(negatives) - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = tp / (tp + fn)
        specificity = tn / (tn + fp)
        f1 = 2 * tp / (2 * tp + fp + fn)
    value = {"sensitivity": sensitivity, "specificity": specificity, "f1": f1,
             "youden": sensitivity + specificity - 1}[kind]
    if np.isnan(value).all():
        return OperatingPoint(rule, DEFAULT_THRESHOLD, False, math.nan)
    if kind in ("youden", "f1"):
        best = np.flatnonzero(value == np.nanmax(value))[-1]
        return OperatingPoint(rule, float(thresholds[best]), True, float(value[best]))
    meets = np.flatnonzero(value >= target)
    if not len(meets):
        best = np.flatnonzero(value == np.nanmax(value))
        best = best[-1] if kind == "sensitivity" else best[0]
        return OperatingPoint(rule, float(thresholds[best]), False, float(value[best]))
    best = meets[-1] if kind == "sensitivity" else meets[0]
    return OperatingPoint(rule, float(thresholds[best]), True, float(value[best]))
