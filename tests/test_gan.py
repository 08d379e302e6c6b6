"""The GAN task: each update touches only its own net, both losses, the Fréchet distance,
and experiments.mnist_dcgan end to end through the CLI (on sklearn's digits, always here)."""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from conftest import make_config, run_cli, stderr_tail

from jaxdl import models, tasks
from jaxdl.config import ConfigError
from jaxdl.models.cnn import CNN
from jaxdl.models.gan import DCGAN
from jaxdl.tasks import Learned
from jaxdl.tasks.frechet import frechet_distance, penultimate, statistics
from jaxdl.tasks.gan import DISCRIMINATOR, GENERATOR, GANTask
from jaxdl.training import loop, optim
from jaxdl.training.checkpoints import Checkpoints
from jaxdl.training.writers import read_metrics

BATCH = 8


def _task(gan_loss="non_saturating", n_critic=1):
    model = DCGAN(latent_dim=4, generator_width=4, generator_blocks=2, discriminator_width=4,
                  discriminator_blocks=2, kernel_size=3, output_height=8, output_width=8,
                  output_channels=1, output_activation="tanh", leaky_relu_slope=0.2,
                  discriminator_batch_norm=True, bn_momentum=0.9)
    return GANTask(model=model, gan_loss=gan_loss, n_critic=n_critic, sample_grid=2,
                   fd_examples=16, eval_batch_size=16, classifier=None, monitor="g_loss")


TX = optax.adam(1e-2)


@functools.cache
def _setup():
    """(params, model state, optimizer state, batch): the variables' shapes from `task.init`
    filled with random numbers on the host, as compiling init itself costs seconds (the e2e
    test below runs the real init)."""
    task = _task()  # every test task has this model and optimizer
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(BATCH, 8, 8, 1)).astype(np.float32)
    shapes = jax.eval_shape(lambda x: task.init(jax.random.PRNGKey(0), x), images)
    variables = jax.tree.map(
        lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])  # variances
    params = variables.pop("params")
    opt_state = jax.jit(lambda p: task.init_optimizer(TX, p))(params)
    return params, variables, opt_state, {"inputs": images, "mask": np.ones(BATCH, np.float32)}


def _jit(fn):
    """`fn` compiled (op-by-op it would compile every primitive), its Learned as a dict."""
    return jax.jit(lambda *args: {f.name: getattr(learned, f.name)
                                  for learned in [fn(*args)]
                                  for f in dataclasses.fields(learned)})


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


ARGS = {"reduce": lambda tree: tree}


def test_each_update_changes_only_its_own_net_and_the_discriminator_learns():
    task, tx = _task(), TX
    params, state, opt_state, batch = _setup()
    assert set(params) == set(state["batch_stats"]) == set(opt_state) == {DISCRIMINATOR,
                                                                          GENERATOR}
    d_update = _jit(lambda p, s, o: task.discriminator_update(
        tx, p, s, o, batch, batch["mask"], jax.random.PRNGKey(2), **ARGS))
    g_update = _jit(lambda p, s, o: task.generator_update(
        tx, p, s, o, batch["mask"], jax.random.PRNGKey(3), **ARGS))
    d = Learned(**d_update(params, state, opt_state))
    assert _same(d.params[GENERATOR], params[GENERATOR])
    assert _same(d.model_state["batch_stats"][GENERATOR], state["batch_stats"][GENERATOR])
    assert _same(d.opt_state[GENERATOR], opt_state[GENERATOR])
    assert not _same(d.params[DISCRIMINATOR], params[DISCRIMINATOR])
    assert not _same(d.model_state["batch_stats"][DISCRIMINATOR],
                     state["batch_stats"][DISCRIMINATOR])

    g = Learned(**g_update(d.params, d.model_state, d.opt_state))
    assert _same(g.params[DISCRIMINATOR], d.params[DISCRIMINATOR])
    assert _same(g.model_state["batch_stats"][DISCRIMINATOR],
                 d.model_state["batch_stats"][DISCRIMINATOR])
    assert _same(g.opt_state[DISCRIMINATOR], d.opt_state[DISCRIMINATOR])
    assert not _same(g.params[GENERATOR], d.params[GENERATOR])
    assert not _same(g.model_state["batch_stats"][GENERATOR],
                     d.model_state["batch_stats"][GENERATOR])
    # G's gradient flows through D: a different D gives a different G gradient.
    g_before = Learned(**g_update(params, state, opt_state))
    assert not _same(g_before.grads, g.grads)

    # D alone, on one fixed batch and fixed latents, learns to separate real from generated.
    losses = [float(jnp.mean(d.values["d_loss"]))]
    for _ in range(15):
        d = Learned(**d_update(d.params, d.model_state, d.opt_state))
        losses.append(float(jnp.mean(d.values["d_loss"])))
    assert losses[-1] < 0.8 * losses[0], losses


