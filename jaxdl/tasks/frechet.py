"""The Fréchet distance between two sets of images in the feature space of a classifier
that jaxdl trained: how generative models are scored (FID with Inception features; the
Fréchet ChemNet Distance for molecules). Here the features are the penultimate-layer
activations (the input of the last Dense layer) of any registered classifier, read from
that run's workdir, so a GAN on MNIST is scored by an MNIST CNN."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxdl import models, runs
from jaxdl.data import augment


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of features [N, D], in float64."""
    features = np.asarray(features, np.float64).reshape(len(features), -1)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussians.

    Tr((S_a S_b)^(1/2)) is computed as the trace of the symmetric PSD square root of
    S_a^(1/2) S_b S_a^(1/2) (the same eigenvalues), so no complex parts or singular-matrix
    failures of a general `sqrtm` arise when features are rank-deficient (dead ReLUs).
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    diff = mean_a - mean_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def penultimate(model: nn.Module, variables, images) -> jax.Array:
    """The input of the last Dense layer `model` calls on `images` (eval mode): the
    classifier's feature vector, without the model having to expose it."""
    captured = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, images, train=False)
    if not captured:
        raise ValueError(f"{type(model).__name__} calls no Dense layer; the Fréchet distance "
                         "needs a classifier whose last layer is Dense")
    return captured[-1].reshape(images.shape[0], -1)


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """A trained classifier's penultimate features of images (on the host's default device)."""

    model: nn.Module
    variables: Any
    eval_ops: tuple  # the classifier run's deterministic augmentation (normalisation)
    source: str

    @classmethod
    def from_run(cls, workdir: str | Path, *, role: str) -> FeatureExtractor:
        """The classifier of run `workdir`: its config.json's model at its latest weights.
        Raises runs.CheckpointError when `workdir` holds no run (`role` names the setting)."""
        config = runs.read_config(workdir, role=role)
        weights, _ = runs.read_weights(workdir, role=role)
        fields = {k: json_tuples(v) for k, v in config["model"].items() if k != "name"}
        model = models.build_model(config["model"]["name"], **fields)
        return cls(model=model, variables={"params": weights["params"], **weights["model_state"]},
                   eval_ops=augment.eval_ops(augment.parse(config["data"]["augmentation"])),
                   source=str(workdir))

    @functools.cached_property
    def _features(self):
        return jax.jit(lambda variables, rng, images: penultimate(
            self.model, variables, augment.apply(self.eval_ops, rng, images)))

    def feature_shape(self, image_shape: tuple[int, ...], rng: jax.Array) -> tuple[int, ...]:
        """Shape of the features of one image (traced, nothing computed): checks that the
        classifier accepts images of `image_shape`."""
        example = jax.ShapeDtypeStruct((1, *image_shape), np.float32)
        return jax.eval_shape(self._features, self.variables, rng, example).shape[1:]

    def __call__(self, images: np.ndarray, rng: jax.Array, *, batch_size: int) -> np.ndarray:
        """Features [N, D] of images [N, H, W, C], `batch_size` images at a time. `rng` only
        feeds the (deterministic) eval ops, which ignore it."""
        return np.concatenate([
            np.asarray(self._features(self.variables, rng, images[i:i + batch_size]))
            for i in range(0, len(images), batch_size)])


def json_tuples(value):
    """A config value read back from JSON, with its lists as the tuples the config held."""
    return tuple(json_tuples(v) for v in value) if isinstance(value, list) else value
