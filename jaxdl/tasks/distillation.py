"""Knowledge distillation (Hinton et al. 2015): a student classifier learns from the labels
and from a finished run's model, the teacher, whose softened outputs it matches:

    loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

(T^2 keeps the soft term's gradients at the scale of the hard one's as T grows), plus, on
request, feature distillation (FitNets, Romero et al. 2015): beta times the mean squared
difference between named intermediate outputs of student and teacher, through a learned
linear projection of the student's feature when the widths differ.

The teacher is the run in `task.teacher`: its saved config rebuilds its model, its best
checkpoint gives its weights. They are a constant of the compiled step (closed over, so
each backend places them as it places every constant: replicated), outside the TrainState:
never differentiated, never in the optimizer, never in the student's checkpoints. The
teacher runs in eval mode on the very inputs the student sees (after the student's
augmentation), inside the same step. The projections' parameters live in the student's
params under `PROJECTION` and train with it.

Evaluation reports the student: `loss` is its cross-entropy on the labels (what a
classification run of the same model reports), `accuracy`, and `teacher_agreement` (the
share of examples where student and teacher predict the same class); `kd_loss` is the soft
term. In training `loss` is the whole objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import losses, models, runs
from jaxdl.data import augment
from jaxdl.schema import ConfigError, Field, non_negative, positive, split_list
from jaxdl.tasks.base import build_model_from_config, example_rows, model_rngs, register_task
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.tasks.frechet import json_tuples

# The student params' entry holding the feature projections (one Dense per pair).
PROJECTION = "distill_projection"
# Folded into the init key for the projections, so the student's own init is unchanged.
PROJECTION_STREAM = 7
_ROLE = "config.task.teacher"


def kd_loss(student_logits, teacher_logits, temperature):
    """Per-example T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    t = temperature
    student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
    teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t)
    return t * t * optax.losses.kl_divergence_with_log_targets(student, teacher)


def distillation_loss(student_logits, teacher_logits, labels, *, alpha, temperature):
    """Per-example alpha * CE(labels) + (1 - alpha) * T^2 * KL (Hinton et al. 2015)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(
        student_logits.astype(jnp.float32), labels)
    return alpha * ce + (1.0 - alpha) * kd_loss(student_logits, teacher_logits, temperature)


def parse_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """'student_path=teacher_path, ...' -> ((student_path, teacher_path), ...)."""
    pairs = []
    for part in split_list(text):
        student, sep, teacher = (s.strip() for s in part.partition("="))
        if not (sep and student and teacher):
            raise ConfigError(f"config.task.features={text!r}: write "
                              "'STUDENT_MODULE=TEACHER_MODULE, ...' (module paths such as "
                              "Dense_0 or stage1_0/conv1)")
        pairs.append((student, teacher))
    return tuple(pairs)


def capture_outputs(model: nn.Module, paths, apply_fn):
    """(what `apply_fn()` returns, {path: output of the submodule at `path`}) for a run of
    `model` (`path`: its module names joined by '/'). Outputs are recorded as the model
    computes them (`nn.intercept_methods`), so the model need not expose them."""
    wanted, captured = set(paths), {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = "/".join(context.module.path)
        if context.method_name == "__call__" and path in wanted and path not in captured:
            captured[path] = out
        return out

    if not wanted:
        return apply_fn(), {}
    with nn.intercept_methods(record):
        result = apply_fn()
    return result, captured


def module_paths(model: nn.Module, variables, inputs) -> list[str]:
    """Every submodule path a call of `model` runs (traced, nothing computed)."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.path:
            seen.append("/".join(context.module.path))
        return next_fun(*args, **kwargs)

    def run(v, x):
        with nn.intercept_methods(record):
            return model.apply(v, x, train=False, rngs=model_rngs(model, jax.random.PRNGKey(0)))

    jax.eval_shape(run, variables, inputs)
    return list(dict.fromkeys(seen))


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
    """A finished run's model and its best weights (numpy, read-only), in eval mode."""

    model: nn.Module
    variables: Any
    workdir: str
    step: int

    def __call__(self, inputs, rng, features=()):
        """(logits, {path: feature}) of the teacher on `inputs`, gradients stopped."""
        variables = jax.tree.map(jnp.asarray, self.variables)
        logits, captured = capture_outputs(self.model, features, lambda: self.model.apply(
            variables, inputs, train=False, rngs=model_rngs(self.model, rng)))
        return jax.lax.stop_gradient((logits, captured))


