"""Classification: softmax cross-entropy (or another loss) and accuracy; on request the
whole split's metrics at every evaluation (clinical_metrics: sensitivity, specificity,
ROC-AUC... at an operating point chosen on validation); after the final evaluation, a
confusion matrix, the misclassified examples and those metrics' report and figures."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sklearn import metrics as skm

from jaxdl import data as data_lib
from jaxdl import losses, plots, runs
from jaxdl.schema import ConfigError, Field, fraction, non_negative, positive
from jaxdl.tasks import adversarial
from jaxdl.tasks import clinical_metrics as cm
from jaxdl.tasks.base import (EvalContext, Task, build_model_from_config, example_rows,
                              register_task)

CONFUSION_JSON, CONFUSION_PNG = runs.CONFUSION_JSON, runs.CONFUSION_PNG
MISCLASSIFIED_PNG = runs.MISCLASSIFIED_PNG
VALIDATION = "validation"  # the split an operating point is chosen on, and only it
BINARY, MULTICLASS = "binary", "multiclass"
# Stream id folded into the step's key for mixup's draws, so dropout (the key itself) and
# augmentation (stream 1, training/step.py) draw what they draw without mixup.
MIXUP_STREAM = 2
ADVERSARIAL_STREAM = 3  # adversarial training's random starts
CLASS_WEIGHTINGS = ("none", "balanced")


def balanced_class_weights(counts) -> np.ndarray:
    """n / (num_classes * count_c) per class: each class weighs as much in total, and the
    mean weight over the examples counted stays 1 (scikit-learn's 'balanced')."""
    counts = np.asarray(counts, np.float64)
    return counts.sum() / (len(counts) * counts)


def global_batch(x: jax.Array, axis_name: str | None) -> jax.Array:
    """The whole global batch of `x`: under pmap gathered from every device in row order;
    otherwise (one device, or the sharded backend's global arrays) `x` itself."""
    return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)


