"""The classification task's whole-split metrics and operating point: the threshold is
chosen on the validation split alone and applied to the test split; its report and figures;
the config's errors; and (slow) a real run that monitors validation/roc_auc."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import make_config
from test_classification_artifacts import QUIET, assert_png

from jaxdl import data as data_lib
from jaxdl import runs
from jaxdl.schema import ConfigError
from jaxdl.tasks import EvalContext
from jaxdl.tasks import clinical_metrics as cm
from jaxdl.losses import softmax_cross_entropy
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.training import loop


class Linear(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, x, *, train):
        del train
        return nn.Dense(self.classes)(x)


def split(seed, n, classes=2, shift=1.0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n).astype(np.int32)
    inputs = rng.normal(size=(n, 3)).astype(np.float32) + shift * targets[:, None]
    return data_lib.ArraySplit(inputs, targets)


def task_and_context(tmp_path, splits, *, eval_splits=("validation", "test"), classes=2,
                     final=False, **fields):
    model = Linear(classes)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.float32), train=False)
    task = ClassificationTask(model=model, loss_fn=softmax_cross_entropy,
                              eval_batch_size=64, misclassified_shown=0, draw_figures=True,
                              **fields)
    context = EvalContext(step=7, final=final, workdir=tmp_path, write_files=final,
                          splits=splits, eval_splits=eval_splits, rng=jax.random.PRNGKey(0),
                          variables_fn=lambda: variables)
    return task, context


BINARY = dict(split_metrics="binary", positive_class=1, operating_point="sensitivity>=0.9")


def test_the_threshold_never_reads_the_test_split(tmp_path):
    """Other test labels and inputs change the test figures, never the threshold; other
    validation scores do change it; with only the test split evaluated (the best
    checkpoint's test pass) the validation split still chooses it."""
    splits = {"validation": split(0, 120), "test": split(1, 150)}
    task, context = task_and_context(tmp_path, splits, **BINARY)
    first = task.on_eval(context)
    threshold = first["validation"]["threshold"]
    assert first["test"]["threshold"] == threshold
    scores = np.asarray(task.predict(context, splits["validation"]))[:, 1]
    expected = cm.choose_threshold(splits["validation"].targets == 1, scores,
                                   "sensitivity>=0.9")
    assert threshold == expected.threshold and first["validation"]["sensitivity"] >= 0.9

    flipped = data_lib.ArraySplit(split(2, 150).inputs, 1 - splits["test"].targets)
    task, context = task_and_context(tmp_path, {**splits, "test": flipped}, **BINARY)
    second = task.on_eval(context)
    assert second["test"]["threshold"] == second["validation"]["threshold"] == threshold
    assert second["validation"] == first["validation"]
    assert second["test"]["sensitivity"] != first["test"]["sensitivity"]

    task, context = task_and_context(tmp_path, splits, eval_splits=("test",), **BINARY)
    only_test = task.on_eval(context)
    assert set(only_test) == {"test"} and only_test["test"] == first["test"]

    task, context = task_and_context(tmp_path, {**splits, "validation": split(3, 120)},
                                     **BINARY)
    assert task.on_eval(context)["test"]["threshold"] != threshold


def test_final_report_and_figures_binary(tmp_path):
    splits = {"validation": split(0, 120), "test": split(1, 150)}
    task, context = task_and_context(tmp_path, splits, final=True, **BINARY)
    results = task.on_eval(context)
    report = json.loads((tmp_path / runs.CLASSIFICATION_REPORT_JSON).read_text())
    point = report["operating_point"]
    assert point["chosen_on"] == "validation" and point["met"]
    assert point["threshold"] == report["threshold"] == results["test"]["threshold"]
    test = report["splits"]["test"]
    (tn, fp), (fn, tp) = test["confusion_at_threshold"]["counts"]
    assert tp + fn == int(splits["test"].targets.sum()) and tn + fp + tp + fn == 150
    assert test["metrics"]["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert test["metrics"] == pytest.approx(results["test"])
    for name in (runs.ROC_PNG, runs.PR_PNG, runs.RELIABILITY_PNG, runs.OPERATING_POINT_PNG,
                 runs.CONFUSION_PNG):
        assert_png(tmp_path / name)


def test_multiclass_metrics_report_without_an_operating_point(tmp_path):
    splits = {"validation": split(0, 90, classes=3), "test": split(1, 90, classes=3)}
    task, context = task_and_context(tmp_path, splits, classes=3, final=True,
                                     split_metrics="multiclass")
    results = task.on_eval(context)
    assert set(results["test"]) == set(cm.MULTICLASS_METRICS)
    report = json.loads((tmp_path / runs.CLASSIFICATION_REPORT_JSON).read_text())
    assert report["operating_point"] is None and len(report["splits"]["test"]["per_class"]
                                                     ["recall"]) == 3
    assert_png(tmp_path / runs.RELIABILITY_PNG)
    assert not (tmp_path / runs.ROC_PNG).exists()


def test_an_unmet_rule_is_reported_not_raised(tmp_path):
    """A validation split without positives meets no sensitivity bound: the run goes on at
    threshold 1/2 and the report says why."""
    validation = split(0, 50)
    validation = data_lib.ArraySplit(validation.inputs, np.zeros(50, np.int32))
    task, context = task_and_context(tmp_path, {"validation": validation, "test": split(1, 60)},
                                     final=True, **{**BINARY,
                                                    "operating_point": "sensitivity>=0.999"})
    results = task.on_eval(context)
    assert results["test"]["threshold"] == cm.DEFAULT_THRESHOLD
    point = json.loads((tmp_path / runs.CLASSIFICATION_REPORT_JSON).read_text())[
        "operating_point"]
    assert not point["met"] and "cannot be met" in point["description"]


def test_metric_names_follow_the_task_config():
    binary = make_config("breast_cancer_mlp", **{"task.positive_class": 0,
                                                 "checkpoint.monitor": "validation/roc_auc"})
    assert binary.task.positive_class == 0
    with pytest.raises(ConfigError, match="reports no metric 'sensitivity' without "
                                          "task.positive_class or task.operating_point"):
        make_config("digits_mlp", **{"checkpoint.monitor": "validation/sensitivity"})
    with pytest.raises(ConfigError, match="'macro_f1' without task.split_metrics=True and no "
                                          "task.positive_class"):
        make_config("breast_cancer_mlp", **{"task.positive_class": 0,
                                            "checkpoint.monitor": "validation/macro_f1"})
    config = make_config("digits_mlp", **{"task.split_metrics": True,
                                          "checkpoint.monitor": "validation/quadratic_kappa"})
    assert config.checkpoint.monitor == "validation/quadratic_kappa"


@pytest.mark.parametrize("overrides,message", [
    ({"task.operating_point": "youden"}, "10 classes: name it in config.task.positive_class"),
    ({"task.positive_class": 10}, r"positive_class=10: the dataset has 10 classes \(0..9\)"),
])
def test_config_errors_name_the_key(overrides, message):
    config = make_config("digits_mlp", **overrides)
    with pytest.raises(ConfigError, match=message):
        loop.build(config)


def test_a_bad_rule_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match=r"config.task.operating_point.*unknown rule "
                                          r"'sens>=0.9'"):
        make_config("breast_cancer_mlp", **{"task.operating_point": "sens>=0.9"})
    with pytest.raises(ConfigError, match=r"'specificity>=1.2': the target must lie in"):
        make_config("breast_cancer_mlp", **{"task.operating_point": "specificity>=1.2"})


@pytest.mark.slow
def test_a_run_chooses_on_validation_and_monitors_roc_auc(tmp_path):
    """breast cancer, malignant (class 0) positive, sensitivity >= 0.95 on validation,
    the best checkpoint by validation/roc_auc; the summary's test figures are at the
    validation's threshold of the same step."""
    config = make_config("breast_cancer_mlp", **QUIET, **{
        "train.duration": "6 steps", "train.eval_every": "3 steps", "checkpoint.every":
        "3 steps", "task.positive_class": 0, "task.operating_point": "sensitivity>=0.95",
        "checkpoint.monitor": "validation/roc_auc", "checkpoint.mode": "max"})
    summary = loop.train_and_evaluate(config, tmp_path)
    final, best = summary["final"], summary["best"]
    assert final["test"]["threshold"] == final["validation"]["threshold"]
    assert final["validation"]["sensitivity"] >= 0.95
    assert best["test"]["step"] == best["validation"]["step"]
    assert best["test"]["threshold"] == best["validation"]["threshold"]
    records = [json.loads(line) for line in (tmp_path / runs.METRICS_FILENAME).open()]
    aucs = {r["step"]: r["roc_auc"] for r in records if r.get("split") == "validation"}
    assert best["validation"]["roc_auc"] == max(aucs.values())
    report = json.loads((tmp_path / runs.CLASSIFICATION_REPORT_JSON).read_text())
    assert report["threshold"] == final["test"]["threshold"]
    for name in (runs.ROC_PNG, runs.PR_PNG, runs.RELIABILITY_PNG, runs.OPERATING_POINT_PNG):
        assert_png(tmp_path / name)
