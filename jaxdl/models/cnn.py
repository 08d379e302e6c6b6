"""The small convolutional network: conv -> pool blocks, then dense layers."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.fields import ACTIVATION, BATCH_NORM, BN_MOMENTUM, COUNT, COUNTS, POOLING, RATE
from jaxdl.models.layers import Conv, activation, batch_norm, pool
from jaxdl.models.registry import register


@register("cnn")
class CNN(nn.Module):
    """[Conv(k x k) -> (BatchNorm) -> activation -> 2x2 pool] per entry of `features`,
    then Dense(dense_width) -> activation -> Dropout -> Dense(num_classes) logits."""

    features: tuple[int, ...]
    kernel_size: int
    pooling: str
    dense_width: int
    activation: str
    dropout_rate: float
    batch_norm: bool
    bn_momentum: float
    num_classes: int
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"features": COUNTS, "kernel_size": COUNT, "pooling": POOLING,
              "dense_width": COUNT, "activation": ACTIVATION, "dropout_rate": RATE,
              "batch_norm": BATCH_NORM, "bn_momentum": BN_MOMENTUM, "num_classes": COUNT}

    @nn.compact
    def __call__(self, x, *, train: bool):
        act, down = activation(self.activation), pool(self.pooling)
        x = x.astype(self.dtype)
        for width in self.features:
            x = Conv(width, (self.kernel_size, self.kernel_size), padding="SAME",
                     use_bias=not self.batch_norm, dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
            if self.batch_norm:
                x = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.axis_name,
                               dtype=self.dtype, param_dtype=self.param_dtype)(x)
            x = down(act(x))
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(self.dense_width, dtype=self.dtype, param_dtype=self.param_dtype)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)(x)