def mixup(rng: jax.Array, inputs: jax.Array, alpha: float, *, rows: jax.Array | None = None,
          axis_name: str | None = None):
    """(mixed inputs, partner of each example, lam): every example blended with the one a
    shuffled copy of the global batch puts beside it, lam ~ Beta(alpha, alpha) for the
    batch. `partner` indexes `global_batch(...)`; under pmap (`axis_name`, with `rows`: the
    examples' rows in the global batch) partners come from every device, so the result
    does not depend on how the batch is split."""
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise ValueError(f"mixup blends inputs, so they must be floats, got {inputs.dtype} "
                         "(set task.mixup_alpha=0.0)")
    lam_key, partner_key = jax.random.split(rng)
    lam = jax.random.beta(lam_key, alpha, alpha)
    everything = global_batch(inputs, axis_name)
    partner = jax.random.permutation(partner_key, everything.shape[0])
    if rows is not None:
        partner = partner[rows]
    mixed = lam * inputs + (1.0 - lam) * everything[partner]
    return mixed.astype(inputs.dtype), partner, lam


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Task):
    model: nn.Module
    loss_fn: Callable
    eval_batch_size: int  # of the host-side predictions behind the final report
    misclassified_shown: int
    draw_figures: bool  # config.logging.plot: the PNGs (the JSON is always written)
    class_weights: tuple[float, ...] | None = None  # scales each example's loss by its class
    # tau * log(train prior) per class, added to the logits inside the loss only (Menon et
    # al. 2021's logit-adjusted loss); predictions and accuracy take the raw logits.
    logit_offsets: tuple[float, ...] | None = None
    mixup_alpha: float = 0.0  # > 0: training batches are mixed (`mixup`); 0 = off
    axis_name: str | None = None  # pmap's data axis: mixup partners come from every device
    # > 0: training batches are replaced by L-inf PGD examples within this epsilon of them
    # (Madry et al. 2018), `adversarial_steps` steps of `adversarial_step_size` * epsilon,
    # clipped to `adversarial_range`; 0 = off.
    adversarial_epsilon: float = 0.0
    adversarial_steps: int = 0
    adversarial_step_size: float = 0.0
    adversarial_range: tuple[float, float] = (0.0, 1.0)
    monitor: str = "accuracy"
    monitor_mode: str = "max"
    # Whole-split metrics at every evaluation: BINARY (positive_class against the rest),
    # MULTICLASS, or None (off); see `split_metrics_kind`.
    split_metrics: str | None = None
    positive_class: int | None = None
    operating_point: str = ""  # a clinical_metrics rule, chosen on validation; '' = off
    calibration_bins: int = 10

    @classmethod
    def metric_names(cls, task_config):
        kind = split_metrics_kind(task_config)
        extra = {BINARY: cm.BINARY_METRICS, MULTICLASS: cm.MULTICLASS_METRICS, None: ()}[kind]
        return ("loss", "accuracy", *(name for name in extra if name != "accuracy"))

    @classmethod
    def unavailable_metrics(cls, task_config):
        reported = set(cls.metric_names(task_config))
        binary, multiclass = set(cm.BINARY_METRICS), set(cm.MULTICLASS_METRICS)
        needs = {**{n: "task.split_metrics=True and no task.positive_class"
                    for n in multiclass - binary},
                 **{n: "task.positive_class or task.operating_point" for n in binary - multiclass},
                 **{n: "task.split_metrics=True or task.positive_class"
                    for n in binary & multiclass}}
        return {n: why for n, why in needs.items() if n not in reported}

    def apply(self, variables, batch, *, train, rng):
        """Per-example loss (class-weighted when `class_weights`) and accuracy. In training
        with `mixup_alpha` > 0 the inputs are mixed and the loss is lam * loss(own label) +
        (1 - lam) * loss(partner's label), which for cross-entropy is the cross-entropy
        against the mixed one-hot targets; accuracy counts each example's own label."""
        inputs, labels, rows = batch["inputs"], batch["targets"], example_rows(batch)
        if train and self.adversarial_epsilon > 0:
            inputs = self.adversarial_inputs(variables, inputs, labels, rng, rows)
        mixing = train and self.mixup_alpha > 0
        if mixing:
            if self.axis_name is not None and rows is None:
                raise ValueError("mixup under pmap needs the batch's rows (the train step "
                                 "adds them)")
            inputs, partner, lam = mixup(jax.random.fold_in(rng, MIXUP_STREAM), inputs,
                                         self.mixup_alpha, rows=rows, axis_name=self.axis_name)
        logits, new_state = self.run_model(variables, inputs, train=train, rng=rng, rows=rows)
        loss = self.example_loss(logits, labels)
        if mixing:
            partner_labels = global_batch(labels, self.axis_name)[partner]
            loss = lam * loss + (1.0 - lam) * self.example_loss(logits, partner_labels)
        values = {
            "loss": loss,
            "accuracy": (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32),
        }
        return values, new_state

    def adversarial_inputs(self, variables, inputs, labels, rng, rows):
        """PGD examples of `inputs` against the current weights, from a random start, with
        the model in eval mode (BatchNorm statistics are not moved by the attack); constants
        to the weight gradient, as in Madry et al.'s outer minimisation."""
        def logits_fn(x):
            return self.run_model(variables, x, train=False, rng=rng, rows=rows)[0]

        eps = self.adversarial_epsilon
        found = adversarial.pgd(logits_fn, inputs, labels, eps=eps,
                                step_size=self.adversarial_step_size * eps,
                                steps=self.adversarial_steps, norm="linf",
                                pixel_range=self.adversarial_range,
                                rng=jax.random.fold_in(rng, ADVERSARIAL_STREAM), rows=rows)
        return lax.stop_gradient(found).astype(inputs.dtype)

    def example_loss(self, logits, labels):
        if self.logit_offsets is not None:
            logits = logits + jnp.asarray(self.logit_offsets, logits.dtype)
        loss = self.loss_fn(logits, labels)
        if self.class_weights is not None:
            loss = loss * jnp.asarray(self.class_weights, jnp.float32)[labels]
        return loss

    def on_eval(self, context: EvalContext) -> dict[str, dict[str, float]]:
        """With `split_metrics`, each evaluated split's whole-split metrics (an operating
        point's threshold chosen on the validation split's scores alone). After the final
        evaluation, writes the confusion matrix of the test split (the last eval split when
        there is none) as JSON and (with `draw_figures`) PNG, for image inputs a grid of
        its most confidently misclassified examples, and the split metrics' report and
        figures."""
        results = {}
        if self.split_metrics is not None:
            scored = self.score_splits(context)
            results = {name: scored.metrics[name] for name in context.eval_splits}
        if context.final and context.write_files:
            split = "test" if "test" in context.eval_splits else context.eval_splits[-1]
            self.write_report(context, split)
            if self.split_metrics is not None:
                write_split_report(self, context, scored, split)
        return results

    def predict(self, context: EvalContext, split: data_lib.ArraySplit,
                forward: Callable | None = None) -> np.ndarray:
        """Class probabilities [N, C] of every example of `split`, computed as the eval step
        sees its inputs (`context.eval_inputs`), on this process's first local device.
        `forward`: a compiled `self.forward(context)` to reuse."""
        device = jax.local_devices()[0]
        variables = jax.device_put(context.variables, device)
        forward = forward or self.forward(context)
        outputs = [forward(variables, jax.device_put(batch["inputs"], device))
                   for batch in data_lib.eval_batches(split, self.eval_batch_size)]
        return np.concatenate([np.asarray(p) for p in outputs])[:len(split)]

    def forward(self, context: EvalContext) -> Callable:
        return jax.jit(lambda v, x: jax.nn.softmax(
            self.model.apply(v, context.eval_inputs(x), train=False).astype(jnp.float32)))

    def score_splits(self, context: EvalContext) -> ScoredSplits:
        """Probabilities and metrics of every evaluated split. An operating point's
        threshold comes from the validation split's scores only (predicted here even when
        only the test split is evaluated, as at the best checkpoint) and is then applied
        unchanged to every split."""
        forward = self.forward(context)
        names = list(context.eval_splits)
        if self.operating_point and VALIDATION not in names:
            if VALIDATION not in context.splits:  # checkpoint.monitor already needs one
                raise ValueError(f"task.operating_point={self.operating_point!r} is chosen "
                                 "on the validation split, and this run has none")
            names.append(VALIDATION)
        probabilities = {n: self.predict(context, context.splits[n], forward) for n in names}
        labels = {n: np.asarray(context.splits[n].targets).astype(np.int64) for n in names}
        point, threshold = None, cm.DEFAULT_THRESHOLD
        if self.operating_point:
            point = cm.choose_threshold(labels[VALIDATION] == self.positive_class,
                                        probabilities[VALIDATION][:, self.positive_class],
                                        self.operating_point)
            threshold = point.threshold
        metrics = {}
        for n in names:
            if self.split_metrics == BINARY:
                metrics[n] = cm.binary_metrics(labels[n] == self.positive_class,
                                               probabilities[n][:, self.positive_class],
                                               threshold, bins=self.calibration_bins)
            else:
                metrics[n] = cm.multiclass_metrics(labels[n], probabilities[n],
                                                   bins=self.calibration_bins)
        return ScoredSplits(probabilities, labels, metrics, point, threshold)

    def write_report(self, context: EvalContext, split_name: str) -> None:
        split = context.splits[split_name]
        probabilities = self.predict(context, split)
        predicted = probabilities.argmax(axis=-1)
        labels = np.asarray(split.targets).astype(np.int64)
        num_classes = probabilities.shape[-1]
        counts = np.zeros((num_classes, num_classes), np.int64)
        np.add.at(counts, (labels, predicted), 1)
        accuracy = float(np.trace(counts) / counts.sum())
        (context.workdir / CONFUSION_JSON).write_text(json.dumps(
            {"split": split_name, "step": context.step, "examples": int(counts.sum()),
             "accuracy": accuracy, "rows": "true class", "columns": "predicted class",
             "counts": counts.tolist()}) + "\n")
        if not self.draw_figures:
            return
        totals = counts.sum(axis=1, keepdims=True)
        plots.matrix_png(counts, context.workdir / CONFUSION_PNG,
                         shading=counts / np.maximum(totals, 1),
                         title=f"{split_name} at step {context.step}: accuracy {accuracy:.4f} "
                               f"({np.trace(counts)}/{counts.sum()}); colour: row share",
                         xlabel="predicted class", ylabel="true class")
        if not self.misclassified_shown:
            return
        wrong = np.flatnonzero(predicted != labels)
        confidence = probabilities[wrong, predicted[wrong]]
        shown = wrong[np.argsort(-confidence, kind="stable")][:self.misclassified_shown]
        inputs = split.take(shown)["inputs"]  # only the rows shown: a split may be on disk
        if inputs.ndim == 4 and inputs.shape[-1] in (1, 3):
            plots.image_grid_png(
                inputs,
                [f"{labels[i]} -> {predicted[i]} ({probabilities[i, predicted[i]]:.2f})"
                 for i in shown],
                context.workdir / MISCLASSIFIED_PNG,
                title=f"{split_name}: the {len(shown)} most confident of {len(wrong)} "
                      "misclassified, true -> predicted (p)")