@dataclasses.dataclass(frozen=True, eq=False)
class DistillationTask(ClassificationTask):
    teacher: Teacher | None = None
    alpha: float = 0.0
    temperature: float = 1.0
    feature_pairs: tuple[tuple[str, str], ...] = ()
    feature_weight: float = 0.0
    # student path -> teacher width, for the pairs whose widths differ (those get a Dense).
    projections: tuple[tuple[str, int], ...] = ()

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "accuracy", "teacher_agreement", "kd_loss")

    def init(self, rng, inputs):
        variables = super().init(rng, inputs)
        if not self.projections:
            return variables
        student_features = self._student(variables, inputs, train=False, rng=rng, rows=None)[2]
        key = jax.random.fold_in(rng, PROJECTION_STREAM)
        projection = {}
        for i, (path, width) in enumerate(self.projections):
            projection[path] = nn.Dense(width).init(jax.random.fold_in(key, i),
                                                    student_features[path])["params"]
        return {**variables, "params": {**variables["params"], PROJECTION: projection}}

    def _student(self, variables, inputs, *, train, rng, rows):
        """(logits, updated state collections, {path: feature}) of the student."""
        params = {k: v for k, v in variables["params"].items() if k != PROJECTION}
        student_variables = {**variables, "params": params}
        (logits, state), captured = capture_outputs(
            self.model, [s for s, _ in self.feature_pairs],
            lambda: self.run_model(student_variables, inputs, train=train, rng=rng, rows=rows))
        return logits, state, captured

    def feature_loss(self, params, student_features, teacher_features):
        """Per-example mean squared difference of every pair (the student's feature
        projected to the teacher's width where they differ), summed over pairs."""
        widths = dict(self.projections)
        total = 0.0
        for s_path, t_path in self.feature_pairs:
            s = student_features[s_path].astype(jnp.float32)
            if s_path in widths:
                s = nn.Dense(widths[s_path]).apply({"params": params[PROJECTION][s_path]}, s)
            diff = s - teacher_features[t_path].astype(jnp.float32)
            total = total + jnp.mean(jnp.square(diff).reshape(diff.shape[0], -1), axis=1)
        return total

    def apply(self, variables, batch, *, train, rng):
        inputs, labels, rows = batch["inputs"], batch["targets"], example_rows(batch)
        logits, new_state, student_features = self._student(variables, inputs, train=train,
                                                            rng=rng, rows=rows)
        teacher_logits, teacher_features = self.teacher(
            inputs, rng, [t for _, t in self.feature_pairs])
        soft = kd_loss(logits, teacher_logits, self.temperature)
        ce = self.loss_fn(logits, labels)
        if train:
            loss = self.alpha * ce + (1.0 - self.alpha) * soft
            if self.feature_pairs:
                loss = loss + self.feature_weight * self.feature_loss(
                    variables["params"], student_features, teacher_features)
        else:
            loss = ce
        predicted = jnp.argmax(logits, axis=-1)
        values = {"loss": loss, "kd_loss": soft,
                  "accuracy": (predicted == labels).astype(jnp.float32),
                  "teacher_agreement": (predicted == jnp.argmax(teacher_logits, axis=-1)
                                        ).astype(jnp.float32)}
        return values, new_state


