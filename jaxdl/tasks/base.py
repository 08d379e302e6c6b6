"""The task contract and its registry."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdl import models
from jaxdl.schema import ConfigError
from jaxdl.models import layers

# Filled at import by the task files' decorators.
_TASKS: dict[str, Callable[..., "Task"]] = {}
_TASK_FIELDS: dict[str, dict[str, Any]] = {}
_TASK_CLASSES: dict[str, type["Task"]] = {}
_NEEDS_TRAIN_SPLIT: set[str] = set()

PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}

# The batch entry the train and eval steps add: each example's row in the global batch
# (int32 [examples on this device]), which per-example random draws are keyed by.
ROWS = "rows"
DROPOUT = "dropout"


def example_rows(batch: Mapping[str, Any]) -> jax.Array | None:
    """Each example's row in the global batch; None for a batch that did not come through
    a step (then draws are keyed by the row in the batch given)."""
    return batch.get(ROWS)


def rng_streams(model: nn.Module) -> tuple[str, ...]:
    """The rng streams `model` draws from: `dropout` and those its class declares in
    `rng_streams` (a tuple of names)."""
    declared = getattr(model, "rng_streams", ())
    if isinstance(declared, str) or not all(isinstance(s, str) for s in declared):
        raise ValueError(f"{type(model).__name__}.rng_streams must be a tuple of stream names, "
                         f"got {declared!r}")
    return (DROPOUT, *(s for s in declared if s != DROPOUT))


def model_rngs(model: nn.Module, rng: jax.Array) -> dict[str, jax.Array]:
    """One key per rng stream of `model`: `dropout` draws from `rng` itself, every other
    stream from `rng` folded with a hash of its name, so streams never share keys."""
    return {name: rng if name == DROPOUT else
            jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)
            for name in rng_streams(model)}


def register_task(name: str, fields: Mapping[str, Any] | None = None, *, task: type[Task],
                  needs_train_split: bool = False):
    """Registers `builder(config, dataset, *, axis_name) -> Task` under `name`. `fields`:
    the keys it reads from config.task (name -> `jaxdl.config.Field`), which validation
    checks before anything runs. `task`: the class the builder returns, whose
    `metric_names` validation reads (`checkpoint.monitor` must name one of them). With
    `needs_train_split` the builder also takes
    `train_split=`: the run's train split (an ArraySplit, or None when built outside a
    run), for what a task derives from the training data alone, such as class counts."""
    def wrap(builder):
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = builder
        _TASK_FIELDS[name] = dict(fields or {})
        _TASK_CLASSES[name] = task
        if needs_train_split:
            _NEEDS_TRAIN_SPLIT.add(name)
        return builder
    return wrap


def task_fields(name: str) -> dict[str, Any]:
    """The config.task fields task `name` declares (an unknown name declares none)."""
    return dict(_TASK_FIELDS.get(name, {}))


def task_names() -> list[str]:
    return sorted(_TASKS)


def metric_names(name: str, task_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The metrics task `name` reports for every eval split under the validated
    `config.task` section `task_config` (see `Task.metric_names`)."""
    if name not in _TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(task_names())}")
    return tuple(_TASK_CLASSES[name].metric_names(task_config))


def unavailable_metrics(name: str, task_config: Mapping[str, Any]) -> dict[str, str]:
    """See `Task.unavailable_metrics`."""
    if name not in _TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(task_names())}")
    return dict(_TASK_CLASSES[name].unavailable_metrics(task_config))