@dataclasses.dataclass(frozen=True)
class ScoredSplits:
    """What `ClassificationTask.score_splits` computed: per split the probabilities
    [N, C], the labels and the metrics; the operating point (None without a rule) and the
    threshold every binary metric was taken at."""

    probabilities: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    point: cm.OperatingPoint | None
    threshold: float


def split_metrics_kind(task_config) -> str | None:
    """BINARY when a positive class or an operating point is named, MULTICLASS with
    `split_metrics` alone, else None: what `metric_names` can tell from the config."""
    if task_config.get("positive_class", -1) >= 0 or task_config.get("operating_point", ""):
        return BINARY
    return MULTICLASS if task_config.get("split_metrics", False) else None


def write_split_report(task: ClassificationTask, context: EvalContext, scored: ScoredSplits,
                       split: str) -> None:
    """classification_report.json (every split's metrics, per-class figures, the operating
    point and the confusion counts at its threshold) and, with `draw_figures`, the ROC and
    precision-recall curves with the operating point marked, the reliability diagram and
    the confusion matrix of `split` at the operating point."""
    binary = task.split_metrics == BINARY
    report = {"step": context.step, "kind": task.split_metrics,
              "positive_class": task.positive_class, "threshold": scored.threshold,
              "operating_point": None if scored.point is None else {
                  **dataclasses.asdict(scored.point), "chosen_on": VALIDATION,
                  "description": scored.point.describe()},
              "calibration_bins": task.calibration_bins, "splits": {}}
    for name, probabilities in scored.probabilities.items():
        entry = {"examples": len(probabilities), "metrics": scored.metrics[name],
                 "per_class": cm.per_class_report(scored.labels[name], probabilities)}
        if binary:
            tn, fp, fn, tp = cm.binary_counts(scored.labels[name] == task.positive_class,
                                              probabilities[:, task.positive_class],
                                              scored.threshold)
            entry["confusion_at_threshold"] = {"rows": "true (negative, positive)",
                                               "columns": "predicted", "counts": [[tn, fp],
                                                                                  [fn, tp]]}
        report["splits"][name] = entry
    (context.workdir / runs.CLASSIFICATION_REPORT_JSON).write_text(
        json.dumps(runs.finite_or_null(report), allow_nan=False, indent=1) + "\n")
    if task.draw_figures:
        draw_split_figures(task, context, scored, split)


