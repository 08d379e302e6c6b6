"""Small shared pieces of the model files: activations and normalisation by name."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

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


def _adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) averaging weights of PyTorch's adaptive average pool: output i
    averages inputs floor(i * in / out) .. ceil((i + 1) * in / out) - 1."""
    m = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -(-((i + 1) * size_in) // size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """PyTorch's AdaptiveAvgPool2d for NHWC `x` (static shapes), in x's dtype."""
    (h, w), (oh, ow) = x.shape[1:3], output_size
    if (h, w) == (oh, ow):
        return x
    if not h or not w:
        raise ValueError(f"adaptive_avg_pool: empty feature map {x.shape}; the input is too "
                         "small for this network")
    mh = jnp.asarray(_adaptive_pool_matrix(h, oh), x.dtype)
    mw = jnp.asarray(_adaptive_pool_matrix(w, ow), x.dtype)
    return jnp.einsum("nhwc,ih,jw->nijc", x, mh, mw)
