"""Classification: softmax cross-entropy (or another loss) and accuracy."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxdl import losses
from jaxdl.config import ConfigError, Field, fraction
from jaxdl.tasks.base import Task, build_model_from_config, register_task


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Task):
    model: nn.Module
    loss_fn: Callable
    monitor: str = "accuracy"
    monitor_mode: str = "max"

    def apply(self, variables, batch, *, train, rng):
        logits, new_state = self.run_model(variables, batch["inputs"], train=train, rng=rng)
        labels = batch["targets"]
        values = {
            "loss": self.loss_fn(logits, labels),
            "accuracy": (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32),
        }
        return values, new_state


def _loss_names():
    return sorted(losses.LOSSES)


@register_task("classification", fields={
    "loss": Field(str, choices=_loss_names),
    "label_smoothing": Field(float, check=fraction),
})
def build_classification(config, dataset, *, axis_name):
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
    return ClassificationTask(model=build_model_from_config(config, axis_name=axis_name),
                              loss_fn=loss_fn)
