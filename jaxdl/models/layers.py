"""Small shared pieces of the model files: activations and normalisation by name."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": nn.tanh,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def batch_norm(*, train: bool, momentum: float, axis_name: str | None, dtype, param_dtype,
               name: str | None = None, epsilon: float = 1e-5,
               scale_init: Callable = nn.initializers.ones) -> nn.BatchNorm:
    """BatchNorm whose statistics are averaged over `axis_name` (the pmap data axis) if set.

    Under the sharded backend the batch axis is global already, so axis_name stays None.
    `epsilon` and `scale_init` default to Flax's own defaults (1e-5, ones); a residual
    block passes `scale_init=nn.initializers.zeros` to zero-init its last BatchNorm.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, axis_name=axis_name,
                        epsilon=epsilon, scale_init=scale_init, dtype=dtype,
                        param_dtype=param_dtype, name=name)


def pool(kind: str) -> Callable:
    pools = {"max": nn.max_pool, "avg": nn.avg_pool}
    if kind not in pools:
        raise ValueError(f"unknown pooling {kind!r}; valid: {', '.join(sorted(pools))}")
    return functools.partial(pools[kind], window_shape=(2, 2), strides=(2, 2))
