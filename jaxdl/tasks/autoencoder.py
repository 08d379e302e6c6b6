"""Autoencoders and VAEs: reconstruction losses, the ELBO, and the pictures they are judged by.

`autoencoder` scores a reconstruction per example (binary cross-entropy on [0, 1] images,
or squared error), `vae` the negative ELBO in nats. After each evaluation both draw
originals above reconstructions, the VAE samples from fixed latent vectors, and at the
final evaluation a 2-D map of the eval split's codes coloured by label (the code itself
when it is 2-D, else its first two principal components).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import losses, plots, runs
from jaxdl.schema import ConfigError, Field, non_negative, positive
from jaxdl.tasks.base import Task, build_model_from_config, example_rows, register_task

RECONSTRUCTION_LOSSES = ("binary_cross_entropy", "mse")
IMAGES_DIR = runs.IMAGES_DIRNAME
# Folded into the evaluation key for the fixed latent vectors that samples are drawn from.
SAMPLES_STREAM = 1


def _sum_per_example(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(axis=1)


def bernoulli_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log p(x|z) in nats per example, summed over pixels; targets in [0, 1] (grey levels
    act as soft Bernoulli targets)."""
    return _sum_per_example(optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), targets.astype(jnp.float32)))


def gaussian_nll(mean: jax.Array, targets: jax.Array, std: float) -> jax.Array:
    """-log N(x; mean, std^2 I) in nats per example, summed over pixels."""
    z = (targets.astype(jnp.float32) - mean.astype(jnp.float32)) / std
    return _sum_per_example(0.5 * jnp.square(z) + math.log(std) + 0.5 * math.log(2 * math.pi))


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in nats per example, in closed form."""
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


# --- pictures (host side, matplotlib's Agg canvas: pyplot would switch global state) ------

def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _mosaic(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of [N, H, W, C] images in [0, 1] tiled into one [rows*H, N*W, C] picture with a
    one-pixel gap."""
    n, height, width, channels = rows[0].shape
    out = np.ones((len(rows) * (height + 1) - 1, n * (width + 1) - 1, channels), np.float32)
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            top, left = r * (height + 1), i * (width + 1)
            out[top:top + height, left:left + width] = image
    return out


def save_image_rows(path: Path, rows: list[np.ndarray], labels: list[str], title: str) -> None:
    """One PNG: each row of images labelled on the left (originals, reconstructions...)."""
    picture = np.clip(_mosaic(rows), 0.0, 1.0)
    height, width = picture.shape[:2]
    fig = _figure((max(3.0, width / 40 + 1.5), max(1.5, height / 40 + 0.6)))
    ax = fig.add_subplot()
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")
    row_height = height / len(rows)
    if any(labels):
        ax.set_yticks([(r + 0.5) * row_height for r in range(len(rows))], labels)
    else:
        ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def embed_2d(codes: np.ndarray) -> tuple[np.ndarray, str]:
    """The codes themselves when 2-D, else their projection on the first two principal
    components (numpy SVD of the centred codes); and a word saying which."""
    codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
    if codes.shape[1] == 2:
        return codes, "latent"
    centred = codes - codes.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "PCA"


def save_embedding_plot(path: Path, points: np.ndarray, labels: np.ndarray, *, axis: str,
                        title: str) -> None:
    fig = _figure((6.0, 5.0))
    ax = fig.add_subplot()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3)
    fig.colorbar(scatter, ax=ax, label="label")
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


