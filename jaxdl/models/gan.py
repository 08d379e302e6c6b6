"""DCGAN (Radford et al. 2016): a conv-transpose generator and a strided-conv discriminator,
and `dcgan`, the one module holding both, so a GAN's parameters, batch statistics and
checkpoints are one pytree ({"generator": ..., "discriminator": ...}) like any model's."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdl.models.fields import BATCH_NORM, BN_MOMENTUM, COUNT, LEAKY_RELU_SLOPE
from jaxdl.models.layers import Conv, ConvTransposeFastGrad, activation, batch_norm
from jaxdl.schema import Field
from jaxdl.models.registry import register

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh")  # images in [0, 1] or in [-1, 1]
OUTPUT_ACTIVATION = Field(str, choices=OUTPUT_ACTIVATIONS,
                          help="the generator's last nonlinearity: images in [0, 1] or [-1, 1]")


@register("dcgan_generator")
class Generator(nn.Module):
    """latent z -> Dense -> BatchNorm -> ReLU -> reshape to (H / 2^blocks, W / 2^blocks,
    width * 2^(blocks - 1)), then `blocks` stride-2 ConvTransposes, each halving the
    channels and doubling the size (BatchNorm + ReLU after all but the last, which makes
    the image through `output_activation`)."""

    width: int
    blocks: int
    kernel_size: int
    output_height: int
    output_width: int
    output_channels: int
    output_activation: str
    bn_momentum: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"width": COUNT, "blocks": COUNT, "kernel_size": COUNT, "output_height": COUNT,
              "output_width": COUNT, "output_channels": COUNT,
              "output_activation": OUTPUT_ACTIVATION, "bn_momentum": BN_MOMENTUM}

    def _norm_relu(self, x, train: bool):
        x = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.axis_name,
                       dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.relu(x)

    @nn.compact
    def __call__(self, z, *, train: bool):
        scale = 2 ** self.blocks
        if self.output_height % scale or self.output_width % scale:
            raise ValueError(f"dcgan generator: output {self.output_height}x{self.output_width}"
                             f" is not divisible by 2^blocks = {scale}; change blocks")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output_activation {self.output_activation!r}; valid: "
                             f"{', '.join(OUTPUT_ACTIVATIONS)}")
        height, width = self.output_height // scale, self.output_width // scale
        channels = self.width * 2 ** (self.blocks - 1)
        conv = {"kernel_size": (self.kernel_size, self.kernel_size), "strides": (2, 2),
                "padding": "SAME", "dtype": self.dtype, "param_dtype": self.param_dtype}
        x = nn.Dense(height * width * channels, use_bias=False, dtype=self.dtype,
                     param_dtype=self.param_dtype)(z.astype(self.dtype))
        x = self._norm_relu(x, train).reshape((z.shape[0], height, width, channels))
        # nn.ConvTranspose's parameters and names, with a kernel gradient fast on CPU.
        for i in range(self.blocks - 1):
            channels //= 2
            x = ConvTransposeFastGrad(channels, use_bias=False, name=f"ConvTranspose_{i}",
                                      **conv)(x)
            x = self._norm_relu(x, train)
        x = ConvTransposeFastGrad(self.output_channels, name=f"ConvTranspose_{self.blocks - 1}",
                                  **conv)(x)
        return activation(self.output_activation)(x.astype(jnp.float32))


@register("dcgan_discriminator")
class Discriminator(nn.Module):
    """`blocks` stride-2 convolutions with width * 2^i channels, each followed by (BatchNorm,
    never on the first, as in DCGAN) and a leaky ReLU, then one Dense logit per image."""

    width: int
    blocks: int
    kernel_size: int
    leaky_relu_slope: float
    batch_norm: bool
    bn_momentum: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"width": COUNT, "blocks": COUNT, "kernel_size": COUNT,
              "leaky_relu_slope": LEAKY_RELU_SLOPE, "batch_norm": BATCH_NORM, "bn_momentum": BN_MOMENTUM}

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = x.astype(self.dtype)
        for i in range(self.blocks):
            normed = self.batch_norm and i > 0
            x = Conv(self.width * 2 ** i, (self.kernel_size, self.kernel_size),
                     strides=(2, 2), padding="SAME", use_bias=not normed, dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
            if normed:
                x = batch_norm(train=train, momentum=self.bn_momentum,
                               axis_name=self.axis_name, dtype=self.dtype,
                               param_dtype=self.param_dtype)(x)
            x = nn.leaky_relu(x, negative_slope=self.leaky_relu_slope)
        x = x.reshape((x.shape[0], -1))
        logit = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return logit[:, 0].astype(jnp.float32)


@register("dcgan")
class DCGAN(nn.Module):
    """Generator and discriminator as submodules `generator` and `discriminator`; a GAN
    task calls `generate` and `discriminate` (through `apply(..., method=...)`)."""

    latent_dim: int
    generator_width: int
    generator_blocks: int
    discriminator_width: int
    discriminator_blocks: int
    kernel_size: int
    output_height: int
    output_width: int
    output_channels: int
    output_activation: str
    leaky_relu_slope: float
    discriminator_batch_norm: bool
    bn_momentum: float
    axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"latent_dim": COUNT, "generator_width": COUNT, "generator_blocks": COUNT,
              "discriminator_width": COUNT, "discriminator_blocks": COUNT, "kernel_size": COUNT,
              "output_height": COUNT, "output_width": COUNT, "output_channels": COUNT,
              "output_activation": OUTPUT_ACTIVATION, "leaky_relu_slope": LEAKY_RELU_SLOPE,
              "discriminator_batch_norm": Field(bool, help="BatchNorm in the discriminator's "
                                                            "hidden blocks (DCGAN's: yes)"),
              "bn_momentum": BN_MOMENTUM}

    def setup(self):
        shared = {"kernel_size": self.kernel_size, "bn_momentum": self.bn_momentum,
                  "axis_name": self.axis_name, "dtype": self.dtype, "param_dtype": self.param_dtype}
        self.generator = Generator(
            width=self.generator_width, blocks=self.generator_blocks,
            output_height=self.output_height, output_width=self.output_width,
            output_channels=self.output_channels, output_activation=self.output_activation,
            **shared)
        self.discriminator = Discriminator(
            width=self.discriminator_width, blocks=self.discriminator_blocks,
            leaky_relu_slope=self.leaky_relu_slope, batch_norm=self.discriminator_batch_norm,
            **shared)

    def generate(self, z, *, train: bool):
        """Images [N, H, W, C] in the output activation's range from latents [N, latent_dim]."""
        return self.generator(z, train=train)

    def discriminate(self, x, *, train: bool):
        """One real-vs-fake logit per image: [N]."""
        return self.discriminator(x, train=train)

    def __call__(self, x, *, train: bool):
        """(logits of images `x`, images from zero latents): touches both nets, so `init`
        on a batch of images creates every variable."""
        z = jnp.zeros((x.shape[0], self.latent_dim), jnp.float32)
        return self.discriminate(x, train=train), self.generate(z, train=train)
