"""Autoencoders and the VAE: shapes, the ELBO against a hand computation, the closed-form KL
against a Monte-Carlo estimate, and the experiments end to end through the CLI."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, data_path, make_config, run_cli, stderr_tail
from jaxdl import models
from jaxdl.tasks.autoencoder import AutoencoderTask, VAETask, embed_2d, gaussian_kl
from jaxdl.config import ConfigError
from jaxdl.training import loop
from jaxdl.training.writers import read_metrics

TINY_VAE = dict(encoder_widths=(3,), latent_dim=2, decoder_widths=(3,), activation="relu",
                image_shape=(2, 2, 1), decoder_std=0.5)


def _vae_task(distribution: str) -> VAETask:
    model = models.build_model("vae", **TINY_VAE, decoder_distribution=distribution)
    return VAETask(model=model, num_images=4, plot_examples=0,
                   decoder_distribution=distribution, decoder_std=TINY_VAE["decoder_std"],
                   latent_dim=TINY_VAE["latent_dim"])


@pytest.mark.parametrize("name, fields, image_shape", [
    ("mlp_autoencoder", dict(encoder_widths=(16,), latent_dim=3, decoder_widths=(16,),
                             activation="relu"), (8, 8, 1)),
    # 7x9 does not halve evenly: the decoder must crop back to it.
    ("conv_autoencoder", dict(features=(4, 8), kernel_size=3, latent_dim=3,
                              activation="relu"), (7, 9, 2)),
])
def test_autoencoder_shapes(name, fields, image_shape):
    model = models.build_model(name, **fields, image_shape=image_shape)
    x = jnp.ones((5, *image_shape))

    @jax.jit
    def shapes(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        code = model.apply(variables, x, method="encode")
        return (model.apply(variables, x, train=False), code,
                model.apply(variables, code, method="decode"))

    out, code, decoded = jax.eval_shape(shapes, x)
    assert out.shape == decoded.shape == x.shape
    assert code.shape == (5, 3)


def test_vae_shapes_and_latent_stream():
    model = models.build_model("vae", **{**TINY_VAE, "image_shape": (8, 8, 1), "latent_dim": 4},
                               decoder_distribution="bernoulli")
    x = jnp.full((5, 8, 8, 1), 0.5)
    variables = jax.jit(lambda x: model.init(
        {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}, x, train=False))(x)
    recon, mean, logvar = jax.eval_shape(lambda v, x: model.apply(
        v, x, train=True, rngs={"latent": jax.random.PRNGKey(2)}), variables, x)
    assert recon.shape == x.shape and mean.shape == logvar.shape == (5, 4)
    samples = jax.jit(lambda v, z: model.apply(v, z, method="generate"))(variables,
                                                                       jnp.zeros((3, 4)))
    assert samples.shape == (3, 8, 8, 1)
    assert float(samples.min()) > 0 and float(samples.max()) < 1  # sigmoid of the logits
    with pytest.raises(Exception, match="latent"):  # the noise needs its own rng stream
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True), variables, x)


def _dense(params, x):
    return x @ np.asarray(params["kernel"]) + np.asarray(params["bias"])


@pytest.mark.parametrize("distribution", ["bernoulli", "gaussian"])
def test_vae_elbo_equals_a_hand_computation(distribution):
    """The task's -ELBO, KL and reconstruction NLL from numpy, given the z the model drew."""
    task = _vae_task(distribution)
    x = np.array([[0.0, 1.0, 0.25, 0.75], [1.0, 0.0, 0.5, 0.5], [0.1, 0.9, 1.0, 0.0]],
                 np.float32).reshape(3, 2, 2, 1)
    variables = jax.jit(task.init)(jax.random.PRNGKey(0), jnp.asarray(x))

    @jax.jit
    def values_and_z(variables, x):
        drawn = []

        def keep_decoder_input(next_fun, args, kwargs, context):
            if context.module.name == "decoder" and context.method_name == "__call__":
                drawn.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(keep_decoder_input):
            values, _ = task.apply(variables, {"inputs": x}, train=True,
                                   rng=jax.random.PRNGKey(7))
        (z,) = drawn
        return values, z

    values, z = values_and_z(variables, jnp.asarray(x))
    z = np.asarray(z)
    p = variables["params"]
    flat = x.reshape(3, -1)
    head = _dense(p["encoder"]["Dense_1"], np.maximum(_dense(p["encoder"]["Dense_0"], flat), 0))
    mean, logvar = head[:, :2], head[:, 2:]
    out = _dense(p["decoder"]["Dense_1"], np.maximum(_dense(p["decoder"]["Dense_0"], z), 0))
    if distribution == "bernoulli":  # -[x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))]
        sig = 1 / (1 + np.exp(-out))
        nll = -(flat * np.log(sig) + (1 - flat) * np.log(1 - sig)).sum(axis=1)
    else:
        std = TINY_VAE["decoder_std"]
        nll = (0.5 * ((flat - out) / std) ** 2 + np.log(std * np.sqrt(2 * np.pi))).sum(axis=1)
    kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1 - logvar).sum(axis=1)
    assert not np.allclose(z, mean, atol=1e-3), "z should be a sample, not the mean"
    np.testing.assert_allclose(values["reconstruction"], nll, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values["kl"], kl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values["loss"], nll + kl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values["elbo"], -(nll + kl), rtol=1e-5, atol=1e-5)


