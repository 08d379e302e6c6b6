"""Gradual magnitude pruning (config.prune, jaxdl/training/prune.py): the Zhu & Gupta schedule,
exact sparsity per layer or over all, masks that hold through Adam with weight decay (also
end to end under both backends), bitwise resume, and the refused plans."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import make_config
from jaxdl import config as config_lib
from jaxdl import runs
from jaxdl.schema import Clock, ConfigError
from jaxdl.training import optim, prune, writers

PARAMS = {"conv": {"kernel": jax.random.normal(jax.random.PRNGKey(0), (3, 3, 2, 4)),
                   "bias": jnp.ones(4)},
          "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
          "head": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (7, 3)),
                   "bias": jnp.ones(3)}}
KERNELS = ("conv/kernel", "head/kernel")
TO_STEPS = Clock(steps_per_epoch=10, batch_size=8).steps


def _plan(total_steps=100, **given) -> prune.Prune:
    defaults = {k: f.default for k, f in prune.FIELDS.items()}
    section = ml_collections.ConfigDict({**defaults, "final_sparsity": 0.8, "end": "6 steps",
                                         "every": "2 steps", **given})
    return prune.plan(section, PARAMS, to_steps=TO_STEPS, total_steps=total_steps)


def _adamw(weight_decay=0.1):
    config = make_config("digits_cnn", **{"optimizer.name": "adamw",
                                          "optimizer.weight_decay": weight_decay,
                                          "schedule.name": "constant"})
    return optim.make_optimizer(config.optimizer, config.schedule, total_updates=100,
                                to_updates=TO_STEPS)[0]


def _train(tx, steps, params=PARAMS):
    """`steps` updates from random gradients (one compiled loop); the parameters after each."""

    def step(carry, i):
        params, state = carry
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(100), i),
                                len(jax.tree.leaves(params)))
        grads = jax.tree.unflatten(jax.tree.structure(params), [
            jax.random.normal(k, p.shape) for k, p in zip(keys, jax.tree.leaves(params))])
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    (_, state), stacked = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)),
                                                         jnp.arange(steps)))(params)
    return [jax.tree.map(lambda x: x[i], stacked) for i in range(steps)], state


def _flat(tree):
    from flax import traverse_util
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_the_schedule_is_zhu_and_gupta_s_cubic_at_fixed_steps():
    plan = _plan(initial_sparsity=0.1, final_sparsity=0.9, start="4 steps", end="16 steps",
                 every="4 steps")
    for t in (0, 3, 4, 7, 8, 12, 16, 20, 99):
        expected = (0.0 if t < 4 else 0.9 + (0.1 - 0.9) * (1 - min(t - 4, 12) / 12) ** 3)
        np.testing.assert_allclose(plan.target(t), expected, rtol=1e-12)
        np.testing.assert_allclose(plan.target(jnp.int32(t)), expected, rtol=1e-6)
    assert [t for t in range(30) if plan.due(t)] == [4, 8, 12, 16]
    # An end off the grid of `every` still prunes there, to s_f.
    off_grid = _plan(start="0 steps", end="5 steps", every="2 steps")
    assert [t for t in range(10) if off_grid.due(t)] == [0, 2, 4, 5]
    assert off_grid.target(5) == pytest.approx(0.8)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_target_sparsity_is_reached_exactly_and_only_kernels_are_pruned(scope):
    plan = _plan(scope=scope)
    assert plan.paths == KERNELS
    params, state = _train(plan.wrap(optax.adam(1e-2)), 10)
    flat = _flat(params[-1])
    zeros = {p: int(np.sum(flat[p] == 0)) for p in KERNELS}
    sizes = {p: flat[p].size for p in KERNELS}
    if scope == "layer":  # round(0.8 * n) in each layer: 58 of 72, 17 of 21
        assert zeros == {p: round(0.8 * n) for p, n in sizes.items()} == {
            "conv/kernel": 58, "head/kernel": 17}
    else:
        assert sum(zeros.values()) == round(0.8 * sum(sizes.values()))
    for path in flat:
        if path not in KERNELS:
            assert np.all(flat[path] != 0), path  # biases and BatchNorm untouched
    masks = prune.find_state(state).masks
    for mask, path in zip(masks, KERNELS):
        np.testing.assert_array_equal(np.asarray(mask), flat[path] != 0)


def test_pruned_weights_stay_exactly_zero_under_adamw_with_weight_decay():
    plan = _plan(end="4 steps", every="2 steps")
    params, state = _train(plan.wrap(_adamw()), 12)
    after_pruning = _flat(params[4])  # masks fixed from update 5 on
    last = _flat(params[-1])
    for path in KERNELS:
        pruned = after_pruning[path] == 0
        assert pruned.sum() == round(0.8 * pruned.size)
        np.testing.assert_array_equal(last[path][pruned], 0.0)
        assert np.all(last[path][~pruned] != after_pruning[path][~pruned])  # the rest trains
    # Without the mask, AdamW's update moves a zeroed weight.
    plain = _adamw()
    plain_updates, _ = jax.jit(plain.update)(jax.tree.map(jnp.ones_like, params[-1]),
                                             plain.init(params[-1]), params[-1])
    assert np.any(_flat(plain_updates)["conv/kernel"][last["conv/kernel"] == 0])


def test_pruning_is_off_by_default_and_leaves_the_optimizer_as_it_was():
    config = make_config("digits_cnn")
    assert config.prune.final_sparsity == 0.0
    assert prune.plan(config.prune, PARAMS, to_steps=TO_STEPS, total_steps=10) is None
    tx = optim.make_optimizer(config.optimizer, config.schedule, total_updates=10,
                              to_updates=TO_STEPS)[0]
    assert prune.find_state(tx.init(PARAMS)) is None
    # A run saved before config.prune existed resumes: the section is at its defaults.
    saved = config.to_dict()
    del saved["prune"]
    assert config_lib.differences(saved, config.to_dict()) == []


def test_fast_dev_run_prunes_over_its_steps_but_the_last():
    config = make_config("digits_cnn", **{"prune.final_sparsity": 0.9,
                                          "prune.start": "5 epochs", "prune.end": "30 epochs",
                                          "prune.every": "1 epoch"})
    quick = config_lib.fast_dev_run(config, 3)
    plan = prune.plan(quick.prune, PARAMS, to_steps=TO_STEPS, total_steps=3)
    assert (plan.start, plan.end, plan.every, plan.final) == (0, 2, 1, 0.9)
    assert config_lib.fast_dev_run(make_config("digits_cnn"), 3).prune.end == ""


@pytest.mark.parametrize("given, needle", [
    ({"final_sparsity": 0.5, "start": "8 steps", "end": "6 steps"},
     r"prune.start='8 steps' \(8 steps\) is after prune.end='6 steps' \(6 steps\)"),
    ({"end": "10 steps"}, r"prune.end='10 steps' \(10 steps\) leaves no fine-tuning"),
    ({"end": ""}, r"config.prune.end is required with prune.final_sparsity=0.8"),
    ({"every": "0 steps"}, r"config.prune.every='0 steps' is zero steps"),
    ({"initial_sparsity": 0.9}, r"initial_sparsity=0.9 is above final_sparsity=0.8"),
    ({"params": "classifier/**"}, r"prune.params pattern 'classifier/\*\*' matches no "
                                  r"parameter; the model's top-level paths: bn, conv, head"),
])
def test_a_plan_that_cannot_run_is_refused(given, needle):
    with pytest.raises(ConfigError, match=needle):
        _plan(total_steps=10, **given)


@pytest.mark.parametrize("key, value, needle", [
    ("prune.final_sparsity", 1.0, r"config.prune.final_sparsity.*must be in \[0, 1\)"),
    ("prune.scope", "row", r"config.prune.scope.*'row'.*layer, global"),
    ("prune.every", "often", r"config.prune.every.*cannot read duration 'often'"),
])
def test_config_refuses_bad_prune_values(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        make_config("digits_cnn", **{key: value})


def test_pruning_a_task_with_an_optimizer_per_part_or_with_ema_is_refused():
    from test_gan import _task
    from jaxdl.training import build
    plan = build.Plan(steps_per_epoch=10, total_steps=10, log_every=1, eval_every=1,
                      checkpoint_every=1, total_updates=10)
    on = {"prune.final_sparsity": 0.5, "prune.end": "4 steps", "prune.every": "2 steps"}
    example = {"inputs": np.zeros((1, 8, 8, 1), np.float32)}
    with pytest.raises(ConfigError, match="keeps an optimizer per part of the model; pruning"):
        build._prune_plan(make_config("digits_cnn", **on), _task(), example, plan)
    class OneOptimizer:
        init_optimizer = build.tasks.Task.init_optimizer
        init = staticmethod(lambda rng, x: {"params": PARAMS})

    task = OneOptimizer()
    with pytest.raises(ConfigError, match="moving average of pruned weights is not sparse"):
        build._prune_plan(make_config("digits_cnn", **on, **{"optimizer.ema_decay": 0.9}),
                          task, example, plan)


# --- end to end (slow): both backends on 4 forced devices, and a bitwise resume -----------

RUN = {"train.log_every": "2 steps", "logging.progress": False, "logging.plot": False,
       "logging.tensorboard": False, "optimizer.name": "adamw", "optimizer.weight_decay": 0.1,
       "prune.final_sparsity": 0.9, "prune.start": "1 steps", "prune.end": "5 steps",
       "prune.every": "2 steps", "train.duration": "10 steps",
       "train.eval_every": "10 steps", "checkpoint.every": "10 steps"}
CNN_KERNELS = ("Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sharded", "pmap"])
def test_masks_hold_end_to_end_under_both_backends(backend, tmp_path):
    from jaxdl.training import loop
    config = make_config("digits_cnn", **RUN, **{"parallel.backend": backend})
    summary = loop.train_and_evaluate(config, tmp_path / "run")
    state, _, step = runs.read_checkpoint(tmp_path / "run")
    assert step == 10
    params = _flat(state["params"])
    for path in CNN_KERNELS:  # exact, 5 steps of AdamW after the last pruning
        assert np.sum(params[path] == 0) == round(0.9 * params[path].size), path
        assert summary["sparsity"]["layers"][path] == pytest.approx(
            round(0.9 * params[path].size) / params[path].size)
    logged = [r for r in writers.read_metrics(tmp_path / "run" / writers.METRICS_FILENAME)
              if r["split"] == "prune"]
    assert logged and logged[-1]["nonzero_params"] == summary["sparsity"]["nonzero_params"]


@pytest.mark.slow
def test_pruning_resumes_bitwise_exactly(tmp_path):
    from jaxdl.training import loop
    from jaxdl.training.errors import RunInterrupted
    config = make_config("digits_cnn", **RUN, **{"parallel.backend": "pmap"})
    loop.train_and_evaluate(config, tmp_path / "whole")
    calls = []
    with pytest.raises(RunInterrupted):  # checkpointed after step 3: inside the pruning
        loop.train_and_evaluate(config, tmp_path / "split",
                                should_stop=lambda: calls.append(1) or len(calls) == 3)
    assert runs.read_checkpoint(tmp_path / "split")[2] == 3
    loop.train_and_evaluate(config, tmp_path / "split")
    whole, _, _ = runs.read_checkpoint(tmp_path / "whole")
    split, _, step = runs.read_checkpoint(tmp_path / "split")
    assert step == 10
    leaves = lambda tree: {jax.tree_util.keystr(path): np.asarray(leaf)
                           for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    w, s = leaves(whole), leaves(split)
    assert w.keys() == s.keys()
    masks = [key for key in w if w[key].dtype == bool]  # in the optimizer state
    assert len(masks) == len(CNN_KERNELS) and all(key.startswith("['opt_state']")
                                                   for key in masks)
    assert [np.mean(~w[key]) for key in masks] == pytest.approx([0.9] * 4, abs=0.001)
    for key in w:
        np.testing.assert_array_equal(s[key], w[key], err_msg=key)