def draw_split_figures(task, context, scored: ScoredSplits, split: str) -> None:
    workdir, step = context.workdir, context.step
    names = list(scored.probabilities)
    if task.split_metrics == BINARY:
        where = (f"threshold {scored.threshold:.3g}" if scored.point is None else
                 f"threshold {scored.threshold:.3g} ({scored.point.rule} on validation)")
        roc, pr = [], []
        for name in names:
            y = scored.labels[name] == task.positive_class
            p = scored.probabilities[name][:, task.positive_class]
            m = scored.metrics[name]
            if not (y.any() and (~y).any()):
                continue  # one class only: no curve is defined
            fpr, tpr, _ = skm.roc_curve(y, p)
            precision, recall, _ = skm.precision_recall_curve(y, p)
            roc.append(plots.Curve(fpr, tpr, f"{name}: ROC-AUC {m['roc_auc']:.4f}",
                                   mark=(1 - m["specificity"], m["sensitivity"]),
                                   mark_label=f"{name} at threshold {scored.threshold:.3g}: "
                                              f"sensitivity {m['sensitivity']:.3f}, "
                                              f"specificity {m['specificity']:.3f}"))
            pr.append(plots.Curve(recall, precision, f"{name}: average precision "
                                  f"{m['pr_auc']:.4f} (prevalence {y.mean():.3f})",
                                  mark=(m["sensitivity"], m["precision"]),
                                  mark_label=f"{name} at threshold {scored.threshold:.3g}: "
                                             f"recall {m['sensitivity']:.3f}, precision "
                                             f"{m['precision']:.3f}"))
        positive = f"class {task.positive_class} positive\nx: {where}"
        plots.curves_png(roc, workdir / runs.ROC_PNG, diagonal=True, legend_loc="lower right",
                         title=f"ROC at step {step}, {positive}",
                         xlabel="1 - specificity (false positive rate)",
                         ylabel="sensitivity (true positive rate)")
        plots.curves_png(pr, workdir / runs.PR_PNG, legend_loc="lower left",
                         title=f"precision-recall at step {step}, {positive}",
                         xlabel="recall (sensitivity)", ylabel="precision (PPV)")
        tn, fp, fn, tp = cm.binary_counts(scored.labels[split] == task.positive_class,
                                          scored.probabilities[split][:, task.positive_class],
                                          scored.threshold)
        counts = np.array([[tn, fp], [fn, tp]])
        m = scored.metrics[split]
        plots.matrix_png(counts, workdir / runs.OPERATING_POINT_PNG,
                         shading=counts / np.maximum(counts.sum(axis=1, keepdims=True), 1),
                         tick_labels=("negative", "positive"),
                         title=f"{split} at step {step}, class {task.positive_class} positive"
                               f"\n{where}\nsensitivity "
                               f"{m['sensitivity']:.3f}, specificity {m['specificity']:.3f}\n"
                               f"PPV {m['precision']:.3f}, NPV {m['npv']:.3f}; colour: row share",
                         xlabel="predicted", ylabel="true")
    curves = []
    for name in names:
        probabilities, labels = scored.probabilities[name], scored.labels[name]
        if task.split_metrics == BINARY:
            outcome, confidence = labels == task.positive_class, probabilities[:,
                                                                               task.positive_class]
        else:
            outcome, confidence = labels == probabilities.argmax(-1), probabilities.max(-1)
        counts, mean_p, frequency = cm.reliability(outcome, confidence, task.calibration_bins)
        used = counts > 0
        curves.append(plots.Curve(mean_p[used], frequency[used], markers=True,
                                  label=f"{name}: ECE {scored.metrics[name]['ece']:.4f}, "
                                        f"Brier {scored.metrics[name]['brier']:.4f}"))
    what = (f"P(class {task.positive_class})" if task.split_metrics == BINARY
            else "confidence of the predicted class")
    plots.curves_png(curves, workdir / runs.RELIABILITY_PNG, diagonal=True,
                     legend_loc="upper left",
                     title=f"reliability at step {step}, {task.calibration_bins} equal bins",
                     xlabel=f"mean predicted {what}", ylabel="observed frequency")