# --- tasks --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _ReconstructionTask(Task):
    """What both tasks share: the pictures drawn after an evaluation."""

    model: nn.Module
    num_images: int  # originals shown (and VAE samples drawn) per picture
    plot_examples: int  # eval examples in the embedding map; 0 = all
    monitor: str = "loss"
    monitor_mode: str = "min"

    def to_image(self, output: jax.Array) -> jax.Array:
        """The model's reconstruction as an image in [0, 1]."""
        raise NotImplementedError

    def reconstruct(self, variables, inputs, rng) -> jax.Array:
        raise NotImplementedError

    def encode(self, variables, inputs) -> jax.Array:
        """The code an embedding map shows."""
        return self.model.apply(variables, inputs, method="encode")

    def sample(self, variables, rng) -> jax.Array | None:
        """`num_images` generated images in [0, 1], or None for a model that cannot."""
        del variables, rng
        return None

    @functools.cached_property
    def _compiled(self) -> dict:
        """on_eval's device work, compiled once per run (op by op it is slow)."""
        return {"reconstruct": jax.jit(lambda v, x, rng: self.to_image(
                    self.reconstruct(v, x, rng))),
                "encode": jax.jit(self.encode), "sample": jax.jit(self.sample)}

    def on_eval(self, context):
        if not context.write_files:
            return {}
        split_name = "test" if "test" in context.eval_splits else context.eval_splits[0]
        split = context.splits[split_name]
        variables, step = context.variables, context.step
        directory = context.workdir / IMAGES_DIR
        originals = np.asarray(split.inputs[:self.num_images], np.float32)
        reconstructions = self._compiled["reconstruct"](variables, originals, context.rng)
        save_image_rows(directory / f"reconstructions_step{step}.png",
                        [originals, np.asarray(reconstructions)], ["original", "reconstruction"],
                        f"{split_name} split, step {step}")
        samples = self._compiled["sample"](variables, context.rng)
        if samples is not None:
            plots.image_grid_png(np.asarray(samples), [""] * len(samples),
                                 directory / f"samples_step{step}.png",
                                 title=f"decoded from fixed z ~ N(0, I), step {step}")
        if context.final:
            count = self.plot_examples or len(split)
            codes = np.asarray(self._compiled["encode"](variables, split.inputs[:count]))
            points, axis = embed_2d(codes)
            save_embedding_plot(directory / f"embedding_step{step}.png", points,
                                np.asarray(split.targets[:count]), axis=axis,
                                title=f"{split_name} codes ({codes.shape[-1]}-d), step {step}")
        return {}


@dataclasses.dataclass(frozen=True)
class AutoencoderTask(_ReconstructionTask):
    loss: str = "binary_cross_entropy"

    @classmethod
    def metric_names(cls, task_config):
        # Under a binary cross-entropy the squared error is reported beside it.
        return ("loss",) if task_config["loss"] == "mse" else ("loss", "mse")

    def apply(self, variables, batch, *, train, rng):
        output, new_state = self.run_model(variables, batch["inputs"], train=train, rng=rng,
                                           rows=example_rows(batch))
        inputs = batch["inputs"]
        if self.loss == "mse":
            return {"loss": losses.mse(output, inputs)}, new_state
        values = {"loss": losses.binary_cross_entropy_with_logits(output, inputs),
                  "mse": losses.mse(jax.nn.sigmoid(output.astype(jnp.float32)), inputs)}
        return values, new_state

    def to_image(self, output):
        output = output.astype(jnp.float32)
        return jnp.clip(output if self.loss == "mse" else jax.nn.sigmoid(output), 0.0, 1.0)

    def reconstruct(self, variables, inputs, rng):
        del rng
        return self.model.apply(variables, inputs, train=False)


