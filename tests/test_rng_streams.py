"""Random draws do not depend on the device count or the backend (issue 12, item 3).

Every random stream a model sees (dropout, a stream it declares, augmentation, mixup) is
keyed by (seed, step, the example's row in the global batch), so one run on 1 device, on 4
under pmap or on a 4-device mesh gives the same numbers to float rounding, and a run
resumed on another device count continues the same trajectory.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_config, override
from experiments import digits_cnn
from jaxdl import config as config_lib
from jaxdl.models import layers
from jaxdl.tasks.base import model_rngs, rng_streams
from jaxdl.training import checkpoints, loop
from jaxdl.training.state import TrainState
from jaxdl.training.step import example_rows, step_rng

# The layouts sum the batch in another order, so they agree to rounding, not bitwise.
# (With the old device-folded dropout keys, digits_cnn's first losses differed by ~5%.)
RTOL, ATOL = 1e-5, 1e-6
# A plain optimizer and schedule: the comparison is about the draws, not the optimizer.
PLAIN = {"optimizer.name": "momentum", "optimizer.learning_rate": 0.05,
         "optimizer.momentum": 0.9, "schedule.name": "constant", "schedule.warmup": "0 steps"}
DROPOUT = {**PLAIN, "model.dropout_rate": 0.5}


@functools.cache
def _trainer(backend: str, devices: int, overrides: tuple = tuple(DROPOUT.items())):
    """digits_cnn built for a layout, and its initial state on the host (the train step
    donates the state it is given, so every use places a fresh copy). Cached: compiling is
    what these tests spend their time on."""
    trainer = loop.build(make_config(**dict(overrides), **{
        "parallel.backend": backend, "parallel.num_devices": devices}))
    assert trainer.backend.num_devices == devices
    return trainer, trainer.backend.get_state(trainer.state)


def _losses(trainer, state, steps, first=0):
    """(state, the train loss of each step) after `steps` steps from step `first`."""
    losses = []
    for step in range(first, first + steps):
        state, metrics = trainer.train_step(state, trainer.backend.put_batch(
            trainer.train_batch(step)))
        sums = trainer.backend.get_metrics(metrics)["sums"]
        losses.append(float(sums["loss"] / sums["count"]))
    return state, np.array(losses)


def _run(backend, devices, steps, overrides=tuple(DROPOUT.items())):
    trainer, initial = _trainer(backend, devices, overrides)
    state, losses = _losses(trainer, trainer.backend.put_state(initial), steps)
    return losses, trainer.backend.get_state(state).params


def _assert_same_runs(runs):
    (ref_layout, (reference, ref_params)), *others = runs.items()
    for layout, (losses, params) in others:
        np.testing.assert_allclose(losses, reference, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{layout} vs {ref_layout}")
        for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=str(layout))


def test_dropout_gives_the_same_run_on_any_device_count_and_backend():
    _assert_same_runs({layout: _run(*layout, steps=5)
                       for layout in (("sharded", 1), ("pmap", 4), ("sharded", 4))})


@pytest.mark.slow
def test_augmentation_and_mixup_give_the_same_run_on_any_device_count_and_backend():
    overrides = tuple({**DROPOUT, "task.mixup_alpha": 0.4,
                       "data.augmentation": "random_crop(pad=1,pad_mode=zeros)"
                                            "+gaussian_noise(std=0.1)"}.items())
    _assert_same_runs({layout: _run(*layout, steps=4, overrides=overrides)
                       for layout in (("sharded", 1), ("pmap", 4))})


def _make_user_config(name, fields, **overrides):
    """digits_cnn's config training the model `user_models.<name>` with `fields`."""
    config = digits_cnn.get_config()
    config.model = {"name": f"user_models:{name}", **fields}
    return config_lib.validate(override(config, {**PLAIN, **overrides}))


@pytest.mark.parametrize("name, fields", [
    ("DropoutMLP", {"width": 32, "num_classes": 10, "dropout_rate": 0.5}),
    ("NoisyMLP", {"width": 32, "num_classes": 10, "noise_std": 0.5}),
], ids=["stock-nn.Dropout", "declared-noise-stream"])
@pytest.mark.slow
def test_a_user_models_draws_do_not_depend_on_the_layout(name, fields):
    """A researcher's model with stock nn.Dropout, or drawing from a stream it declares
    (`rng_streams = ("noise",)`, per example through layers.ExampleKeys)."""
    runs = {}
    for backend, devices in (("sharded", 1), ("pmap", 4)):
        trainer = loop.build(_make_user_config(name, fields, **{
            "parallel.backend": backend, "parallel.num_devices": devices}))
        state, losses = _losses(trainer, trainer.state, 4)
        runs[backend, devices] = losses, trainer.backend.get_state(state).params
    _assert_same_runs(runs)