def _loss_names():
    return sorted(losses.LOSSES)


@register_task("classification", task=ClassificationTask, fields={
    "loss": Field(str, choices=_loss_names, help="per-example loss of logits and labels"),
    "label_smoothing": Field(float, check=fraction, help="share of each one-hot target "
                                                         "spread over all classes; 0 = off"),
    # A reporting knob, not a hyperparameter: it changes no number the run computes.
    "misclassified_shown": Field(int, default=16, check=non_negative,
                                 help="misclassified test images drawn in misclassified.png "
                                      "after the final evaluation; 0 = none"),
    # Both are off unless asked for, and "off" is no hyperparameter choice.
    "class_weighting": Field(str, default="none", choices=lambda: CLASS_WEIGHTINGS,
                             help="'balanced': each example's loss (train and eval) times "
                                  "n / (num_classes * count of its class) in the train split; "
                                  "accuracy stays unweighted"),
    "mixup_alpha": Field(float, default=0.0, check=non_negative,
                         help="> 0: mix each training batch with a shuffled copy of itself, "
                              "lam ~ Beta(alpha, alpha); 0 = off"),
    "logit_adjustment": Field(float, default=0.0, check=non_negative,
                              help="tau > 0: the loss sees logits + tau * log(class prior of "
                                   "the train split) (Menon et al. 2021, long-tailed labels; "
                                   "tau = 1 in the paper); predictions use the raw logits; "
                                   "0 = off"),
    # 0 = plain cross-entropy, the loss's own "off".
    "focal_gamma": Field(float, default=0.0, check=non_negative,
                         help="loss 'softmax_focal' only: the focusing exponent gamma of "
                              "-(1 - p_true)^gamma log p_true (Lin et al. 2017 use 2); "
                              "0 = cross-entropy"),
    # Reporting: none of these changes a number the model learns.
    "split_metrics": Field(bool, default=False,
                           help="every evaluation also reports metrics of the whole split's "
                                "probabilities: macro/weighted recall, precision, F1, OvR "
                                "ROC-AUC, kappa, Brier, ECE (binary ones with "
                                "task.positive_class)"),
    "positive_class": Field(int, default=-1, check=lambda v: None if v >= -1 else
                            "must be a class index, or -1 for none",
                            help="the class scored against the rest by the binary metrics "
                                 "(sensitivity, specificity, ROC-AUC...); naming one turns "
                                 "them on; -1 = none (class 1 of a two-class task when "
                                 "task.operating_point is set)"),
    "operating_point": Field(str, default="", check=cm.check_rule,
                             help="the decision threshold's rule, applied to the validation "
                                  "split's scores at each evaluation and used on every split: "
                                  "'sensitivity>=X', 'specificity>=X', 'youden', 'f1'; "
                                  "'' = P(positive) >= 0.5"),
    "calibration_bins": Field(int, default=10, check=positive,
                              help="equal-width probability bins of the expected calibration "
                                   "error and the reliability diagram"),
    "adversarial_epsilon": Field(float, default=0.0, check=non_negative,
                                 help="> 0: adversarial training (Madry et al. 2018): each "
                                      "training batch replaced by L-inf PGD examples within "
                                      "this epsilon (input units, after data.augmentation); "
                                      "0 = off"),
    # 0 = not set: adversarial_epsilon > 0 needs both (no default attack strength).
    "adversarial_steps": Field(int, default=0, check=non_negative,
                               help="PGD steps per training batch; must be set (> 0) when "
                                    "adversarial_epsilon > 0"),
    "adversarial_step_size": Field(float, default=0.0, check=non_negative,
                                   help="each PGD step as a fraction of adversarial_epsilon "
                                        "(Madry et al.: 2.5 / steps); must be set (> 0) when "
                                        "adversarial_epsilon > 0"),
    "adversarial_range": Field(tuple, items=float, default=(0.0, 1.0),
                               help="(LOW, HIGH): the valid input range PGD examples are "
                                    "clipped to"),
}, needs_train_split=True)
def build_classification(config, dataset, *, axis_name, train_split=None):
    if dataset.num_classes is None:
        raise ConfigError(f"config.task.name='classification' needs class labels, but dataset "
                          f"{dataset.name!r} is a regression set")
    if config.model.get("num_classes") not in (None, dataset.num_classes):
        raise ConfigError(f"config.model.num_classes={config.model.num_classes} but dataset "
                          f"{dataset.name!r} has {dataset.num_classes} classes")
    loss_fn = losses.get_loss(config.task.loss)
    if config.task.loss == "softmax_cross_entropy":
        loss_fn = functools.partial(loss_fn, label_smoothing=config.task.label_smoothing)
    elif config.task.label_smoothing:
        raise ConfigError(f"config.task.label_smoothing applies to softmax_cross_entropy, "
                          f"not to {config.task.loss!r}")
    if config.task.loss == "softmax_focal":
        loss_fn = functools.partial(loss_fn, gamma=config.task.focal_gamma)
    elif config.task.focal_gamma:
        raise ConfigError(f"config.task.focal_gamma applies to softmax_focal, not to "
                          f"{config.task.loss!r}")
    kind = split_metrics_kind(config.task)
    positive_class = _positive_class(config.task, dataset.num_classes)
    if config.task.adversarial_epsilon > 0 and not (config.task.adversarial_steps > 0 and
                                                    config.task.adversarial_step_size > 0):
        raise ConfigError("config.task.adversarial_epsilon > 0 trains on PGD examples: set "
                          "config.task.adversarial_steps and adversarial_step_size (> 0)")
    value_range = tuple(config.task.adversarial_range)
    if len(value_range) != 2 or not value_range[0] < value_range[1]:
        raise ConfigError(f"config.task.adversarial_range={value_range!r}: give (LOW, HIGH) "
                          "with LOW < HIGH")
    return ClassificationTask(model=build_model_from_config(config, axis_name=axis_name),
                              loss_fn=loss_fn, eval_batch_size=config.data.eval_batch_size,
                              misclassified_shown=config.task.misclassified_shown,
                              draw_figures=config.logging.plot,
                              class_weights=_class_weights(config, dataset, train_split),
                              logit_offsets=_logit_offsets(config, dataset, train_split),
                              mixup_alpha=config.task.mixup_alpha, axis_name=axis_name,
                              split_metrics=kind, positive_class=positive_class,
                              operating_point=config.task.operating_point,
                              calibration_bins=config.task.calibration_bins,
                              adversarial_epsilon=config.task.adversarial_epsilon,
                              adversarial_steps=config.task.adversarial_steps,
                              adversarial_step_size=config.task.adversarial_step_size,
                              adversarial_range=value_range)


