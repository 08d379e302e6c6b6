"""Long-tailed MNIST: four ways to train on a step-imbalanced training set (Buda et al.
2018), judged on the published, balanced test split by balanced accuracy, the recall of
the minority classes and one-vs-rest ROC-AUC.

The training pool is MNIST's 60,000 training images with digits 5-9 cut to 1 in 100 by a
seeded draw (about 59 images each against about 5,900 of digits 0-4: 1:100); validation is
a stratified 10% of that pool, as imbalanced as training (what a practitioner would have);
the test split is MNIST's 10,000 test images, untouched. The model is an MLP 784-256-128
(ReLU, Adam 1e-3, batch 128, 1,000 steps, ~4.7 epochs of the plain pool) and the four
runs differ only in how the imbalance is treated:

    plain        softmax cross-entropy
    weighted     task.class_weighting='balanced': each example's loss times
                 n / (10 x count of its class), so each class weighs the same in total
    balanced     data.sampling='balanced': every class oversampled to the largest's count
    focal        task.loss='softmax_focal', focal_gamma 2 (Lin et al. 2017)

Each is run with 3 seeds (seed k draws the subsample, the validation split, the
initialisation and the batch order); the figures are those of the final weights (no
checkpoint is chosen, so the validation split chooses nothing here either).

Command (12 runs, then the table):
    python -m experiments.imbalanced_mnist --study --workdir=runs/imbalanced_mnist
One run: `python -m experiments.imbalanced_mnist --workdir=DIR --variant=focal`.

RESULTS_PLACEHOLDER
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path

import ml_collections
import numpy as np

from jaxdl import data as data_lib
from jaxdl.data import mnist

SOURCE = "mnist_step_imbalance"
METHODS = ("plain", "weighted", "balanced", "focal")
SEEDS = (0, 1, 2)
MINORITY = (5, 6, 7, 8, 9)


def step_imbalance(*, minority_classes, ratio: int, seed: int, data_dir=None
                   ) -> data_lib.Dataset:
    """MNIST with the training pool's `minority_classes` cut to 1 in `ratio` (rounded,
    drawn without replacement by `seed`); the published test split unchanged."""
    return subsample(mnist.load(mnist.MNIST, None, data_dir), minority_classes, ratio, seed)


def subsample(full: data_lib.Dataset, minority_classes, ratio: int, seed: int
              ) -> data_lib.Dataset:
    """`full` with its pool's `minority_classes` cut to 1 in `ratio` (see step_imbalance)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(full.num_classes):
        rows = np.flatnonzero(full.targets == c)
        if c in tuple(minority_classes):
            rows = np.sort(rng.choice(rows, size=round(len(rows) / ratio), replace=False))
        keep.append(rows)
    keep = np.sort(np.concatenate(keep))
    return dataclasses.replace(
        full, name=SOURCE, features=full.features[keep], targets=full.targets[keep],
        description=f"MNIST, training digits {tuple(minority_classes)} cut to 1/{ratio} "
                    f"(seed {seed}); published test split")


if SOURCE not in data_lib.source_names():  # imported twice: as __main__ and by name
    data_lib.register_source(SOURCE, locate=functools.partial(mnist.locate, mnist.MNIST))(
        step_imbalance)