def test_learn_runs_n_critic_discriminator_updates_per_generator_update():
    task = _task(gan_loss="hinge", n_critic=2)
    params, state, opt_state, batch = _setup()
    learned = Learned(**_jit(lambda p, s, o, b: task.learn(
        TX, p, s, o, b, b["mask"], jax.random.PRNGKey(4), **ARGS))(
        params, state, opt_state, batch))
    assert int(learned.opt_state[DISCRIMINATOR][0].count) == 2
    assert int(learned.opt_state[GENERATOR][0].count) == 1
    values = learned.values
    assert set(values) == {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v).all() for v in values.values())
    np.testing.assert_allclose(values["loss"], values["d_loss"] + values["g_loss"], rtol=1e-6)
    assert set(learned.grads) == {DISCRIMINATOR, GENERATOR}


@pytest.mark.parametrize("gan_loss", ["non_saturating", "hinge"])
def test_losses_have_their_closed_form(gan_loss):
    task = _task(gan_loss)
    real, fake = jnp.array([0.5, 3.0]), jnp.array([-0.3, 2.0])
    if gan_loss == "hinge":
        expected_d, expected_g = [0.5 + 0.7, 0.0 + 3.0], [0.3, -2.0]
        expected_scores = real
    else:
        sp = lambda v: math.log1p(math.exp(v))
        expected_d, expected_g = [sp(-0.5) + sp(-0.3), sp(-3.0) + sp(2.0)], [sp(0.3), sp(-2.0)]
        expected_scores = jax.nn.sigmoid(real)
    np.testing.assert_allclose(task.discriminator_losses(real, fake), expected_d, rtol=1e-6)
    np.testing.assert_allclose(task.generator_losses(fake), expected_g, rtol=1e-6)
    np.testing.assert_allclose(task.score(real), expected_scores, rtol=1e-6)


def test_learning_rate_of_per_net_optimizer_states():
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.25)
    params = {"a": jnp.ones(3), "b": {"w": jnp.ones((2, 2))}}
    per_net = {net: tx.init(p) for net, p in params.items()}
    assert float(optim.current_learning_rate(per_net)) == 0.25
    assert float(optim.current_learning_rate(tx.init(params))) == 0.25
    # Two injected rates inside one chain stay ambiguous.
    with pytest.raises(ValueError, match="found 2"):
        optim.current_learning_rate((tx.init(params), tx.init(params)))
    other = optax.chain(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
                        optax.inject_hyperparams(optax.sgd)(learning_rate=0.2))
    with pytest.raises(ValueError, match="found"):
        optim.current_learning_rate({"a": per_net["a"], "b": other.init(params["b"])})


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    mean, cov = statistics(features)
    assert abs(frechet_distance(mean, cov, mean, cov)) < 1e-8
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(*statistics(features), *statistics(features + shift)) == \
        pytest.approx(shift @ shift, rel=1e-9)
    # Two Gaussians with diagonal covariances: |m_a - m_b|^2 + sum (sqrt(a) - sqrt(b))^2.
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mean_a, mean_b = np.zeros(3), np.array([1.0, 1.0, 1.0])
    expected = 3.0 + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b)) == \
        pytest.approx(expected, rel=1e-9)
    # Full covariances: the textbook formula with scipy's sqrtm.
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_a, cov_b = a @ a.T, b @ b.T
    textbook = np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(np.zeros(4), cov_a, np.zeros(4), cov_b) == \
        pytest.approx(textbook, rel=1e-6)


def test_penultimate_features_are_the_input_of_the_last_dense_layer():
    model = CNN(features=(4,), kernel_size=3, pooling="max", dense_width=6, activation="relu",
                dropout_rate=0.5, batch_norm=False, bn_momentum=0.9, num_classes=3)
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(5, 8, 8, 1)).astype(np.float32)
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                             jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(1), x,
                                                                 train=False), images))
    features, logits = jax.jit(lambda v, x: (penultimate(model, v, x),
                                             model.apply(v, x, train=False)))(variables, images)
    assert features.shape == (5, 6)
    head = variables["params"]["Dense_1"]
    np.testing.assert_allclose(features @ head["kernel"] + head["bias"], logits, rtol=1e-5,
                               atol=1e-6)


DIGITS = {"data.name": "digits", "data.batch_size": 32, "data.eval_batch_size": 64,
          "model.output_height": 8, "model.output_width": 8, "model.latent_dim": 8,
          "model.generator_width": 8, "model.discriminator_width": 8,
          "task.fd_examples": 100, "task.sample_grid": 3}