def load_teacher(workdir: str, config, example_inputs: np.ndarray, num_classes: int
                 ) -> Teacher:
    """The teacher run in `workdir` checked against the student's data (`config`, one
    example of its inputs, its number of classes); ConfigError (one line) when it is
    missing, no run, unfinished, or sees other classes or inputs."""
    path = Path(workdir).expanduser()
    if not workdir:
        raise ConfigError(f"{_ROLE} is empty: give the workdir of a finished classifier run")
    if not path.is_dir():
        raise ConfigError(f"{_ROLE}={workdir!r}: no such directory")
    run_dir = runs.RunDir(path)
    if not run_dir.config.is_file():
        raise ConfigError(f"{_ROLE}={workdir!r} is not a jaxdl run (no "
                          f"{runs.CONFIG_FILENAME})")
    if not run_dir.is_complete():
        raise ConfigError(f"{_ROLE}={workdir!r}: the run has not finished (no "
                          f"{runs.SUMMARY_FILENAME}); finish it first")
    try:
        saved = runs.read_config(path, role=_ROLE)
        step = runs.best_step(path, role=_ROLE)
        state, _, _ = runs.read_checkpoint(path, step, role=_ROLE)
    except (runs.CheckpointError, KeyError, ValueError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    teacher_classes = json_tuples(saved["data"].get("classes") or ())
    if teacher_classes != tuple(config.data.classes or ()):
        raise ConfigError(f"{_ROLE}={workdir!r} was trained on data.classes="
                          f"{teacher_classes or 'all'}, the student on "
                          f"{tuple(config.data.classes) or 'all'}")
    mine = augment.eval_ops(augment.parse(config.data.augmentation))
    theirs = augment.eval_ops(augment.parse(saved["data"]["augmentation"]))
    if mine != theirs:
        raise ConfigError(f"{_ROLE}={workdir!r} saw its inputs preprocessed by "
                          f"{saved['data']['augmentation']!r} (eval part), the student by "
                          f"{config.data.augmentation!r}: give both the same normalisation")
    try:
        fields = {k: json_tuples(v) for k, v in saved["model"].items() if k != "name"}
        model = models.build_model(saved["model"]["name"], **fields)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{_ROLE}={workdir!r}: its model cannot be rebuilt: {e}") from None
    variables = jax.tree.map(np.asarray, {"params": state["params"],
                                          **(state.get("model_state") or {})})
    for leaf in jax.tree.leaves(variables):
        leaf.flags.writeable = False  # read-only: nothing may update the teacher in place
    teacher = Teacher(model=model, variables=variables, workdir=str(path), step=step)
    example = jax.ShapeDtypeStruct((1, *example_inputs.shape[1:]), example_inputs.dtype)
    try:
        logits, _ = jax.eval_shape(teacher, example, jax.random.PRNGKey(0))
    except Exception as e:  # any failure to trace the teacher on these inputs
        raise ConfigError(f"{_ROLE}={workdir!r}: its model cannot take the student's inputs "
                          f"of shape {list(example.shape[1:])}: "
                          f"{str(e).splitlines()[0]}") from None
    if logits.shape != (1, num_classes):
        raise ConfigError(f"{_ROLE}={workdir!r} outputs {list(logits.shape[1:])} per example; "
                          f"the student's data has {num_classes} classes")
    return teacher


def _feature_projections(task: DistillationTask, example_inputs) -> tuple[tuple[str, int], ...]:
    """Checks the feature pairs against both models; (student path, teacher width) of each
    pair whose last axes differ."""
    if not task.feature_pairs:
        return ()
    x = jax.ShapeDtypeStruct((1, *example_inputs.shape[1:]), example_inputs.dtype)
    rng = jax.random.PRNGKey(0)
    student_vars = jax.eval_shape(lambda v: task.model.init(
        {"params": rng, **model_rngs(task.model, rng)}, v, train=False), x)
    s_paths = module_paths(task.model, student_vars, x)
    t_paths = module_paths(task.teacher.model, task.teacher.variables, x)
    for s, t in task.feature_pairs:
        for path, known, who in ((s, s_paths, "student"), (t, t_paths, "teacher")):
            if path not in known:
                raise ConfigError(f"config.task.features: the {who} has no module {path!r}; "
                                  f"its modules: {', '.join(known)}")
    s_shapes = jax.eval_shape(lambda v, x: task._student(v, x, train=False, rng=rng,
                                                         rows=None)[2], student_vars, x)
    t_shapes = jax.eval_shape(lambda x: task.teacher(x, rng, [t for _, t in task.feature_pairs]
                                                     )[1], x)
    projections = []
    for s, t in task.feature_pairs:
        s_shape, t_shape = s_shapes[s].shape, t_shapes[t].shape
        if s_shape[:-1] != t_shape[:-1]:
            raise ConfigError(f"config.task.features: student {s!r} gives {list(s_shape[1:])}, "
                              f"teacher {t!r} {list(t_shape[1:])}: all but the last axis must "
                              "agree")
        if s_shape[-1] != t_shape[-1]:
            projections.append((s, int(t_shape[-1])))
    return tuple(projections)


def _unit_interval(value) -> str | None:
    """in [0, 1]"""
    return None if 0 <= value <= 1 else "must be in [0, 1]"


@register_task("distillation", task=DistillationTask, fields={
    "teacher": Field(str, help="workdir of a finished classifier run (its best checkpoint): "
                               "the teacher, loaded read-only"),
    "alpha": Field(float, check=_unit_interval,
                   help="weight of the cross-entropy on the labels; 1 - alpha weighs the "
                        "T^2-scaled KL to the teacher's softened outputs"),
    "temperature": Field(float, check=positive,
                         help="softmax temperature T of both outputs in the KL term "
                              "(Hinton et al. 2015 use 1-20)"),
    # Off unless asked for: "no feature term" is no hyperparameter choice.
    "features": Field(str, default="",
                      help="feature distillation pairs 'STUDENT_MODULE=TEACHER_MODULE, ...' "
                           "(module paths such as Dense_0); '' = off"),
    "feature_weight": Field(float, default=0.0, check=non_negative,
                            help="beta: weight of the features' mean squared difference; "
                                 "must be > 0 when task.features is set"),
    "misclassified_shown": Field(int, default=16, check=non_negative,
                                 help="misclassified test images drawn in misclassified.png "
                                      "after the final evaluation; 0 = none"),
}, needs_train_split=True)
def build_distillation(config, dataset, *, axis_name, train_split=None):
    if dataset.num_classes is None:
        raise ConfigError(f"config.task.name='distillation' needs class labels, but dataset "
                          f"{dataset.name!r} is a regression set")
    if config.model.get("num_classes") not in (None, dataset.num_classes):
        raise ConfigError(f"config.model.num_classes={config.model.num_classes} but dataset "
                          f"{dataset.name!r} has {dataset.num_classes} classes")
    pairs = parse_pairs(config.task.features)
    if bool(pairs) != (config.task.feature_weight > 0):
        raise ConfigError("config.task.features and config.task.feature_weight go together: "
                          "name the pairs and give them a weight > 0, or neither")
    example = (train_split.take(np.arange(1))["inputs"] if train_split is not None
               else np.asarray(dataset.features[:1]))
    teacher = load_teacher(config.task.teacher, config, np.asarray(example),
                           dataset.num_classes)
    task = DistillationTask(
        model=build_model_from_config(config, axis_name=axis_name),
        loss_fn=losses.get_loss("softmax_cross_entropy"),
        eval_batch_size=config.data.eval_batch_size,
        misclassified_shown=config.task.misclassified_shown, draw_figures=config.logging.plot,
        axis_name=axis_name, teacher=teacher, alpha=config.task.alpha,
        temperature=config.task.temperature, feature_pairs=pairs,
        feature_weight=config.task.feature_weight)
    return dataclasses.replace(task, projections=_feature_projections(task, np.asarray(example)))
