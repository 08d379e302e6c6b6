"""Inception v3 (Szegedy et al. 2016) as torchvision builds it, NHWC, 299x299 inputs.

Every convolution is BasicConv2d: Conv (no bias) -> BatchNorm (epsilon 1e-3) -> ReLU.
Stem (Conv2d_1a_3x3 .. Conv2d_4a_3x3, two max-pools) -> Mixed_5b..5d (InceptionA) ->
Mixed_6a (InceptionB) -> Mixed_6b..6e (InceptionC) -> [AuxLogits] -> Mixed_7a (InceptionD)
-> Mixed_7b, 7c (InceptionE) -> global average pool -> Dropout -> fc (num_classes logits).
Module names are torchvision's, so porting weights is the OIHW -> HWIO kernel transpose.
torchvision's `transform_input` (a re-normalisation of the input) is left to the data.

The auxiliary head (`aux_logits=True`, as torchvision's default): AuxLogits reads Mixed_6e
(average pool 5x5/3 -> 1x1 conv 128 -> 5x5 conv 768 -> global average -> fc). `__call__`
returns the main logits only, so the generic classification task trains it unchanged. The
aux logits are computed when `train=True` and `sow`n into the `intermediates` collection,
which a task that wants the auxiliary loss reads by making it mutable:

    logits, state = model.apply(variables, x, train=True, rngs={"dropout": rng},
                                mutable=["batch_stats", "intermediates"])
    aux_logits = state["intermediates"]["aux_logits"][0]

Without `intermediates` mutable, `sow` is a no-op. The head's parameters are created at
init (init sows nothing, so `intermediates` never enters the train state) and it is skipped
when `train=False`. With aux_logits=True and the plain classification task, its parameters
get no gradient (only weight decay) but its batch statistics are updated: use
aux_logits=False there. Counts at 1000 classes equal torchvision's: 27,161,264 params with
the head, 23,834,568 without. The head's 5x5 convolution needs Mixed_6e to be at least
17x17, i.e. inputs of at least 299x299; without it the network runs from 75x75.

Initialisers are torchvision's: normal(0.1) for convolutions and fc, 0.01 for the aux 5x5
convolution, 0.001 for the aux fc (truncated at +-2, i.e. not at all at these scales),
BatchNorm 1/0, zero fc biases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.fields import BN_MOMENTUM, COUNT, RATE
from jaxdl.models.layers import Conv, batch_norm
from jaxdl.models.registry import register
from jaxdl.schema import Field


def _pad(kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's symmetric 'same' padding of a stride-1 odd kernel."""
    return ((kernel[0] // 2, kernel[0] // 2), (kernel[1] // 2, kernel[1] // 2))


def _avg_pool_3x3_same(x):
    # torchvision's F.avg_pool2d(x, 3, stride=1, padding=1): zero pads counted (count_include_pad).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def _max_pool_3x3_2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(epsilon 1e-3) -> ReLU."""

    features: int
    kernel_size: tuple[int, int]
    bn_momentum: float
    strides: tuple[int, int] = (1, 1)
    padding: Any = "VALID"
    stddev: float = 0.1
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    bn_epsilon = 1e-3

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = Conv(self.features, self.kernel_size, strides=self.strides, padding=self.padding,
                 use_bias=False, kernel_init=nn.initializers.normal(self.stddev),
                 dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
        x = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.axis_name,
                       dtype=self.dtype, param_dtype=self.param_dtype, epsilon=self.bn_epsilon,
                       name="bn")(x)
        return nn.relu(x)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1(pool_features)."""

    pool_features: int
    conv: Callable[..., nn.Module]   # BasicConv2d with the model's fields bound

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = self.conv
        b1 = c(64, (1, 1), name="branch1x1")(x, train=train)
        b5 = c(48, (1, 1), name="branch5x5_1")(x, train=train)
        b5 = c(64, (5, 5), padding=_pad((5, 5)), name="branch5x5_2")(b5, train=train)
        b3 = c(64, (1, 1), name="branch3x3dbl_1")(x, train=train)
        b3 = c(96, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_2")(b3, train=train)
        b3 = c(96, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_3")(b3, train=train)
        bp = c(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x),
                                                                train=train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | max-pool 3x3/2."""

    conv: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = self.conv
        b3 = c(384, (3, 3), strides=(2, 2), name="branch3x3")(x, train=train)
        bd = c(64, (1, 1), name="branch3x3dbl_1")(x, train=train)
        bd = c(96, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_2")(bd, train=train)
        bd = c(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd, train=train)
        return jnp.concatenate([b3, bd, _max_pool_3x3_2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7s: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 |
    avgpool-1x1; `channels_7x7` is the width inside the factorised branches."""

    channels_7x7: int
    conv: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, *, train: bool):
        c, c7 = self.conv, self.channels_7x7
        b1 = c(192, (1, 1), name="branch1x1")(x, train=train)
        b7 = c(c7, (1, 1), name="branch7x7_1")(x, train=train)
        b7 = c(c7, (1, 7), padding=_pad((1, 7)), name="branch7x7_2")(b7, train=train)
        b7 = c(192, (7, 1), padding=_pad((7, 1)), name="branch7x7_3")(b7, train=train)
        bd = c(c7, (1, 1), name="branch7x7dbl_1")(x, train=train)
        bd = c(c7, (7, 1), padding=_pad((7, 1)), name="branch7x7dbl_2")(bd, train=train)
        bd = c(c7, (1, 7), padding=_pad((1, 7)), name="branch7x7dbl_3")(bd, train=train)
        bd = c(c7, (7, 1), padding=_pad((7, 1)), name="branch7x7dbl_4")(bd, train=train)
        bd = c(192, (1, 7), padding=_pad((1, 7)), name="branch7x7dbl_5")(bd, train=train)
        bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x), train=train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max-pool 3x3/2."""

    conv: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = self.conv
        b3 = c(192, (1, 1), name="branch3x3_1")(x, train=train)
        b3 = c(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3, train=train)
        b7 = c(192, (1, 1), name="branch7x7x3_1")(x, train=train)
        b7 = c(192, (1, 7), padding=_pad((1, 7)), name="branch7x7x3_2")(b7, train=train)
        b7 = c(192, (7, 1), padding=_pad((7, 1)), name="branch7x7x3_3")(b7, train=train)
        b7 = c(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7, train=train)
        return jnp.concatenate([b3, b7, _max_pool_3x3_2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 3x3s: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1."""

    conv: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = self.conv
        b1 = c(320, (1, 1), name="branch1x1")(x, train=train)
        b3 = c(384, (1, 1), name="branch3x3_1")(x, train=train)
        b3 = jnp.concatenate([
            c(384, (1, 3), padding=_pad((1, 3)), name="branch3x3_2a")(b3, train=train),
            c(384, (3, 1), padding=_pad((3, 1)), name="branch3x3_2b")(b3, train=train)], -1)
        bd = c(448, (1, 1), name="branch3x3dbl_1")(x, train=train)
        bd = c(384, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_2")(bd, train=train)
        bd = jnp.concatenate([
            c(384, (1, 3), padding=_pad((1, 3)), name="branch3x3dbl_3a")(bd, train=train),
            c(384, (3, 1), padding=_pad((3, 1)), name="branch3x3dbl_3b")(bd, train=train)], -1)
        bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x), train=train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on Mixed_6e: avgpool 5x5/3 -> 1x1 (128) -> 5x5 (768) ->
    global average -> fc (num_classes)."""

    num_classes: int
    conv: Callable[..., nn.Module]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.avg_pool(x, (5, 5), strides=(3, 3))
        x = self.conv(128, (1, 1), name="conv0")(x, train=train)
        x = self.conv(768, (5, 5), stddev=0.01, name="conv1")(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.001),
                        dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)


@register("inception_v3")
class InceptionV3(nn.Module):
    """torchvision's Inception v3. Hyperparameters (required): `num_classes`;
    `bn_momentum` (Flax convention: PyTorch's 0.1 is 0.9 here); `dropout_rate` before the
    fc (torchvision: 0.5); `aux_logits` (build the auxiliary head; see the module docstring
    for how its output is returned)."""

    num_classes: int
    bn_momentum: float
    dropout_rate: float
    aux_logits: bool
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"num_classes": COUNT, "bn_momentum": BN_MOMENTUM, "dropout_rate": RATE,
              "aux_logits": Field(bool, help="build the auxiliary classifier on Mixed_6e "
                                                "(torchvision's default; training only)")}

    # Architecture constants (class attributes, not constructor fields).
    pool_features_5 = (32, 64, 64)          # Mixed_5b, 5c, 5d
    channels_7x7_6 = (128, 160, 160, 192)   # Mixed_6b, 6c, 6d, 6e
    min_input_size = 75       # 299 with the auxiliary head
    default_input_shape = (299, 299, 3)

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = functools.partial(BasicConv2d, bn_momentum=self.bn_momentum,
                                 axis_name=self.axis_name, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x, train=train)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x, train=train)
        x = conv(64, (3, 3), padding=_pad((3, 3)), name="Conv2d_2b_3x3")(x, train=train)
        x = _max_pool_3x3_2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x, train=train)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x, train=train)
        x = _max_pool_3x3_2(x)
        for suffix, pool_features in zip("bcd", self.pool_features_5, strict=True):
            x = InceptionA(pool_features, conv, name=f"Mixed_5{suffix}")(x, train=train)
        x = InceptionB(conv, name="Mixed_6a")(x, train=train)
        for suffix, c7 in zip("bcde", self.channels_7x7_6, strict=True):
            x = InceptionC(c7, conv, name=f"Mixed_6{suffix}")(x, train=train)
        if self.aux_logits and (train or self.is_initializing()):
            if min(x.shape[1:3]) < 17:
                raise ValueError("the auxiliary head of inception_v3 needs inputs of at least "
                                 "299x299; set aux_logits=False for smaller inputs")
            aux = InceptionAux(self.num_classes, conv, dtype=self.dtype,
                               param_dtype=self.param_dtype, name="AuxLogits")(x, train=train)
            if not self.is_initializing():
                self.sow("intermediates", "aux_logits", aux)
        x = InceptionD(conv, name="Mixed_7a")(x, train=train)
        x = InceptionE(conv, name="Mixed_7b")(x, train=train)
        x = InceptionE(conv, name="Mixed_7c")(x, train=train)
        if min(x.shape[1:3]) < 1:
            raise ValueError(f"inception_v3 needs inputs of at least {self.min_input_size}x"
                             f"{self.min_input_size}; the features of this input are empty")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.1),
                        dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)
