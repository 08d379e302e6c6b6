"""DenseNet-121/161/169/201 (Huang et al. 2017), torchvision's layout, NHWC.

conv0 7x7/2 -> norm0 -> ReLU -> max-pool 3x3/2 -> [dense block -> transition] x3 -> dense
block -> norm5 -> ReLU -> global average pool -> classifier (Dense(num_classes) logits).

A dense layer is BN-ReLU-Conv1x1(bn_size * growth_rate) -> BN-ReLU-Conv3x3(growth_rate)
(-> Dropout(dropout_rate)), its output concatenated to its input. A transition is
BN-ReLU-Conv1x1 that halves the channels (compression 0.5) -> average pool 2x2/2.
Convolutions have no bias. Inputs must be at least 29x29 (CIFAR's 32x32 works: the final
map is 1x1). With num_classes=1000 the `params` counts equal torchvision's
(DenseNet-121: 7,978,856) and params + batch_stats equal MXNet's (8,062,504).

Module names follow torchvision's state dict without its `features.` prefix
(`denseblock1/denselayer1/conv1`, `transition1/norm`, `norm5`, `classifier`), so porting
weights is a rename plus the usual OIHW -> HWIO kernel transpose. Initialisers are
torchvision's: Kaiming-normal (fan_in) convolutions, BatchNorm 1/0, zero classifier bias.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.fields import BN_MOMENTUM, COUNT, RATE
from jaxdl.models.layers import Conv, batch_norm
from jaxdl.models.registry import register

_KAIMING_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 bottleneck -> BN-ReLU-Conv3x3; returns only the new `growth_rate`
    channels (the caller concatenates)."""

    growth_rate: int
    bn_size: int
    bn_momentum: float
    dropout_rate: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = functools.partial(batch_norm, train=train, momentum=self.bn_momentum,
                                 axis_name=self.axis_name, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        conv = functools.partial(Conv, use_bias=False, kernel_init=_KAIMING_NORMAL,
                                 dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.relu(norm(name="norm1")(x))
        y = conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(y)
        y = nn.relu(norm(name="norm2")(y))
        y = conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class DenseBlock(nn.Module):
    """`num_layers` dense layers, each fed the concatenation of all previous outputs."""

    num_layers: int
    growth_rate: int
    bn_size: int
    bn_momentum: float
    dropout_rate: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        for j in range(1, self.num_layers + 1):
            y = DenseLayer(growth_rate=self.growth_rate, bn_size=self.bn_size,
                           bn_momentum=self.bn_momentum, dropout_rate=self.dropout_rate,
                           axis_name=self.axis_name, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=f"denselayer{j}")(x, train=train)
            x = jnp.concatenate([x, y], axis=-1)
        return x


class Transition(nn.Module):
    """BN-ReLU-Conv1x1(features) -> average pool 2x2/2."""

    features: int
    bn_momentum: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.axis_name,
                       dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        x = Conv(self.features, (1, 1), use_bias=False, kernel_init=_KAIMING_NORMAL,
                 dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(nn.relu(x))
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    """The DenseNet family; the registered subclasses fix the architecture constants.

    Hyperparameters (all required): `num_classes`; `bn_momentum` (Flax convention, the
    weight of the old running average: PyTorch's momentum 0.1 is 0.9 here); `dropout_rate`
    after each dense layer's 3x3 convolution (torchvision's `drop_rate`, 0 by default there).
    """

    num_classes: int
    bn_momentum: float
    dropout_rate: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"num_classes": COUNT, "bn_momentum": BN_MOMENTUM, "dropout_rate": RATE}

    # Architecture constants (class attributes, not constructor fields), set per variant.
    growth_rate = 32
    block_config = ()         # dense layers per block (empty here: set by each variant)
    num_init_features = 64
    bn_size = 4               # bottleneck width = bn_size * growth_rate
    compression = 0.5         # transitions keep this fraction of the channels
    min_input_size = 29       # the last transition's pool needs a 2x2 map
    default_input_shape = (224, 224, 3)

    @nn.compact
    def __call__(self, x, *, train: bool):
        if not self.block_config:
            raise TypeError(f"{type(self).__name__} has no block_config; use a registered "
                            "variant such as densenet121")
        norm = functools.partial(batch_norm, train=train, momentum=self.bn_momentum,
                                 axis_name=self.axis_name, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        x = Conv(self.num_init_features, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                 use_bias=False, kernel_init=_KAIMING_NORMAL, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="conv0")(x)
        x = nn.relu(norm(name="norm0")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, num_layers in enumerate(self.block_config, start=1):
            x = DenseBlock(num_layers=num_layers, growth_rate=self.growth_rate,
                           bn_size=self.bn_size, bn_momentum=self.bn_momentum,
                           dropout_rate=self.dropout_rate, axis_name=self.axis_name,
                           dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f"denseblock{i}")(x, train=train)
            if i != len(self.block_config):
                x = Transition(features=int(x.shape[-1] * self.compression),
                               bn_momentum=self.bn_momentum, axis_name=self.axis_name,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               name=f"transition{i}")(x, train=train)
        if min(x.shape[1:3]) < 1:
            raise ValueError(f"DenseNet needs inputs of at least {self.min_input_size}x"
                             f"{self.min_input_size}; the features of this input are empty")
        x = nn.relu(norm(name="norm5")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, bias_init=nn.initializers.zeros, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="classifier")(x)


@register("densenet121")
class DenseNet121(DenseNet):
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16), 64 initial features; 7,978,856
    params at 1000 classes."""

    growth_rate = 32
    block_config = (6, 12, 24, 16)
    num_init_features = 64


@register("densenet161")
class DenseNet161(DenseNet):
    """DenseNet-161: growth 48, blocks (6, 12, 36, 24), 96 initial features; 28,681,000
    params at 1000 classes."""

    growth_rate = 48
    block_config = (6, 12, 36, 24)
    num_init_features = 96


@register("densenet169")
class DenseNet169(DenseNet):
    """DenseNet-169: growth 32, blocks (6, 12, 32, 32), 64 initial features; 14,149,480
    params at 1000 classes."""

    growth_rate = 32
    block_config = (6, 12, 32, 32)
    num_init_features = 64


@register("densenet201")
class DenseNet201(DenseNet):
    """DenseNet-201: growth 32, blocks (6, 12, 48, 32), 64 initial features; 20,013,928
    params at 1000 classes."""

    growth_rate = 32
    block_config = (6, 12, 48, 32)
    num_init_features = 64