@dataclasses.dataclass(frozen=True)
class VAETask(_ReconstructionTask):
    """Per-example negative ELBO = reconstruction NLL + KL(q(z|x) || N(0, I)), one z drawn
    per example from the step's key (at evaluation the run's fixed key, so eval metrics
    are the same at every rerun)."""

    decoder_distribution: str = "bernoulli"
    decoder_std: float = 1.0
    latent_dim: int = 0

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "elbo", "kl", "reconstruction")

    def apply(self, variables, batch, *, train, rng):
        (output, mean, logvar), new_state = self.run_model(
            variables, batch["inputs"], train=train, rng=rng, rows=example_rows(batch))
        if self.decoder_distribution == "bernoulli":
            nll = bernoulli_nll(output, batch["inputs"])
        else:
            nll = gaussian_nll(output, batch["inputs"], self.decoder_std)
        kl = gaussian_kl(mean, logvar)
        loss = nll + kl
        return {"loss": loss, "elbo": -loss, "kl": kl, "reconstruction": nll}, new_state

    def to_image(self, output):
        output = output.astype(jnp.float32)
        if self.decoder_distribution == "bernoulli":
            output = jax.nn.sigmoid(output)
        return jnp.clip(output, 0.0, 1.0)

    def reconstruct(self, variables, inputs, rng):
        (output, _, _), _ = self.run_model(variables, inputs, train=False, rng=rng)
        return output

    def encode(self, variables, inputs):
        mean, _ = self.model.apply(variables, inputs, method="encode")
        return mean

    def sample(self, variables, rng):
        # The same latent vectors at every evaluation: samples are comparable across steps.
        z = jax.random.normal(jax.random.fold_in(rng, SAMPLES_STREAM),
                              (self.num_images, self.latent_dim))
        return jnp.clip(self.model.apply(variables, z, method="generate").astype(jnp.float32),
                        0.0, 1.0)


_SHARED_FIELDS = {
    "num_images": Field(int, check=positive, help="originals and reconstructions shown "
                                                  "(and VAE samples drawn) per picture"),
    "plot_examples": Field(int, check=non_negative, help="eval examples in the embedding "
                                                         "map; 0 = the whole split"),
}


def _check_data(config, dataset, *, unit_interval: bool, why: str) -> None:
    """The model's image_shape must match the data; Bernoulli targets must lie in [0, 1]."""
    shape = tuple(dataset.features.shape[1:])
    if "image_shape" in config.model and tuple(config.model.image_shape) != shape:
        raise ConfigError(f"config.model.image_shape={tuple(config.model.image_shape)} but "
                          f"dataset {dataset.name!r} has examples of shape {shape}")
    if unit_interval and (dataset.features.min() < 0 or dataset.features.max() > 1):
        raise ConfigError(f"{why} needs inputs in [0, 1]; dataset {dataset.name!r} spans "
                          f"[{dataset.features.min():g}, {dataset.features.max():g}]")


@register_task("autoencoder", task=AutoencoderTask, fields={
    "loss": Field(str, choices=lambda: RECONSTRUCTION_LOSSES,
                  help="per-example reconstruction loss against the input"),
    **_SHARED_FIELDS,
})
def build_autoencoder(config, dataset, *, axis_name):
    _check_data(config, dataset, unit_interval=config.task.loss == "binary_cross_entropy",
                why="config.task.loss='binary_cross_entropy'")
    return AutoencoderTask(model=build_model_from_config(config, axis_name=axis_name),
                           num_images=config.task.num_images,
                           plot_examples=config.task.plot_examples, loss=config.task.loss)


@register_task("vae", task=VAETask, fields=dict(_SHARED_FIELDS))
def build_vae(config, dataset, *, axis_name):
    model = build_model_from_config(config, axis_name=axis_name)
    missing = [f for f in ("latent_dim", "decoder_distribution", "decoder_std")
               if not hasattr(model, f)]
    if missing:
        raise ConfigError(f"config.task.name='vae' needs a model with fields latent_dim, "
                          f"decoder_distribution and decoder_std; {config.model.name!r} lacks "
                          f"{', '.join(missing)}")
    _check_data(config, dataset, unit_interval=model.decoder_distribution == "bernoulli",
                why="config.model.decoder_distribution='bernoulli'")
    return VAETask(model=model, num_images=config.task.num_images,
                   plot_examples=config.task.plot_examples,
                   decoder_distribution=model.decoder_distribution,
                   decoder_std=model.decoder_std, latent_dim=model.latent_dim)
