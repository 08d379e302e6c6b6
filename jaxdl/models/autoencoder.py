"""Autoencoders and the variational autoencoder: encoder -> latent -> decoder.

Each model's `__call__(x, *, train)` returns what its task scores: the autoencoders a
reconstruction of x's shape (logits for a binary cross-entropy, values for a squared
error; the task decides), the VAE `(reconstruction, mean, logvar)`. `encode`, `decode`
and (VAE) `generate` are there for plots and sampling: `model.apply(variables, z,
method="generate")`. `image_shape` is a field so the decoder knows what to build
without seeing an input.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.fields import ACTIVATION, COUNT, COUNTS
from jaxdl.models.layers import Conv, ConvTransposeFastGrad, ExampleKeys, activation
from jaxdl.models.registry import register
from jaxdl.schema import Field, positive

# The rng stream the VAE draws its latent noise from (declared in its `rng_streams`).
LATENT_RNG = "latent"
DECODER_DISTRIBUTIONS = ("bernoulli", "gaussian")
# Fields the autoencoders share.
_MLP_FIELDS = {"encoder_widths": COUNTS, "latent_dim": COUNT, "decoder_widths": COUNTS,
               "activation": ACTIVATION, "image_shape": COUNTS}


class _MLPStack(nn.Module):
    """Flatten -> [Dense -> activation] per width -> Dense(out_features)."""

    widths: tuple[int, ...]
    out_features: int
    activation: str
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        act = activation(self.activation)
        for width in self.widths:
            x = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(x))
        return nn.Dense(self.out_features, dtype=self.dtype, param_dtype=self.param_dtype)(x)


@register("mlp_autoencoder")
class MLPAutoencoder(nn.Module):
    """MLP encoder (encoder_widths) to a `latent_dim` code, MLP decoder (decoder_widths)
    back to `image_shape`; the code is linear, the output unsquashed."""

    encoder_widths: tuple[int, ...]
    latent_dim: int
    decoder_widths: tuple[int, ...]
    activation: str
    image_shape: tuple[int, ...]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = _MLP_FIELDS

    def setup(self):
        self.encoder = _MLPStack(self.encoder_widths, self.latent_dim, self.activation,
                                 self.dtype, self.param_dtype)
        self.decoder = _MLPStack(self.decoder_widths, math.prod(self.image_shape),
                                 self.activation, self.dtype, self.param_dtype)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z).reshape((z.shape[0], *self.image_shape))

    def __call__(self, x, *, train: bool):
        del train  # no dropout or batch statistics
        return self.decode(self.encode(x))


class _ConvEncoder(nn.Module):
    features: tuple[int, ...]
    kernel_size: int
    latent_dim: int
    activation: str
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        x = x.astype(self.dtype)
        for width in self.features:  # each halves the height and width
            x = act(Conv(width, (self.kernel_size, self.kernel_size), strides=(2, 2),
                         padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype)(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.latent_dim, dtype=self.dtype, param_dtype=self.param_dtype)(x)


class _ConvDecoder(nn.Module):
    features: tuple[int, ...]  # the encoder's, mirrored here
    kernel_size: int
    activation: str
    image_shape: tuple[int, ...]
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, z):
        act = activation(self.activation)
        height, width, channels = self.image_shape
        shrink = 2 ** len(self.features)
        # The encoder's SAME stride-2 convolutions round up; the decoder doubles back
        # and crops the surplus (28 -> 14 -> 7 -> 4 -> 8 -> 16 -> 32 -> 28).
        start = (-(-height // shrink), -(-width // shrink), self.features[-1])
        x = act(nn.Dense(math.prod(start), dtype=self.dtype, param_dtype=self.param_dtype)(
            z.astype(self.dtype)))
        x = x.reshape((z.shape[0], *start))
        # nn.ConvTranspose's parameters and names, with a kernel gradient fast on CPU.
        for i, feature_count in enumerate(reversed(self.features)):
            x = act(ConvTransposeFastGrad(
                feature_count, (self.kernel_size, self.kernel_size), strides=(2, 2),
                padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype,
                name=f"ConvTranspose_{i}")(x))
        x = Conv(channels, (self.kernel_size, self.kernel_size), padding="SAME",
                 dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x[:, :height, :width, :]


@register("conv_autoencoder")
class ConvAutoencoder(nn.Module):
    """[Conv(k x k, stride 2) -> activation] per entry of `features`, Dense to a
    `latent_dim` code; the decoder mirrors it with transposed convolutions and a last
    Conv to the image's channels (unsquashed)."""

    features: tuple[int, ...]
    kernel_size: int
    latent_dim: int
    activation: str
    image_shape: tuple[int, ...]  # (height, width, channels)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"features": COUNTS, "kernel_size": COUNT, "latent_dim": COUNT,
              "activation": ACTIVATION, "image_shape": COUNTS}

    def setup(self):
        if len(self.image_shape) != 3 or not self.features:
            raise ValueError(f"conv_autoencoder: image_shape must be (height, width, channels) "
                             f"and features non-empty, got {self.image_shape}, {self.features}")
        self.encoder = _ConvEncoder(self.features, self.kernel_size, self.latent_dim,
                                    self.activation, self.dtype, self.param_dtype)
        self.decoder = _ConvDecoder(self.features, self.kernel_size, self.activation,
                                    self.image_shape, self.dtype, self.param_dtype)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x, *, train: bool):
        del train
        return self.decode(self.encode(x))