def test_a_workdir_without_a_run_is_a_config_error(tmp_path):
    config = make_config("mnist_dcgan", **DIGITS, **{"task.fd_classifier": str(tmp_path)})
    dataset, _ = loop.load_splits(config)
    with pytest.raises(ConfigError, match="fd_classifier"):
        tasks.build_task(config, dataset, axis_name=None)


def _classifier_run(workdir):
    """A digits CNN run directory as the loop leaves it (config.json and an orbax checkpoint)
    at its initial weights: the Fréchet distance needs a feature space, not a good one, and
    training one here would cost the suite seconds."""
    config = make_config("digits_cnn")
    model = models.build_model(config.model.name,
                               **{k: v for k, v in config.model.items() if k != "name"})
    params = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(
        np.zeros((1, 8, 8, 1), np.float32))["params"]
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    saver = Checkpoints(workdir / "checkpoints", keep_last=1, keep_best=0, best_mode="max")
    saver.save(0, {"params": jax.device_get(params)}, {})
    saver.close()


@pytest.mark.slow
def test_mnist_dcgan_end_to_end_on_digits_with_a_classifier(tmp_path):
    """A digits CNN scores a shrunken mnist_dcgan run (pmap over 2 devices): the Fréchet
    distance is in every eval record and is the best-checkpoint monitor, and the sample
    grids are written."""
    _classifier_run(tmp_path / "classifier")
    overrides = {**DIGITS, "task.fd_classifier": str(tmp_path / "classifier"),
                 "train.duration": "6 steps", "train.eval_every": "3 steps",
                 "train.log_every": "3 steps", "checkpoint.every": "3 steps",
                 "logging.progress": False, "logging.tensorboard": False, "logging.plot": False,
                 "parallel.host_devices": 0, "parallel.num_devices": 2}
    workdir = tmp_path / "gan"
    result = run_cli("experiments.mnist_dcgan", f"--workdir={workdir}",
                     *[f"--config.{k}={v}" for k, v in overrides.items()],
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)

    records = read_metrics(workdir / "metrics.jsonl")
    evals = [r for r in records if r["split"] == "validation"]
    assert [r["step"] for r in evals] == [3, 6]
    for record in evals:
        assert math.isfinite(record["frechet_distance"]) and record["frechet_distance"] > 0
        assert {"d_loss", "g_loss", "d_real", "d_fake"} <= record.keys()
    # The last FD recomputed from the saved generator and the classifier's features: the
    # first fd_examples validation images against as many samples of the FD latents.
    from jaxdl import runs
    from jaxdl.tasks import gan
    from jaxdl.tasks.frechet import FeatureExtractor
    config = make_config("mnist_dcgan", **overrides)
    _, splits = loop.load_splits(config)
    count = config.task.fd_examples
    real = np.asarray(splits["validation"].inputs[:count])
    weights, step = runs.read_weights(workdir)
    assert step == 6
    model = models.build_model(config.model.name,
                               **{k: v for k, v in config.model.items() if k != "name"})
    # One latent per example, from fold_in(the FD key, its row) (per-example draws).
    fd_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), gan._FD_LATENTS)
    latents = jnp.stack([jax.random.normal(jax.random.fold_in(fd_key, row),
                                           (config.model.latent_dim,), jnp.float32)
                         for row in range(count)])
    fake = model.apply({"params": weights["params"], **weights["model_state"]}, latents,
                       train=False, method="generate")
    fake = np.asarray(fake)
    if config.model.output_activation == "tanh":  # [-1, 1] -> the data's [0, 1]
        fake = (fake + 1.0) / 2.0
    classifier = FeatureExtractor.from_run(tmp_path / "classifier", role="test")
    rng = jax.random.PRNGKey(0)
    real_stats = statistics(classifier(real, rng, batch_size=count))
    fake_stats = statistics(classifier(fake, rng, batch_size=count))
    assert evals[-1]["frechet_distance"] == pytest.approx(
        frechet_distance(*real_stats, *fake_stats), rel=1e-4)
    assert frechet_distance(*real_stats, *real_stats) == pytest.approx(
        0.0, abs=1e-6 * np.trace(real_stats[1]))
    train = [r for r in records if r["split"] == "train"]
    assert all(math.isfinite(r["d_loss"]) and r["learning_rate"] == pytest.approx(2e-4) for r in train)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["monitor"] == "frechet_distance" and summary["monitor_mode"] == "min"
    assert (workdir / "samples.png").stat().st_size > 0
    assert sorted(p.name for p in (workdir / "samples").iterdir()) == [
        "step_000003.png", "step_000006.png"]
