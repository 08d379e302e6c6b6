"""Screening for malignancy on scikit-learn's breast cancer set (569 tumours, 212 malignant
/ 357 benign): malignant is the positive class, the decision threshold is the highest one
that keeps sensitivity >= 0.95 on the validation fold, and the test split is reported at
that threshold, over stratified 5-fold cross-validation, next to logistic regression from
scikit-learn on the same folds with its threshold chosen by the same rule.

The splits are breast_cancer_mlp's: a stratified 20% test split (113 tumours, 42 malignant,
the same for every fold) and a stratified 5-fold of the other 456; each fold validates once
(91-92 tumours) and trains on the rest. The model is breast_cancer_mlp's (input BatchNorm,
MLP 32-16, balanced class weights, Adam, 100 epochs); the checkpoint is the one with the
best validation ROC-AUC (evaluated every 10 epochs), and the threshold comes from that
checkpoint's validation scores. The test split chooses nothing.

Command (the five folds, the baseline and the table; one fold: the usual
`python -m experiments.breast_cancer_screening --workdir=DIR --config.data.fold=K`):
    python -m experiments.breast_cancer_screening --study --workdir=runs/screening

RESULTS_PLACEHOLDER
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ml_collections
import numpy as np

from experiments import breast_cancer_mlp

FOLDS = 5
RULE = "sensitivity>=0.95"
# Malignant is label 0 in scikit-learn's set (0 = malignant, 1 = benign).
MALIGNANT = 0
# The baseline: scikit-learn's defaults (L2, C=1) on standardised features, classes
# balanced like the MLP's loss; max_iter high enough that lbfgs converges on every fold.
BASELINE = dict(C=1.0, class_weight="balanced", max_iter=5000)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """breast_cancer_mlp with the screening evaluation; variant 'tiny' trains 6 steps
    (for tests)."""
    if variant not in (None, "tiny"):
        raise ValueError(f"unknown variant {variant!r}; valid: tiny")
    c = breast_cancer_mlp.get_config()
    c.task.positive_class = MALIGNANT
    c.task.operating_point = RULE
    c.checkpoint.monitor = "validation/roc_auc"
    c.checkpoint.mode = "max"
    if variant == "tiny":
        c.train = dict(duration="6 steps", log_every="3 steps", eval_every="3 steps")
    return c


def baseline(splits) -> dict[str, float | bool]:
    """Logistic regression on the fold's train split, its threshold chosen on the
    validation split by RULE, the test split's metrics at that threshold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jaxdl.tasks import clinical_metrics as cm

    def flat(split):
        return np.asarray(split.inputs).reshape(len(split), -1), np.asarray(split.targets)

    x, y = flat(splits["train"])
    model = make_pipeline(StandardScaler(), LogisticRegression(**BASELINE)).fit(x, y)
    column = list(model.classes_).index(MALIGNANT)
    scores = {name: model.predict_proba(flat(splits[name])[0])[:, column]
              for name in ("validation", "test")}
    point = cm.choose_threshold(flat(splits["validation"])[1] == MALIGNANT,
                                scores["validation"], RULE)
    test = cm.binary_metrics(flat(splits["test"])[1] == MALIGNANT, scores["test"],
                             point.threshold)
    return {**test, "met_on_validation": point.met}


def study(workdir: Path, overrides=(), variant: str | None = None, folds=range(FOLDS)
          ) -> dict[str, list[dict]]:
    """Every fold's MLP run (in workdir/foldK, resumed or skipped when already there) and
    baseline: {'mlp': [test metrics at the best checkpoint], 'logistic_regression': [...]},
    also written to workdir/study.json."""
    from jaxdl import app
    from jaxdl.runs import RunDir
    from jaxdl.training import loop

    out = {"mlp": [], "logistic_regression": []}
    for fold in folds:
        config = app.load_config(get_config(variant),
                                 [f"--config.data.fold={fold}", *overrides])
        run = Path(workdir) / f"fold{fold}"
        if RunDir(run).is_complete():
            summary = RunDir(run).read_summary()
        else:
            app.prepare_process(config)
            summary = loop.train_and_evaluate(config, run)
        out["mlp"].append({**summary["best"]["test"],
                           "validation": summary["best"]["validation"]})
        out["logistic_regression"].append(baseline(loop.load_splits(config)[1]))
    Path(workdir, "study.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def table(results: dict[str, list[dict]],
          names=("sensitivity", "specificity", "precision", "npv", "roc_auc", "pr_auc",
                 "threshold")) -> str:
    """Test figures per fold and mean +- std (ddof=0) for each model."""
    lines = []
    for model, folds in results.items():
        lines.append(f"{model} (test split, threshold from validation, {RULE})")
        lines.append("    " + f"{'fold':<13}" + "".join(f"{k:>8}" for k in range(len(folds)))
                     + "   mean +- std")
        for name in names:
            values = np.array([f[name] for f in folds], np.float64)
            lines.append("    " + f"{name:<13}" + "".join(f"{v:8.4f}" for v in values)
                         + f"   {values.mean():.4f} +- {values.std():.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the five folds, the baseline and the table")
    parser.add_argument("--study", action="store_true", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--variant", default=None)
    args, overrides = parser.parse_known_args(argv)
    print(table(study(Path(args.workdir), overrides, args.variant)))


if __name__ == "__main__":
    if "--study" in sys.argv[1:]:
        main(sys.argv[1:])
    else:
        from jaxdl import app

        app.run(get_config)