def _positive_class(task_config, num_classes: int) -> int | None:
    """The binary metrics' positive class: as named, class 1 of a two-class task with an
    operating point, or None (no binary metrics)."""
    named = task_config.positive_class
    if named >= num_classes:
        raise ConfigError(f"config.task.positive_class={named}: the dataset has "
                          f"{num_classes} classes (0..{num_classes - 1})")
    if named >= 0:
        return named
    if task_config.operating_point:
        if num_classes != 2:
            raise ConfigError(f"config.task.operating_point={task_config.operating_point!r} "
                              f"thresholds one class against the rest, and this task has "
                              f"{num_classes} classes: name it in config.task.positive_class")
        return 1
    return None


def _class_weights(config, dataset, train_split) -> tuple[float, ...] | None:
    if config.task.class_weighting == "none":
        return None
    counts = _train_counts("class_weighting='balanced'", "weight", dataset, train_split)
    return tuple(float(w) for w in balanced_class_weights(counts))


def _logit_offsets(config, dataset, train_split) -> tuple[float, ...] | None:
    tau = config.task.logit_adjustment
    if not tau:
        return None
    counts = _train_counts(f"logit_adjustment={tau}", "prior", dataset, train_split)
    return tuple(float(tau * np.log(c / counts.sum())) for c in counts)


def _train_counts(setting: str, what: str, dataset, train_split) -> np.ndarray:
    """Each class's count in the train split, which `setting` derives its `what` from."""
    if train_split is None:
        raise ConfigError(f"config.task.{setting} takes each class's {what} from the train "
                          "split's counts: build the task with train_split")
    counts = np.bincount(np.asarray(train_split.targets).astype(np.int64),
                         minlength=dataset.num_classes)
    if not counts.all():
        raise ConfigError(f"config.task.{setting}: class(es) "
                          f"{np.flatnonzero(counts == 0).tolist()} have no training example, "
                          f"so their {what} is undefined")
    return counts