class Task(abc.ABC):
    """A model plus how a batch becomes per-example losses and metrics."""

    model: nn.Module
    # The eval metric that says which model is best, and whether higher is better.
    monitor: str
    monitor_mode: str

    @classmethod
    @abc.abstractmethod
    def metric_names(cls, task_config: Mapping[str, Any]) -> tuple[str, ...]:
        """The metrics each evaluation reports for every eval split (the keys of the values
        `apply` returns, then those `on_eval` adds) under the validated `config.task`
        section: what `checkpoint.monitor` may name, checked before anything is written."""

    @classmethod
    def unavailable_metrics(cls, task_config: Mapping[str, Any]) -> dict[str, str]:
        """Metrics the task reports under another `config.task` only: name -> what they
        need, so a refused `checkpoint.monitor` can say how to get one. Default: none."""
        del task_config
        return {}

    def init(self, rng: jax.Array, inputs: jax.Array) -> dict[str, Any]:
        """The model's variables: `params` plus any state collection (`batch_stats`)."""
        params_rng, streams_rng = jax.random.split(rng)
        return dict(self.model.init({"params": params_rng,
                                     **model_rngs(self.model, streams_rng)}, inputs,
                                    train=False))

    @abc.abstractmethod
    def apply(self, variables: Mapping[str, Any], batch: Mapping[str, jax.Array], *,
              train: bool, rng: jax.Array) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        """(per-example values with a `loss` entry, updated state collections)."""

    def init_optimizer(self, tx: optax.GradientTransformation, params) -> Any:
        """The optimizer state; a task with several optimized parts may keep one per part."""
        return tx.init(params)

    def learn(self, tx: optax.GradientTransformation, params, model_state, opt_state,
              batch: Mapping[str, jax.Array], mask: jax.Array, rng: jax.Array, *,
              reduce: Callable) -> Learned:
        """One update from `batch`: the gradient of the masked mean loss, averaged over
        devices by `reduce` (identity under the sharded backend), applied by `tx`.

        A task whose update is not one gradient of one loss (a GAN: discriminator, then
        generator) overrides this; the step around it (rng, augmentation, metrics, the
        non-finite guard, device reduction of the sums) stays the same.
        """

        def loss_fn(p):
            values, new_model_state = self.apply({"params": p, **model_state}, batch,
                                                 train=True, rng=rng)
            loss = jnp.sum(values["loss"].astype(jnp.float32) * mask) / jnp.sum(mask)
            return loss, (values, new_model_state)

        (_, (values, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params)
        grads = reduce(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return Learned(params=optax.apply_updates(params, updates),
                       model_state=new_model_state, opt_state=opt_state, values=values,
                       grads=grads, updates=updates)

    def on_eval(self, context: EvalContext) -> dict[str, dict[str, float]]:
        """Runs after every evaluation, on the host: extra metrics per eval split (merged
        into that split's record, so `checkpoint.monitor` may name them) and files such as
        samples or plots (written only when `context.write_files`). Must be deterministic:
        a resumed run repeats it. Default: nothing."""
        del context
        return {}

    def run_model(self, variables, inputs, *, train: bool, rng: jax.Array,
                  rows: jax.Array | None = None):
        """The model's output and its updated state collections (empty outside training).

        Every rng stream of the model (`rng_streams`) gets a key from `rng`; with `rows`
        (`example_rows(batch)`), dropout and `layers.ExampleKeys` draw per example from
        them, so no draw depends on how the batch is split over devices."""
        state_keys = [k for k in variables if k != "params"]
        rngs = model_rngs(self.model, rng)
        with (layers.per_example_rngs(rows) if rows is not None
              else contextlib.nullcontext()):
            if train and state_keys:
                return self.model.apply(variables, inputs, train=True, rngs=rngs,
                                        mutable=state_keys)
            out = self.model.apply(variables, inputs, train=train, rngs=rngs)
        return out, {k: variables[k] for k in state_keys}


@dataclasses.dataclass(frozen=True)
class Learned:
    """What one update produced: the new parameters, model state and optimizer state, the
    per-example values (with `loss`), and the gradients and updates whose norms are logged."""

    params: Any
    model_state: Any
    opt_state: Any
    values: dict[str, jax.Array]
    grads: Any
    updates: Any


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What `Task.on_eval` sees at an evaluation: host copies of the variables, the data
    splits, a fixed key (so samples are the same at every rerun and comparable between
    evaluations), and where to write files (only when `write_files`)."""

    step: int
    final: bool  # the run's last evaluation (or the restored best one, after early stopping)
    workdir: Path
    write_files: bool
    splits: Mapping[str, Any]  # name -> data.ArraySplit
    eval_splits: tuple[str, ...]
    rng: jax.Array
    variables_fn: Callable[[], dict[str, Any]]
    # Inputs -> what the eval step feeds the model (the augmentation's deterministic ops,
    # e.g. normalisation); traceable, so a task may call it inside jit.
    eval_inputs: Callable[[jax.Array], jax.Array] = lambda inputs: inputs

    @functools.cached_property
    def variables(self) -> dict[str, Any]:
        """{"params": ..., **state collections} as host arrays, fetched on first use."""
        return self.variables_fn()


def build_model_from_config(config, *, axis_name: str | None) -> nn.Module:
    """The config's model, in the config's precision (float32 parameters always)."""
    fields = {k: v for k, v in config.model.items() if k != "name"}
    known = models.model_fields(config.model.name)
    if config.precision != "fp32" and "dtype" not in known:
        # Nothing else would make the model compute in the precision asked for.
        raise ConfigError(f"config.precision={config.precision!r} but model "
                          f"{config.model.name!r} has no `dtype` field to compute in; give it "
                          "one that its layers use, or set config.precision='fp32'")
    if "axis_name" in known:
        fields["axis_name"] = axis_name
    if "dtype" in known:
        fields["dtype"] = PRECISIONS[config.precision]
    return models.build_model(config.model.name, **fields)


def check_model_state(config, model_state: Mapping[str, Any], *, axis_name: str | None,
                      num_devices: int) -> None:
    """Refuses (ConfigError) BatchNorm statistics that pmap would keep per device: with
    more than one device they sync only through the model's `axis_name` field."""
    if (axis_name is not None and num_devices > 1 and "batch_stats" in model_state
            and "axis_name" not in models.model_fields(config.model.name)):
        raise ConfigError(f"model {config.model.name!r} keeps BatchNorm statistics but has no "
                          f"`axis_name` field, so under pmap over {num_devices} devices each "
                          "would keep its own; give it one that its BatchNorm layers use, or "
                          "set config.parallel.backend='sharded'")


def build_task(config, dataset, *, axis_name: str | None, train_split=None) -> Task:
    """The task named by `config.task.name` for `dataset`, with its model built;
    `train_split` reaches the builders registered with `needs_train_split`."""
    name = config.task.name
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(task_names())}")
    extra = {"train_split": train_split} if name in _NEEDS_TRAIN_SPLIT else {}
    return _TASKS[name](config, dataset, axis_name=axis_name, **extra)
