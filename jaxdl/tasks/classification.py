"""Classification: softmax cross-entropy (or another loss) and accuracy; after the final
evaluation, a confusion matrix and the misclassified examples as files."""

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

from jaxdl import data as data_lib
from jaxdl import losses, plots, runs
from jaxdl.schema import ConfigError, Field, fraction, non_negative
from jaxdl.tasks import adversarial
from jaxdl.tasks.base import (EvalContext, Task, build_model_from_config, example_rows,
                              register_task)

CONFUSION_JSON, CONFUSION_PNG = runs.CONFUSION_JSON, runs.CONFUSION_PNG
MISCLASSIFIED_PNG = runs.MISCLASSIFIED_PNG
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

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "accuracy")

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
        loss = self.loss_fn(logits, labels)
        if self.class_weights is not None:
            loss = loss * jnp.asarray(self.class_weights, jnp.float32)[labels]
        return loss

    def on_eval(self, context: EvalContext) -> dict[str, dict[str, float]]:
        """After the final evaluation, writes the confusion matrix of the test split (the
        last eval split when there is none) as JSON and (with `draw_figures`) PNG, and for
        image inputs a grid of its most confidently misclassified examples. Adds no
        metric."""
        if context.final and context.write_files:
            split = "test" if "test" in context.eval_splits else context.eval_splits[-1]
            self.write_report(context, split)
        return {}

    def predict(self, context: EvalContext, split: data_lib.ArraySplit) -> np.ndarray:
        """Class probabilities [N, C] of every example of `split`, computed as the eval step
        sees its inputs (`context.eval_inputs`), on this process's first local device."""
        device = jax.local_devices()[0]
        variables = jax.device_put(context.variables, device)
        forward = jax.jit(lambda v, x: jax.nn.softmax(
            self.model.apply(v, context.eval_inputs(x), train=False).astype(jnp.float32)))
        outputs = [forward(variables, jax.device_put(batch["inputs"], device))
                   for batch in data_lib.eval_batches(split, self.eval_batch_size)]
        return np.concatenate([np.asarray(p) for p in outputs])[:len(split)]

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


def _loss_names():
    return sorted(losses.LOSSES)


@register_task("classification", task=ClassificationTask, fields={
    "loss": Field(str, choices=_loss_names),
    "label_smoothing": Field(float, check=fraction),
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
                              mixup_alpha=config.task.mixup_alpha, axis_name=axis_name,
                              adversarial_epsilon=config.task.adversarial_epsilon,
                              adversarial_steps=config.task.adversarial_steps,
                              adversarial_step_size=config.task.adversarial_step_size,
                              adversarial_range=value_range)


def _class_weights(config, dataset, train_split) -> tuple[float, ...] | None:
    if config.task.class_weighting == "none":
        return None
    if train_split is None:
        raise ConfigError("config.task.class_weighting='balanced' weighs classes by the train "
                          "split's counts: build the task with train_split")
    counts = np.bincount(np.asarray(train_split.targets).astype(np.int64),
                         minlength=dataset.num_classes)
    if not counts.all():
        raise ConfigError(f"config.task.class_weighting='balanced': class(es) "
                          f"{np.flatnonzero(counts == 0).tolist()} have no training example, "
                          "so their weight is undefined")
    return tuple(float(w) for w in balanced_class_weights(counts))