def reparameterize(keys: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) drawn for each example from its own
    key (`keys`, one per row of `mean`): a sample whose gradient flows to mean and logvar."""
    eps = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:], mean.dtype))(keys)
    return mean + jnp.exp(0.5 * logvar) * eps


@register("vae")
class VAE(nn.Module):
    """Kingma & Welling's VAE with MLPs: q(z|x) = N(mean, diag(exp(logvar))) over
    `latent_dim` dimensions, prior N(0, I), p(x|z) Bernoulli (the decoder gives logits) or
    Gaussian with fixed standard deviation `decoder_std` (the decoder gives the mean)."""

    encoder_widths: tuple[int, ...]
    latent_dim: int
    decoder_widths: tuple[int, ...]
    activation: str
    image_shape: tuple[int, ...]
    decoder_distribution: str
    decoder_std: float  # of the 'gaussian' decoder; unused by 'bernoulli'
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {**_MLP_FIELDS, "decoder_distribution": Field(
                  str, choices=DECODER_DISTRIBUTIONS,
                  help="the likelihood of a pixel: Bernoulli (binary cross-entropy) or Gaussian"),
              "decoder_std": Field(float, check=positive,
                                   help="the Gaussian decoder's fixed standard deviation")}
    rng_streams = (LATENT_RNG,)

    def setup(self):
        if self.decoder_distribution not in DECODER_DISTRIBUTIONS:
            raise ValueError(f"vae: unknown decoder_distribution {self.decoder_distribution!r}; "
                             f"valid: {', '.join(DECODER_DISTRIBUTIONS)}")
        # One head gives mean and log-variance side by side.
        self.encoder = _MLPStack(self.encoder_widths, 2 * self.latent_dim, self.activation,
                                 self.dtype, self.param_dtype)
        self.decoder = _MLPStack(self.decoder_widths, math.prod(self.image_shape),
                                 self.activation, self.dtype, self.param_dtype)
        self.latent_keys = ExampleKeys(LATENT_RNG)

    def encode(self, x):
        """(mean, logvar) of q(z|x), each [batch, latent_dim]."""
        mean, logvar = jnp.split(self.encoder(x), 2, axis=-1)
        return mean, logvar

    def decode(self, z):
        """The decoder's raw output of image shape: logits (bernoulli) or mean (gaussian)."""
        return self.decoder(z).reshape((z.shape[0], *self.image_shape))

    def generate(self, z):
        """The mean image of p(x|z): sigmoid(logits) or the Gaussian's mean."""
        out = self.decode(z)
        return nn.sigmoid(out) if self.decoder_distribution == "bernoulli" else out

    def __call__(self, x, *, train: bool):
        """(reconstruction, mean, logvar) from one z ~ q(z|x) per example, drawn from the
        'latent' rng stream at training and evaluation alike (the task passes a fixed key at
        eval)."""
        del train
        mean, logvar = self.encode(x)
        z = reparameterize(self.latent_keys(x.shape[0]), mean, logvar)
        return self.decode(z), mean, logvar
