"""AlexNet as torchvision builds it (the "one weird trick" variant: 64-192-384-256-256
filters, no local response normalisation), NHWC.

Conv 11x11/4 (64) -> ReLU -> max-pool 3x3/2 -> Conv 5x5 (192) -> ReLU -> max-pool 3x3/2
-> Conv 3x3 (384) -> ReLU -> Conv 3x3 (256) -> ReLU -> Conv 3x3 (256) -> ReLU -> max-pool
3x3/2 -> adaptive average pool to 6x6 -> Dropout -> Dense 4096 -> ReLU -> Dropout -> Dense
4096 -> ReLU -> Dense(num_classes) logits. 61,100,840 params at 1000 classes, as torchvision.

Inputs must be at least 63x63 (the last max-pool needs a 3x3 map); at 224x224 the feature
map is 6x6 already and the adaptive pool is the identity. The flatten is in NHWC order
(6, 6, 256), not torchvision's (256, 6, 6): porting `classifier.1` needs that permutation.
Initialisers are Flax's defaults (LeCun-normal kernels, zero biases).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxdl.models.fields import COUNT, RATE
from jaxdl.models.layers import Conv, adaptive_avg_pool
from jaxdl.models.registry import register


@register("alexnet")
class AlexNet(nn.Module):
    """torchvision's AlexNet. Hyperparameters (required): `num_classes`, `dropout_rate`
    (before each of the two 4096-wide layers; torchvision uses 0.5). It has no BatchNorm, so
    `axis_name` is accepted for uniformity and unused."""

    num_classes: int
    dropout_rate: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"num_classes": COUNT, "dropout_rate": RATE}

    # Architecture constants (class attributes, not constructor fields).
    # (features, kernel, stride, padding, max-pool after it)
    conv_config = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
                   (256, 3, 1, 1, False), (256, 3, 1, 1, True))
    pooled_size = (6, 6)
    hidden_width = 4096
    min_input_size = 63       # the last max-pool needs a 3x3 map
    default_input_shape = (224, 224, 3)

    @nn.compact
    def __call__(self, x, *, train: bool):
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        for i, (features, kernel, stride, pad, pool) in enumerate(self.conv_config):
            x = Conv(features, (kernel, kernel), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"conv{i + 1}")(x)
            x = nn.relu(x)
            if pool:
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
        if min(x.shape[1:3]) < 1:
            raise ValueError(f"AlexNet needs inputs of at least {self.min_input_size}x"
                             f"{self.min_input_size}; the features of this input are empty")
        x = adaptive_avg_pool(x, self.pooled_size)
        x = x.reshape((x.shape[0], -1))
        for i in (1, 2):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(dense(self.hidden_width, name=f"fc{i}")(x))
        return dense(self.num_classes, name="fc3")(x)
