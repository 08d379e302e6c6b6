"""The analysis tools' compiled math on tiny models, without a trained run: attacks keep
their bounds, integrated gradients are complete, filter normalisation matches a hand
computation, landscapes hit their anchor points, Deep Dream raises its objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.analysis import dream, landscape, saliency
from jaxdl.tasks import adversarial
from jaxdl.models import build_model

PIXELS = (0.0, 1.0)


@pytest.fixture(scope="module")
def tiny_cnn():
    """A CNN with one BatchNorm conv layer on 4x4 inputs and random weights (small, so
    every compile is quick): (logits_fn(x), apply_fn, variables, x, y)."""
    model = build_model("cnn", features=(3,), kernel_size=3, pooling="max", dense_width=8,
                        activation="relu", dropout_rate=0.0, batch_norm=True, bn_momentum=0.9,
                        num_classes=5)
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 4, 4, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    y = jnp.arange(6) % 5

    def apply_fn(v, inputs, **kwargs):
        return model.apply(v, inputs, train=False, **kwargs)

    return (lambda inputs: apply_fn(variables, inputs)), apply_fn, variables, x, y


def test_fgsm_at_epsilon_zero_returns_the_inputs_exactly(tiny_cnn):
    logits_fn, _, _, x, y = tiny_cnn
    for norm in adversarial.NORMS:
        out = adversarial.fgsm(logits_fn, x, y, eps=0.0, norm=norm, pixel_range=PIXELS)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_fgsm_on_a_linear_model_is_the_hand_computed_sign_step():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    x = jnp.asarray([[0.5, 0.5, 0.02, 0.98]], jnp.float32)
    y = jnp.asarray([1])
    out = adversarial.fgsm(lambda z: z @ w, x, y, eps=0.1, norm="linf", pixel_range=PIXELS)
    # d CE / d x = W (softmax - onehot); the step follows its sign, then clips to [0, 1].
    p = jax.nn.softmax(x @ w)
    grad = (p - jax.nn.one_hot(y, 3)) @ w.T
    np.testing.assert_allclose(out, np.clip(x + 0.1 * np.sign(grad), 0, 1), atol=1e-7)


@pytest.mark.parametrize("norm,eps,targeted", [("linf", 0.1, False), ("l2", 0.5, True)])
def test_pgd_stays_inside_the_ball_and_the_pixel_range(tiny_cnn, norm, eps, targeted):
    logits_fn, _, _, x, y = tiny_cnn
    targets = (y + 1) % 5 if targeted else None
    out = adversarial.pgd(logits_fn, x, y, eps=eps, step_size=0.4 * eps, steps=7, norm=norm,
                          pixel_range=PIXELS, rng=jax.random.PRNGKey(3), targets=targets)
    delta = np.asarray(out - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta ** 2).sum(1))
    assert size.max() <= eps * (1 + 1e-5) and size.max() > 0.5 * eps
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_pgd_raises_the_loss_and_a_targeted_attack_lowers_the_targets_loss(tiny_cnn):
    import optax
    logits_fn, _, _, x, y = tiny_cnn
    targets = (y + 3) % 5

    def loss(inputs, labels):
        return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            logits_fn(inputs), labels)))

    kw = dict(eps=0.2, step_size=0.05, steps=10, norm="linf", pixel_range=PIXELS)
    away = adversarial.pgd(logits_fn, x, y, **kw)
    toward = adversarial.pgd(logits_fn, x, y, targets=targets, **kw)
    assert loss(away, y) > loss(x, y)
    assert loss(toward, targets) < loss(x, targets)


def test_integrated_gradients_are_complete(tiny_cnn):
    logits_fn, _, _, x, y = tiny_cnn

    def score(inputs):
        return jnp.take_along_axis(logits_fn(inputs), y[:, None], 1)[:, 0]

    baseline = jnp.zeros_like(x)
    attributions = saliency.integrated_gradients(score, x, baseline, steps=512)
    total = np.asarray(attributions).reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(total, np.asarray(score(x) - score(baseline)), atol=1e-3)


def test_gradient_and_smoothgrad_on_a_linear_score():
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5)), jnp.float32)
    x = jnp.ones((2, 5))
    score = lambda inputs: jnp.sum(inputs * w, axis=1)  # noqa: E731
    np.testing.assert_allclose(saliency.gradient(score, x), w, rtol=1e-6)
    # The gradient of a linear score is the same everywhere: noise changes nothing.
    np.testing.assert_allclose(saliency.smoothgrad(score, x, jax.random.PRNGKey(0), samples=5,
                                                   noise=0.3), w, rtol=1e-5)


def test_filter_normalisation_by_hand():
    conv = np.arange(1.0, 1 + 3 * 3 * 2 * 4).reshape(3, 3, 2, 4).astype(np.float32)
    dense = np.asarray([[3.0, 0.0], [4.0, 1.0]], np.float32)  # filters of norm 5 and 1
    params = {"Conv_0": {"kernel": conv, "bias": np.ones(4, np.float32)},
              "Dense_0": {"kernel": dense},
              "BatchNorm_0": {"scale": np.ones(2, np.float32), "bias": np.zeros(2, np.float32)}}
    direction = landscape.filter_normalised_direction(jax.random.PRNGKey(0), params)
    d = np.asarray(direction["Dense_0"]["kernel"])
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), [5.0, 1.0], rtol=1e-6)
    dc = np.asarray(direction["Conv_0"]["kernel"])
    for out in range(4):  # each output channel's filter keeps its weights' norm
        np.testing.assert_allclose(np.linalg.norm(dc[..., out]),
                                   np.linalg.norm(conv[..., out]), rtol=1e-6)
    # Only the norm per filter is set: the direction is the Gaussian draw, rescaled.
    key = jax.random.split(jax.random.PRNGKey(0), 5)
    leaves = jax.tree_util.tree_leaves(params)
    order = [i for i, leaf in enumerate(leaves) if leaf.shape == dense.shape][0]
    raw = np.asarray(jax.random.normal(key[order], dense.shape))
    np.testing.assert_allclose(d, raw / np.linalg.norm(raw, axis=0) * [5.0, 1.0], rtol=1e-5)
    for zero in (direction["Conv_0"]["bias"], direction["BatchNorm_0"]["scale"],
                 direction["BatchNorm_0"]["bias"]):
        assert not np.any(np.asarray(zero))


def test_line_and_plane_hit_their_anchor_points(tiny_cnn):
    _, apply_fn, variables, x, y = tiny_cnn
    import optax

    def metrics(v):
        logits = apply_fn(v, x)
        return {"loss": jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))}

    other = jax.tree_util.tree_map(lambda a: a * 0.5, variables)
    values = landscape.line(metrics, other, variables, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(values["loss"][[0, 2]],
                               [float(metrics(other)["loss"]), float(metrics(variables)["loss"])],
                               rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(2))
    directions = [{"params": landscape.filter_normalised_direction(k, variables["params"]),
                   "batch_stats": jax.tree_util.tree_map(jnp.zeros_like,
                                                         variables["batch_stats"])}
                  for k in keys]
    grid = landscape.plane(metrics, variables, directions, [-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5])
    assert grid["loss"].shape == (3, 3)
    np.testing.assert_allclose(grid["loss"][1, 1], float(metrics(variables)["loss"]), rtol=1e-6)
    assert len(np.unique(np.round(grid["loss"], 6))) > 1


def test_layer_names_and_the_dream_raises_its_objective(tiny_cnn):
    _, apply_fn, variables, x, _ = tiny_cnn
    names = dream.layer_names(apply_fn, variables, x[:1])
    assert names == ["Conv_0", "BatchNorm_0", "Dense_0", "Dropout_0", "Dense_1"]
    assert dream.layer_output(apply_fn, variables, x[:1], "Conv_0").shape == (1, 4, 4, 3)
    objective = dream.layer_objective(apply_fn, variables, "Conv_0", channel=2)
    start = x[:1] * 0.2 + 0.4
    out = dream.dream(objective, start, jax.random.PRNGKey(0), octaves=2, octave_scale=1.5,
                      steps=5, step_size=0.05, jitter=1, tv_weight=0.01, pixel_range=PIXELS)
    assert out.shape == start.shape
    assert float(objective(out)) > float(objective(start))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert dream.octave_sizes(28, 28, 3, 1.4) == [(14, 14), (20, 20), (28, 28)]


def test_an_image_grid_can_be_laid_out_in_rows_of_given_length(tmp_path):
    from PIL import Image

    from jaxdl import plots
    images = np.zeros((6, 8, 8, 1), np.float32)
    sizes = {}
    for columns in (None, 6):
        path = plots.image_grid_png(images, [""] * 6, tmp_path / f"{columns}.png",
                                    columns=columns)
        with Image.open(path) as image:
            sizes[columns] = image.size
    assert sizes[None][0] < 2 * sizes[None][1]  # 3 x 2, near square
    assert sizes[6][0] > 3 * sizes[6][1]  # one row of 6


def test_overwrite_clears_a_runs_analyses_with_it(tmp_path):
    from jaxdl import runs
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / runs.ANALYSIS_DIRNAME / "saliency").mkdir(parents=True)
    run_dir = runs.RunDir(tmp_path)
    assert run_dir.foreign_entries() == []
    run_dir.clear()
    assert list(tmp_path.iterdir()) == []
