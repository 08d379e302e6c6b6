"""Multi-layer perceptron: the first model of the lectures."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.fields import ACTIVATION, COUNT, COUNTS, RATE
from jaxdl.models.layers import activation
from jaxdl.models.registry import register


@register("mlp")
class MLP(nn.Module):
    """Flatten -> [Dense -> activation -> Dropout] per width -> Dense(num_classes) logits."""

    widths: tuple[int, ...]
    activation: str
    dropout_rate: float
    num_classes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"widths": COUNTS, "activation": ACTIVATION, "dropout_rate": RATE,
              "num_classes": COUNT}

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        act = activation(self.activation)
        for width in self.widths:
            x = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)(x)
