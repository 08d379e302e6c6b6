"""The task contract and its registry."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl import models

# Filled at import by the task files' decorators.
_TASKS: dict[str, Callable[..., "Task"]] = {}

PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def register_task(name: str):
    def wrap(builder):
        _TASKS[name] = builder
        return builder
    return wrap


def task_names() -> list[str]:
    return sorted(_TASKS)


class Task(abc.ABC):
    """A model plus how a batch becomes per-example losses and metrics."""

    model: nn.Module
    # The eval metric that says which model is best, and whether higher is better.
    monitor: str
    monitor_mode: str

    def init(self, rng: jax.Array, inputs: jax.Array) -> dict[str, Any]:
        """The model's variables: `params` plus any state collection (`batch_stats`)."""
        params_rng, dropout_rng = jax.random.split(rng)
        return dict(self.model.init({"params": params_rng, "dropout": dropout_rng}, inputs,
                                    train=False))

    @abc.abstractmethod
    def apply(self, variables: Mapping[str, Any], batch: Mapping[str, jax.Array], *,
              train: bool, rng: jax.Array) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        """(per-example values with a `loss` entry, updated state collections)."""

    def run_model(self, variables, inputs, *, train: bool, rng: jax.Array):
        """The model's output and its updated state collections (empty outside training)."""
        state_keys = [k for k in variables if k != "params"]
        if train and state_keys:
            return self.model.apply(variables, inputs, train=True, rngs={"dropout": rng},
                                    mutable=state_keys)
        out = self.model.apply(variables, inputs, train=train, rngs={"dropout": rng})
        return out, {k: variables[k] for k in state_keys}


def build_model_from_config(config, *, axis_name: str | None) -> nn.Module:
    """The config's model, in the config's precision (float32 parameters always)."""
    fields = {k: v for k, v in config.model.items() if k != "name"}
    known = models.model_fields(config.model.name)
    if "axis_name" in known:
        fields["axis_name"] = axis_name
    if "dtype" in known:
        fields["dtype"] = PRECISIONS[config.precision]
    return models.build_model(config.model.name, **fields)


def build_task(config, dataset, *, axis_name: str | None) -> Task:
    """The task named by `config.task.name` for `dataset`, with its model built."""
    if config.task.name not in _TASKS:
        raise ValueError(f"unknown task {config.task.name!r}; valid: {', '.join(task_names())}")
    return _TASKS[config.task.name](config, dataset, axis_name=axis_name)
