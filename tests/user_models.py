"""Models as a researcher writes them, outside jaxdl's zoo: stock flax layers, and only the
fields each test needs (named in a config as 'user_models:Class')."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models import layers


class DropoutMLP(nn.Module):
    """Stock nn.Dropout and no `dtype` field."""

    width: int
    num_classes: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class NoisyMLP(nn.Module):
    """Draws from its own rng stream 'noise', per example through layers.ExampleKeys."""

    width: int
    num_classes: int
    noise_std: float

    rng_streams = ("noise",)

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
        if train:
            keys = layers.ExampleKeys("noise")(x.shape[0])
            x = x + self.noise_std * jax.vmap(
                lambda key: jax.random.normal(key, x.shape[1:]))(keys)
        return nn.Dense(self.num_classes)(x)


class BatchNormMLP(nn.Module):
    """BatchNorm but no `axis_name` field."""

    width: int
    num_classes: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Dense(self.width, dtype=self.dtype)(x.reshape(x.shape[0], -1))
        x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class FeaturesFirstDropout(nn.Module):
    """Dropout on a transposed activation: its first axis is not the batch."""

    width: int
    num_classes: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
        x = nn.Dropout(0.5, deterministic=not train)(x.T).T
        return nn.Dense(self.num_classes)(x)