def test_a_run_resumed_on_another_device_count_continues_the_same_trajectory(tmp_path):
    """3 steps on 4 devices under pmap, a checkpoint, 3 more on 2 devices: the losses are
    those of 6 uninterrupted steps on one device."""
    reference, _ = _run("sharded", 1, steps=6)
    first, initial = _trainer("pmap", 4)
    state, before = _losses(first, first.backend.put_state(initial), 3)
    saved = checkpoints.Checkpoints(tmp_path / "checkpoints", keep_last=1, keep_best=0,
                                    best_mode="max")
    saved.save(3, first.backend.get_state(state), {"note": "test"})
    second, _ = _trainer("pmap", 2)
    host_state, _, step = saved.restore(second.abstract_state)
    saved.close()
    assert step == 3 and int(host_state.step) == 3
    _, after = _losses(second, second.backend.put_state(host_state), 3, first=3)
    np.testing.assert_allclose(np.concatenate([before, after]), reference, rtol=RTOL,
                               atol=ATOL)


def _masks_under_pmap(steps, devices=4, per_device=2):
    """Dropout masks as the train step draws them under pmap: the step's key, and each
    device's rows of the global batch. [step, global row, units]."""
    state = TrainState(step=jnp.zeros((), jnp.int32), params={}, model_state={}, opt_state=(),
                       rng=jax.random.PRNGKey(7))

    def masks(step):
        rows = example_rows({"mask": jnp.ones(per_device)}, "data")
        with layers.per_example_rngs(rows):
            return nn.Dropout(0.5, deterministic=False).apply(
                {}, jnp.ones((per_device, 32)), rngs={"dropout": step_rng(
                    state.replace(step=step))})

    run = jax.pmap(masks, axis_name="data", devices=jax.devices()[:devices])
    return np.stack([np.asarray(run(jnp.full((devices,), step))).reshape(devices * per_device, -1)
                     for step in steps])


def test_dropout_masks_differ_across_steps_and_examples_and_not_with_the_layout():
    first = _masks_under_pmap([0, 1, 2])
    flat = first.reshape(-1, first.shape[-1]) != 0
    assert len({row.tobytes() for row in flat}) == len(flat), "a mask repeated"
    np.testing.assert_array_equal(first, _masks_under_pmap([0, 1, 2]))
    # 8 rows on 4 devices, on 2, or on 1: the same masks.
    np.testing.assert_array_equal(first, _masks_under_pmap([0, 1, 2], devices=2, per_device=4))
    np.testing.assert_array_equal(first, _masks_under_pmap([0, 1, 2], devices=1, per_device=8))
    # One example per device is still an example, not a batch sharing one mask.
    np.testing.assert_array_equal(first[:, :4], _masks_under_pmap([0, 1, 2], per_device=1))


def test_a_declared_stream_reaches_the_model_and_an_undeclared_one_does_not():
    """`rng_streams` names what make_rng may draw from; a stream the model does not declare
    still fails, as flax says."""
    import user_models
    noisy = user_models.NoisyMLP(width=4, num_classes=2, noise_std=1.0)
    assert rng_streams(noisy) == ("dropout", "noise")
    keys = model_rngs(noisy, jax.random.PRNGKey(0))
    assert not np.array_equal(jax.random.key_data(keys["dropout"]),
                              jax.random.key_data(keys["noise"]))
    plain = user_models.DropoutMLP(width=4, num_classes=2, dropout_rate=0.5)
    assert rng_streams(plain) == ("dropout",)
    x = jnp.ones((3, 5))
    variables = noisy.init({"params": jax.random.PRNGKey(1), **keys}, x, train=False)
    with pytest.raises(Exception, match="noise"):
        noisy.apply(variables, x, train=True, rngs={"dropout": keys["dropout"]})


def test_dropout_on_an_input_without_the_batch_first_is_refused_before_the_run():
    config = _make_user_config("FeaturesFirstDropout", {"width": 32, "num_classes": 10},
                               **{"parallel.num_devices": 1})
    with pytest.raises(config_lib.ConfigError, match=r"FeaturesFirstDropout.*Dropout at '.*' draws per "
                                          r"example along the first axis.*32 entries.*batch "
                                          r"64: keep the batch axis first"):
        loop.build(config)
