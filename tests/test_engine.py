"""The step and the loop's pieces: learning, backend equivalence, rng streams, eval padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_config
from jaxdl.training import loop


def train_losses(trainer, steps):
    state, losses = trainer.state, []
    for step in range(steps):
        state, metrics = trainer.train_step(state, trainer.backend.put_batch(
            trainer.train_batch(step)))
        sums = trainer.backend.get_metrics(metrics)["sums"]
        losses.append(float(sums["loss"] / sums["count"]))
    return state, np.array(losses)


def test_loss_decreases():
    trainer = loop.build(make_config(**{"parallel.num_devices": 1}))
    _, losses = train_losses(trainer, 40)
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.3 * losses[0], losses


# Tolerance: the backends sum the batch in a different order (per device, then across),
# so float32 results agree to rounding, not bitwise.
RTOL, ATOL = 1e-4, 1e-5


def test_pmap_sharded_and_single_device_agree():
    """Same global batch -> same loss curve, parameters and BatchNorm statistics."""
    # BatchNorm on, to test its sync; dropout off (tests/test_rng_streams.py has it on).
    common = {"model.dropout_rate": 0.0, "model.batch_norm": True,
              "optimizer.name": "momentum", "optimizer.learning_rate": 0.05,
              "optimizer.momentum": 0.9, "schedule.name": "constant", "schedule.warmup": "0 steps"}
    results = {}
    for backend, devices in (("sharded", 1), ("sharded", 4), ("pmap", 4)):
        trainer = loop.build(make_config(**common, **{"parallel.backend": backend,
                                                      "parallel.num_devices": devices}))
        assert trainer.backend.num_devices == devices
        state, losses = train_losses(trainer, 8)
        results[backend, devices] = (losses, trainer.backend.get_state(state))
    ref_losses, ref_state = results["sharded", 1]
    assert ref_losses[-1] < ref_losses[0]
    for key, (losses, state) in results.items():
        np.testing.assert_allclose(losses, ref_losses, rtol=RTOL, atol=ATOL, err_msg=str(key))
        for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=str(key))
        bn = jax.tree.leaves(state.model_state)
        assert len(bn) == 4  # mean and var of two BatchNorm layers
        for got, want in zip(bn, jax.tree.leaves(ref_state.model_state)):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=str(key))


def test_dropout_in_the_train_step_changes_with_the_step():
    """With lr 0 the same batch gives a different loss at the next step only via dropout."""
    config = make_config(**{"model.dropout_rate": 0.5, "optimizer.learning_rate": 0.0,
                            "parallel.backend": "pmap"})
    losses = []
    for _ in range(2):  # a rerun draws the same masks
        trainer = loop.build(config)
        batch = trainer.backend.put_batch(trainer.train_batch(0))
        state, run_losses = trainer.state, []
        for _ in range(3):
            state, metrics = trainer.train_step(state, batch)
            sums = trainer.backend.get_metrics(metrics)["sums"]
            run_losses.append(float(sums["loss"]))
        losses.append(run_losses)
    assert len(set(losses[0])) == 3, losses
    assert losses[0] == losses[1]


@pytest.mark.parametrize("backend", ["sharded", "pmap"])
def test_eval_counts_every_example_once(backend):
    """361 test examples in batches of 128: the padded last batch adds nothing."""
    trainer = loop.build(make_config(**{"parallel.backend": backend}))
    split = trainer.splits["test"]
    assert len(split) % trainer.config.data.eval_batch_size != 0
    result = trainer.evaluate(trainer.state, "test")
    assert result["examples"] == len(split)
    host = trainer.backend.get_state(trainer.state)
    logits = trainer.task.model.apply({"params": host.params, **host.model_state},
                                      split.inputs, train=False)
    expected = float(np.mean(np.argmax(logits, -1) == split.targets))
    assert result["accuracy"] == pytest.approx(expected, abs=1e-6)
    # The loss too: the padding repeats row 0, whose loss is never zero (its accuracy may be).
    log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64), -1)
    expected_loss = float(-np.mean(np.take_along_axis(
        np.asarray(log_probs), split.targets[:, None].astype(int), -1)))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_step_is_compiled_once_and_rejects_another_shape():
    trainer = loop.build(make_config(**{"parallel.num_devices": 1}))
    batch = {k: v[:32] for k, v in trainer.train_batch(0).items()}
    with pytest.raises(ValueError, match=r"compiled once for the batch .*inputs.*float32\[64, 8, 8, 1\].* got .*float32\[32, 8, 8, 1\]"):
        trainer.train_step(trainer.state, trainer.backend.put_batch(batch))


def test_bf16_computes_in_bf16_with_float32_params():
    trainer = loop.build(make_config(**{"precision": "bf16", "parallel.num_devices": 1}))
    state, losses = train_losses(trainer, 3)
    host = trainer.backend.get_state(state)
    assert {leaf.dtype for leaf in jax.tree.leaves(host.params)} == {np.dtype("float32")}
    logits = trainer.task.model.apply({"params": host.params}, trainer.train_batch(0)["inputs"],
                                      train=False)
    assert logits.dtype == jnp.bfloat16
    assert np.isfinite(losses).all()


def test_out_of_memory_names_the_sizes_that_decide_it():
    trainer = loop.build(make_config(**{"parallel.num_devices": 4}))
    error = jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4096 bytes.")
    with pytest.raises(loop.OutOfMemoryError, match="per-device batch 16 of a global 64") as raised:
        with loop.explain_out_of_memory(trainer.config, trainer.abstract_state, 4):
            raise error
    message = str(raised.value)
    assert "per-device batch 16 of a global 64" in message
    params = sum(x.size * 4 for x in jax.tree.leaves(trainer.abstract_state.params))
    assert f"parameters {params / 2**20:.1f} MiB" in message
    assert "grad_accum_steps" in message and "bf16" in message
    # Other runtime errors pass through untouched.
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        with loop.explain_out_of_memory(trainer.config, trainer.abstract_state, 4):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")


@pytest.mark.slow
def test_augmentation_runs_in_the_train_step_only():
    """lr 0 and no dropout: the loss of a step that flips every image equals the plain
    model's loss on flipped images; evaluation does not flip."""
    common = {"model.dropout_rate": 0.0, "optimizer.learning_rate": 0.0,
              "parallel.num_devices": 1}
    flipped = loop.build(make_config(**common, **{"data.augmentation": "horizontal_flip(p=1.0)"}))
    plain = loop.build(make_config(**common))
    batch = plain.train_batch(0)
    mirror = {**batch, "inputs": batch["inputs"][:, :, ::-1]}

    def step_loss(trainer, host_batch):
        _, metrics = trainer.train_step(trainer.state, trainer.backend.put_batch(host_batch))
        sums = trainer.backend.get_metrics(metrics)["sums"]
        return float(sums["loss"] / sums["count"])

    def fresh(**extra):  # a step donates the state: one step per trainer
        return loop.build(make_config(**common, **extra))

    augmented = step_loss(flipped, batch)
    assert augmented == pytest.approx(step_loss(plain, mirror), rel=1e-6)
    # At initialisation both sit near ln 10, yet differ far beyond float rounding.
    assert augmented != pytest.approx(step_loss(fresh(), batch), rel=1e-6)
    flipped, plain = fresh(**{"data.augmentation": "horizontal_flip(p=1.0)"}), fresh()
    assert flipped.evaluate(flipped.state, "test") == plain.evaluate(plain.state, "test")