def get_config(variant: str = "plain") -> ml_collections.ConfigDict:
    """The plain run; variants `METHODS` change how the imbalance is treated, and
    'tiny-METHOD' trains a 32-unit MLP 20 steps at 1:20 (for tests)."""
    tiny = variant.startswith("tiny-")
    method = variant.removeprefix("tiny-")
    if method not in METHODS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(METHODS)} "
                         "(or tiny-<method>)")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="mlp", widths=(256, 128), activation="relu", dropout_rate=0.0,
                   num_classes=10)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.0,
                  class_weighting="none", split_metrics=True)
    c.data = dict(name=SOURCE, split_seed=0, validation_fraction=0.1, test_fraction=0.0,
                  batch_size=128, eval_batch_size=1000, augmentation="none",
                  sampling="shuffle",
                  options=dict(minority_classes=MINORITY, ratio=100, seed=0))
    c.train = dict(duration="1000 steps", log_every="200 steps", eval_every="500 steps")
    # No checkpoint is chosen: the final weights are reported.
    c.checkpoint = dict(every="1000 steps", keep_last=1, keep_best=0,
                        monitor="validation/balanced_accuracy", mode="max")
    c.optimizer = dict(name="adam", learning_rate=1e-3)
    c.schedule = dict(name="constant")
    c.precision = "fp32"
    c.parallel = dict(backend="sharded")
    if method == "weighted":
        c.task.class_weighting = "balanced"
    elif method == "balanced":
        c.data.sampling = "balanced"
    elif method == "focal":
        c.task.loss = "softmax_focal"
        c.task.focal_gamma = 2.0
    if tiny:
        c.model.widths = (32,)
        c.data.options.ratio = 20
        c.train = dict(duration="20 steps", log_every="10 steps", eval_every="10 steps")
        c.checkpoint.every = "20 steps"
    return c


def seeded(seed: int) -> list[str]:
    """The overrides of seed `seed`: subsample, validation split, initialisation, order."""
    return [f"--config.seed={seed}", f"--config.data.split_seed={seed}",
            f"--config.data.options.seed={seed}"]


def figures(run: Path, minority=MINORITY) -> dict[str, float]:
    """The final test figures of a finished run: balanced accuracy, macro OvR ROC-AUC,
    accuracy and the mean recall of the minority classes (each class's recall too)."""
    from jaxdl.runs import CLASSIFICATION_REPORT_JSON, RunDir

    test = RunDir(run).read_summary()["final"]["test"]
    report = json.loads((run / CLASSIFICATION_REPORT_JSON).read_text())
    recall = report["splits"]["test"]["per_class"]["recall"]
    return {"balanced_accuracy": test["balanced_accuracy"], "roc_auc": test["roc_auc"],
            "accuracy": test["accuracy"],
            "minority_recall": float(np.mean([recall[c] for c in minority])),
            "recall": recall}


def study(workdir: Path, overrides=(), methods=METHODS, seeds=SEEDS, tiny: bool = False
          ) -> dict[str, list[dict]]:
    """Every (method, seed) run in workdir/METHOD/seedK (a finished one is read, not run
    again); {method: [figures of each seed]}, also written to workdir/study.json."""
    from jaxdl import app
    from jaxdl.runs import RunDir
    from jaxdl.training import loop

    out = {}
    for method in methods:
        out[method] = []
        for seed in seeds:
            config = app.load_config(get_config(("tiny-" if tiny else "") + method),
                                     [*seeded(seed), *overrides])
            run = Path(workdir) / method / f"seed{seed}"
            if not RunDir(run).is_complete():
                app.prepare_process(config)
                loop.train_and_evaluate(config, run)
            out[method].append(figures(run))
    Path(workdir, "study.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def table(results: dict[str, list[dict]]) -> str:
    names = ("balanced_accuracy", "minority_recall", "roc_auc", "accuracy")
    lines = [f"{'method':<10}" + "".join(f"{n:>22}" for n in names)]
    for method, runs in results.items():
        cells = []
        for name in names:
            values = np.array([r[name] for r in runs], np.float64)
            cells.append(f"{values.mean():.4f} +- {values.std():.4f}".rjust(22))
        lines.append(f"{method:<10}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the four methods x 3 seeds, then the table")
    parser.add_argument("--study", action="store_true", required=True)
    parser.add_argument("--workdir", required=True)
    args, overrides = parser.parse_known_args(argv)
    print(table(study(Path(args.workdir), overrides)))


if __name__ == "__main__":
    if "--study" in sys.argv[1:]:
        main(sys.argv[1:])
    else:
        from jaxdl import app

        app.run(get_config)
