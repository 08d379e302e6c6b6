"""VGG (Simonyan and Zisserman 2014) as torchvision builds it, with and without BatchNorm.

features: per entry of the configuration a 3x3 conv (padding 1, with bias) -> (BatchNorm)
-> ReLU, or a 2x2/2 max pool ("M"); then adaptive average pooling to 7x7 (a no-op at 224x224
input), flatten, and the classifier Dense(4096) -> ReLU -> Dropout -> Dense(4096) -> ReLU ->
Dropout -> Dense(num_classes) logits. Initialisation as torchvision: convs kaiming normal
(fan_out), dense layers normal(0, 0.01), biases zero. Parameter counts equal torchvision's
(vgg16: 138,357,544 at 1000 classes; vgg16_bn: 138,365,992).

One difference in layout: inputs are NHWC, so the flattened 7x7x512 features are ordered
(h, w, c) rather than torchvision's (c, h, w); that matters only for importing its weights.
`bn_momentum` (the _bn models) is Flax's convention: 0.9 is PyTorch's momentum=0.1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxdl.models.fields import BN_EPSILON, BN_MOMENTUM, COUNT, RATE
from jaxdl.models.layers import Conv, adaptive_avg_pool, batch_norm, max_pool
from jaxdl.models.registry import register

# torchvision's cfgs "A", "B", "D", "E": conv widths, "M" a 2x2 max pool.
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_init = nn.initializers.normal(stddev=0.01)


class _VGGBase(nn.Module):
    """The network; a registered subclass fixes LAYERS and BATCH_NORM, the fields come from
    VGG or VGGBN."""

    LAYERS: ClassVar[tuple[int | str, ...]]
    BATCH_NORM: ClassVar[bool]
    POOLED_SIZE: ClassVar[tuple[int, int]] = (7, 7)
    HIDDEN: ClassVar[int] = 4096

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = x.astype(self.dtype)
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} takes NHWC images, got shape {x.shape}")
        for entry in self.LAYERS:
            if entry == "M":
                if min(x.shape[1:3]) < 2:
                    raise ValueError(f"{type(self).__name__}: input too small, the feature "
                                     f"map is {x.shape[1:3]} before a 2x2 max pool")
                x = max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = Conv(entry, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)
            if self.BATCH_NORM:
                x = batch_norm(train=train, momentum=self.bn_momentum,
                               epsilon=self.bn_epsilon, axis_name=self.axis_name,
                               dtype=self.dtype, param_dtype=self.param_dtype)(x)
            x = nn.relu(x)
        x = adaptive_avg_pool(x, self.POOLED_SIZE)
        x = x.reshape((x.shape[0], -1))
        for _ in range(2):
            x = nn.Dense(self.HIDDEN, kernel_init=dense_init, dtype=self.dtype,
                         param_dtype=self.param_dtype)(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype,
                        param_dtype=self.param_dtype)(x)


class VGG(_VGGBase):
    """VGG without BatchNorm. axis_name is unused (no BatchNorm): every model takes it."""

    BATCH_NORM = False

    num_classes: int
    dropout_rate: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"num_classes": COUNT, "dropout_rate": RATE}


class VGGBN(_VGGBase):
    """VGG with BatchNorm after every conv (torchvision's vgg*_bn)."""

    BATCH_NORM = True

    num_classes: int
    dropout_rate: float
    bn_momentum: float
    bn_epsilon: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {**VGG.FIELDS, "bn_momentum": BN_MOMENTUM, "bn_epsilon": BN_EPSILON}


@register("vgg11")
class VGG11(VGG):
    LAYERS = CONFIGS["vgg11"]


@register("vgg13")
class VGG13(VGG):
    LAYERS = CONFIGS["vgg13"]


@register("vgg16")
class VGG16(VGG):
    LAYERS = CONFIGS["vgg16"]


@register("vgg19")
class VGG19(VGG):
    LAYERS = CONFIGS["vgg19"]


@register("vgg11_bn")
class VGG11BN(VGGBN):
    LAYERS = CONFIGS["vgg11"]


@register("vgg13_bn")
class VGG13BN(VGGBN):
    LAYERS = CONFIGS["vgg13"]


@register("vgg16_bn")
class VGG16BN(VGGBN):
    LAYERS = CONFIGS["vgg16"]


@register("vgg19_bn")
class VGG19BN(VGGBN):
    LAYERS = CONFIGS["vgg19"]