def test_vae_eval_is_fixed_by_its_key_and_training_draws_anew():
    task = _vae_task("bernoulli")
    x = jnp.full((4, 2, 2, 1), 0.5)
    variables = jax.jit(task.init)(jax.random.PRNGKey(0), x)
    evaluate = jax.jit(lambda rng: task.apply(variables, {"inputs": x}, train=False,
                                              rng=rng)[0])
    first, again = evaluate(jax.random.PRNGKey(3)), evaluate(jax.random.PRNGKey(3))
    other = evaluate(jax.random.PRNGKey(4))
    np.testing.assert_array_equal(first["loss"], again["loss"])
    assert not np.allclose(first["reconstruction"], other["reconstruction"])
    np.testing.assert_array_equal(first["kl"], other["kl"])  # the KL takes no sample


def test_kl_closed_form_matches_monte_carlo():
    """E_q[log q(z) - log p(z)] over 400,000 draws against the closed form."""
    mean = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    logvar = np.array([[0.2, -0.5, 0.0], [-1.0, 0.4, 0.1]])
    eps = np.random.default_rng(0).standard_normal((400_000, *mean.shape))
    z = mean + np.exp(0.5 * logvar) * eps
    log_q = -0.5 * (eps ** 2 + logvar + np.log(2 * np.pi)).sum(-1)
    log_p = -0.5 * (z ** 2 + np.log(2 * np.pi)).sum(-1)
    estimate = (log_q - log_p).mean(axis=0)
    closed = np.asarray(gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    assert closed[0] > 2 * closed[1] > 0  # the two cases differ enough to tell apart
    np.testing.assert_allclose(closed, estimate, rtol=0.01)


def test_autoencoder_losses_per_example():
    model = models.build_model("mlp_autoencoder", encoder_widths=(), latent_dim=2,
                               decoder_widths=(), activation="relu", image_shape=(2, 2, 1))
    x = jnp.array([[0.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.0, 0.0]]).reshape(2, 2, 2, 1)
    variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(x)
    out = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    out, flat = out.reshape(2, -1), np.asarray(x).reshape(2, -1)
    for loss, expected in [
        ("mse", ((out - flat) ** 2).mean(axis=1)),
        ("binary_cross_entropy",
         (np.logaddexp(0, out) - flat * out).mean(axis=1)),  # softplus(l) - x l
    ]:
        task = AutoencoderTask(model=model, num_images=2, plot_examples=0, loss=loss)
        values, _ = jax.jit(lambda v, x, task=task: task.apply(
            v, {"inputs": x}, train=False, rng=jax.random.PRNGKey(0)))(variables, x)
        np.testing.assert_allclose(values["loss"], expected, rtol=1e-5)


def test_embedding_is_the_code_in_2d_else_its_principal_plane():
    codes = np.random.default_rng(0).standard_normal((50, 2))
    points, axis = embed_2d(codes)
    assert axis == "latent" and np.array_equal(points, codes)
    # 3-d codes on a tilted plane: the principal plane is that plane, so the 2-d points keep
    # every pairwise distance.
    rng = np.random.default_rng(1)
    plane = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    codes = rng.standard_normal((100, 2)) * [5.0, 1.0] @ plane + 3.0
    points, axis = embed_2d(codes)
    assert axis == "PCA" and points.shape == (100, 2)

    def distances(a):
        return np.linalg.norm(a[:, None] - a[None], axis=-1)

    np.testing.assert_allclose(distances(points), distances(codes), atol=1e-9)
    assert points[:, 0].var() > points[:, 1].var()  # the first component is the widest


SHRINK = ["--config.logging.progress=False", "--config.train.log_every=10 steps"]


def _images(workdir):
    return sorted(p.name for p in (workdir / "images").iterdir() if p.stat().st_size > 0)


@pytest.mark.slow
def test_vae_experiment_on_digits_through_the_cli(tmp_path):
    """Always runs: the MNIST VAE config moved to sklearn's 8x8 digits, 20 steps."""
    workdir = tmp_path / "run"
    result = run_cli(
        "experiments.mnist_vae", f"--workdir={workdir}", *SHRINK,
        "--config.data.name=digits", "--config.data.validation_fraction=0.1",
        "--config.data.test_fraction=0.2", "--config.data.eval_batch_size=128",
        "--config.model.image_shape=(8, 8, 1)", "--config.model.encoder_widths=(64,)",
        "--config.model.decoder_widths=(64,)", "--config.model.latent_dim=2",
        "--config.train.duration=20 steps", "--config.train.eval_every=10 steps",
        "--config.checkpoint.every=20 steps", "--config.task.plot_examples=0",
        f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "final test: elbo" in result.stdout
    # Cheap pictures every evaluation, the embedding map at the last one only.
    assert _images(workdir) == ["embedding_step20.png", "reconstructions_step10.png",
                                "reconstructions_step20.png", "samples_step10.png",
                                "samples_step20.png"]
    tests = [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "test"]
    assert [r["step"] for r in tests] == [20]  # the test split: once, at the end
    for r in tests:
        assert r["loss"] == pytest.approx(-r["elbo"])
        assert r["loss"] == pytest.approx(r["kl"] + r["reconstruction"], rel=1e-5)
        assert r["kl"] > 0
    validation = [r for r in read_metrics(workdir / "metrics.jsonl")
                  if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [10, 20]
    assert validation[1]["loss"] < validation[0]["loss"]  # it learns
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["monitor"] == "loss" and summary["monitor_mode"] == "min"


def test_a_wrong_image_shape_or_range_is_one_line_naming_both():
    config = make_config("mnist_vae", **{"data.name": "digits", "data.test_fraction": 0.2})
    with pytest.raises(ConfigError, match=r"image_shape=\(28, 28, 1\) but dataset 'digits' "
                                          r"has examples of shape \(8, 8, 1\)"):
        loop.build(config)
    config = make_config("mnist_vae", **{"data.name": "diabetes", "data.test_fraction": 0.2,
                                         "model.image_shape": (10,)})
    with pytest.raises(ConfigError, match=r"'bernoulli' needs inputs in \[0, 1\]"):
        loop.build(config)


MNIST_FILES = data_path("mnist")
needs_mnist = pytest.mark.skipif(
    not MNIST_FILES.is_dir(),
    reason=f"MNIST IDX files absent ({MNIST_FILES}; set JAXDL_DATA_DIR)")


@needs_mnist
@pytest.mark.parametrize("experiment, metric", [("mnist_vae", "elbo"),
                                                ("mnist_autoencoder", "loss")])
def test_mnist_experiment_runs_end_to_end(experiment, metric, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(f"experiments.{experiment}", f"--workdir={workdir}", *SHRINK,
                     "--config.train.duration=5 steps", "--config.train.eval_every=5 steps",
                     "--config.checkpoint.every=5 steps", "--config.task.plot_examples=500",
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["final"]["test"]["examples"] == 10_000
    assert np.isfinite(summary["final"]["test"][metric])
    assert "embedding_step5.png" in _images(workdir)
