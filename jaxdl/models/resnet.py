"""Residual networks: the CIFAR ResNets of He et al. (2015) and the ImageNet ResNets v1.5.

- CIFAR (`resnet20` ... `resnet110`, depth 6n + 2): a 3x3 conv of 16 channels, three stages
  of n basic blocks with 16, 32 and 64 channels (stride 2 at the start of stages 2 and 3),
  global average pooling, a dense layer. Shortcuts are option A of the paper: identity,
  subsampled and zero-padded in channels where the shape changes, so they hold no
  parameters (resnet20: 269,722 parameters, resnet56: 853,018 at 10 classes).
- ImageNet (`resnet18` ... `resnet152`), as torchvision builds them: a 7x7/2 conv, BatchNorm,
  ReLU, 3x3/2 max pool, four stages of 64, 128, 256, 512 channels (x4 for bottlenecks),
  projection shortcuts (1x1 conv + BatchNorm) where the shape changes, and the stride of a
  bottleneck on its 3x3 conv ("v1.5"). Parameter counts equal torchvision's (resnet50:
  25,557,032 at 1000 classes).

Both take `se_ratio` (> 0 adds a squeeze-and-excitation block with `int(C * se_ratio)`
hidden units to every residual branch, before the addition: SE-ResNet uses 1/16) and
`zero_init_last_bn` (the scale of the last BatchNorm of every residual branch starts at
zero, so every block starts as its shortcut; Goyal et al. 2017). `bn_momentum` is Flax's
convention: the weight of the old running average (0.9 is PyTorch's momentum=0.1).
Input NHWC; computation in `dtype`, parameters in `param_dtype`.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.fields import BN_EPSILON, BN_MOMENTUM, COUNT, SE_RATIO, ZERO_INIT_LAST_BN
from jaxdl.models.layers import Conv, batch_norm
from jaxdl.models.registry import register

# torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"), as torchvision does.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(kernel: int):
    """Symmetric padding of kernel // 2 on each side, as torchvision's convs (not SAME,
    which pads asymmetrically under stride 2)."""
    return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x * sigmoid(W2 relu(W1 mean_hw(x)))."""

    ratio: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        s = jnp.mean(x, axis=(1, 2))
        s = nn.relu(dense(max(1, int(channels * self.ratio)), name="reduce")(s))
        s = nn.sigmoid(dense(channels, name="expand")(s))
        return x * s[:, None, None, :].astype(x.dtype)


class _Block(nn.Module):
    """What a basic block and a bottleneck share: their fields, BatchNorm, SE, shortcut."""

    EXPANSION: ClassVar[int] = 1

    features: int            # width of the block's convs; the output has features * EXPANSION
    strides: int
    shortcut: str            # where the shape changes: "pad" (option A) or "projection"
    bn_momentum: float
    bn_epsilon: float
    se_ratio: float
    zero_init_last_bn: bool
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def conv(self, features: int, kernel: int, strides: int, name: str) -> Conv:
        return Conv(features, (kernel, kernel), strides=(strides, strides),
                    padding=_pad(kernel), use_bias=False, kernel_init=conv_init,
                    dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def bn(self, train: bool, name: str, last: bool = False) -> nn.BatchNorm:
        zero = last and self.zero_init_last_bn
        return batch_norm(train=train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                          axis_name=self.axis_name, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=name,
                          scale_init=nn.initializers.zeros if zero else nn.initializers.ones)

    def merge(self, x, residual, *, train: bool):
        """relu(shortcut(x) + SE(residual))."""
        if self.se_ratio > 0:
            residual = SqueezeExcite(self.se_ratio, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name="se")(residual)
        out_features = self.features * self.EXPANSION
        if self.strides != 1 or x.shape[-1] != out_features:
            if self.shortcut == "pad":
                x = x[:, ::self.strides, ::self.strides, :]
                extra = out_features - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
            elif self.shortcut == "projection":
                x = self.conv(out_features, 1, self.strides, "downsample_conv")(x)
                x = self.bn(train, "downsample_bn")(x)
            else:
                raise ValueError(f"unknown shortcut {self.shortcut!r}; valid: pad, projection")
        return nn.relu(x + residual)


class BasicBlock(_Block):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, ReLU."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        y = self.conv(self.features, 3, self.strides, "conv1")(x)
        y = nn.relu(self.bn(train, "bn1")(y))
        y = self.conv(self.features, 3, 1, "conv2")(y)
        y = self.bn(train, "bn2", last=True)(y)
        return self.merge(x, y, train=train)


class Bottleneck(_Block):
    """conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1(4x) -> BN, plus the
    shortcut, ReLU (v1.5: the stride is on the 3x3 conv)."""

    EXPANSION: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x, *, train: bool):
        y = self.conv(self.features, 1, 1, "conv1")(x)
        y = nn.relu(self.bn(train, "bn1")(y))
        y = self.conv(self.features, 3, self.strides, "conv2")(y)
        y = nn.relu(self.bn(train, "bn2")(y))
        y = self.conv(self.features * self.EXPANSION, 1, 1, "conv3")(y)
        y = self.bn(train, "bn3", last=True)(y)
        return self.merge(x, y, train=train)


BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class _ResNetBase(nn.Module):
    """The fields every ResNet takes; a registered subclass fixes the architecture."""

    num_classes: int
    bn_momentum: float
    bn_epsilon: float
    se_ratio: float
    zero_init_last_bn: bool
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"num_classes": COUNT, "bn_momentum": BN_MOMENTUM, "bn_epsilon": BN_EPSILON,
              "se_ratio": SE_RATIO, "zero_init_last_bn": ZERO_INIT_LAST_BN}

    def block(self, kind: str, features: int, strides: int, shortcut: str,
              name: str) -> _Block:
        return BLOCKS[kind](features, strides, shortcut, bn_momentum=self.bn_momentum,
                            bn_epsilon=self.bn_epsilon, se_ratio=self.se_ratio,
                            zero_init_last_bn=self.zero_init_last_bn,
                            axis_name=self.axis_name, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name)

    def stem_bn(self, train: bool) -> nn.BatchNorm:
        return batch_norm(train=train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                          axis_name=self.axis_name, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="stem_bn")

    def head(self, x):
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="head")(x)


class CifarResNet(_ResNetBase):
    """ResNet-(6n+2) for 32x32 images (He et al. 2015, section 4.2), option-A shortcuts."""

    DEPTH: ClassVar[int]
    WIDTHS: ClassVar[tuple[int, ...]] = (16, 32, 64)

    @nn.compact
    def __call__(self, x, *, train: bool):
        blocks_per_stage = (self.DEPTH - 2) // 6
        x = x.astype(self.dtype)
        x = Conv(self.WIDTHS[0], (3, 3), padding=_pad(3), use_bias=False,
                 kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="stem_conv")(x)
        x = nn.relu(self.stem_bn(train)(x))
        for i, width in enumerate(self.WIDTHS):
            for j in range(blocks_per_stage):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block("basic", width, strides, "pad",
                               f"stage{i + 1}_block{j}")(x, train=train)
        return self.head(x)


class ImageNetResNet(_ResNetBase):
    """ResNet v1.5 as torchvision builds it, for 224x224 images (any size >= 32 works)."""

    BLOCK: ClassVar[str]
    STAGE_SIZES: ClassVar[tuple[int, ...]]
    WIDTHS: ClassVar[tuple[int, ...]] = (64, 128, 256, 512)

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = x.astype(self.dtype)
        x = Conv(self.WIDTHS[0], (7, 7), strides=(2, 2), padding=_pad(7), use_bias=False,
                 kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="stem_conv")(x)
        x = nn.relu(self.stem_bn(train)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
        for i, (width, size) in enumerate(zip(self.WIDTHS, self.STAGE_SIZES)):
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block(self.BLOCK, width, strides, "projection",
                               f"stage{i + 1}_block{j}")(x, train=train)
        return self.head(x)


@register("resnet20")
class ResNet20(CifarResNet):
    DEPTH = 20


@register("resnet32")
class ResNet32(CifarResNet):
    DEPTH = 32


@register("resnet44")
class ResNet44(CifarResNet):
    DEPTH = 44


@register("resnet56")
class ResNet56(CifarResNet):
    DEPTH = 56


@register("resnet110")
class ResNet110(CifarResNet):
    DEPTH = 110


@register("resnet18")
class ResNet18(ImageNetResNet):
    BLOCK = "basic"
    STAGE_SIZES = (2, 2, 2, 2)


@register("resnet34")
class ResNet34(ImageNetResNet):
    BLOCK = "basic"
    STAGE_SIZES = (3, 4, 6, 3)


@register("resnet50")
class ResNet50(ImageNetResNet):
    BLOCK = "bottleneck"
    STAGE_SIZES = (3, 4, 6, 3)


@register("resnet101")
class ResNet101(ImageNetResNet):
    BLOCK = "bottleneck"
    STAGE_SIZES = (3, 4, 23, 3)


@register("resnet152")
class ResNet152(ImageNetResNet):
    BLOCK = "bottleneck"
    STAGE_SIZES = (3, 8, 36, 3)
