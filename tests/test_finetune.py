"""Transfer learning: freezing and per-group rates by parameter path (config.finetune),
frozen BatchNorm in inference mode, the staged unfreeze, init_from_reinit, and the data
options of the few-shot study (data.classes, data.examples_per_class)."""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import make_config
from jaxdl import data as data_lib
from jaxdl import runs
from jaxdl.schema import Clock, ConfigError
from jaxdl.training import finetune, optim
from jaxdl.training.hooks.warm_start import without_reinit

PARAMS = {"backbone": {"conv": {"kernel": jnp.ones((3, 3, 2, 4))}, "bn": {"scale": jnp.ones(4)}},
          "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
TO_UPDATES = Clock(steps_per_epoch=10, batch_size=8).steps


def _section(**given) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({**{k: f.default for k, f in finetune.FIELDS.items()},
                                      **given})


def _plan(**given) -> finetune.Finetune:
    return finetune.plan(_section(**given), PARAMS, to_updates=TO_UPDATES, grad_accum_steps=1)


def _tx(config_overrides, **given):
    config = make_config("digits_cnn", **config_overrides)
    plan = _plan(**given)
    make = lambda ft: optim.make_optimizer(config.optimizer, config.schedule, total_updates=100,
                                           to_updates=TO_UPDATES, finetune=ft)[0]
    return make(plan), make(None)


def _updates(tx, steps=1):
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    out = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, PARAMS)
        out.append(updates)
    return out, state


def test_globs_match_whole_names_and_double_star_spans_names():
    assert finetune.matches("head/**", "head/kernel")
    assert not finetune.matches("head/**", "header/kernel")
    assert finetune.matches("stage1_*/**", "stage1_block0/conv1/kernel")
    assert not finetune.matches("stage1_*/**", "stage2_block0/conv1/kernel")
    assert finetune.matches("**/bias", "bias") and finetune.matches("**/bias", "a/b/bias")
    assert not finetune.matches("*/bias", "a/b/bias")


def test_frozen_parameters_get_no_update_no_decay_and_no_optimizer_state():
    frozen, plain = _tx({"optimizer.name": "adamw", "optimizer.weight_decay": 0.5,
                         "optimizer.weight_decay_mask": "all", "schedule.name": "constant"},
                        trainable="head/**")
    (updates,), state = _updates(frozen)
    (reference,), _ = _updates(plain)
    for leaf in jax.tree.leaves(updates["backbone"]):
        assert not np.any(np.asarray(leaf))  # not even the decay
    np.testing.assert_array_equal(updates["head"]["kernel"], reference["head"]["kernel"])
    # Adam's two moments of the head only: the backbone's 76 floats hold no state (the
    # path scaling adds one int32 counter).
    assert (finetune.state_bytes(plain.init(PARAMS)) - finetune.state_bytes(state)
            == 2 * 4 * (3 * 3 * 2 * 4 + 4) - 4)


def test_lr_multipliers_scale_each_groups_updates():
    scaled, plain = _tx({"optimizer.name": "sgd", "schedule.name": "constant"},
                        lr_multipliers="backbone/conv/**=0.25, head/bias=0")
    (updates,), _ = _updates(scaled)
    (reference,), _ = _updates(plain)
    np.testing.assert_array_equal(updates["backbone"]["conv"]["kernel"],
                                  0.25 * reference["backbone"]["conv"]["kernel"])
    np.testing.assert_array_equal(updates["backbone"]["bn"]["scale"],
                                  reference["backbone"]["bn"]["scale"])
    assert not np.any(np.asarray(updates["head"]["bias"]))


def test_staged_parameters_wait_for_the_unfreeze_then_warm_up():
    staged, plain = _tx({"optimizer.name": "sgd", "schedule.name": "constant"},
                        trainable="head/**", unfreeze_at="2 steps", unfreeze_warmup="2 steps")
    updates, _ = _updates(staged, steps=5)
    (reference,), _ = _updates(plain)
    kernel = [float(u["backbone"]["conv"]["kernel"].ravel()[0]) for u in updates]
    full = float(reference["backbone"]["conv"]["kernel"].ravel()[0])
    np.testing.assert_allclose(kernel, [0, 0, full / 2, full, full], rtol=1e-6)
    np.testing.assert_array_equal(updates[0]["head"]["kernel"], reference["head"]["kernel"])


def test_a_pattern_that_matches_nothing_names_the_top_level_paths():
    with pytest.raises(ConfigError, match=r"'heads/\*\*' matches no parameter; the model's "
                                          r"top-level paths: backbone, head"):
        _plan(trainable="heads/**")
    with pytest.raises(ConfigError, match="lr_multipliers pattern 'stem/\\*\\*' matches no"):
        _plan(lr_multipliers="stem/**=0.1")
    with pytest.raises(ConfigError, match="matches both 'head/\\*\\*' and '\\*\\*/bias'"):
        _plan(lr_multipliers="head/**=0.1, **/bias=0.5")
    with pytest.raises(ConfigError, match="leaves no parameter frozen"):
        _plan(unfreeze_at="3 steps")


def test_the_start_log_counts_parameters_per_group_and_the_state_size():
    lines = _plan(trainable="head/**", lr_multipliers="head/bias=0.5").report(PARAMS, 10, 20)
    assert lines == ["finetune: 76 parameters frozen",
                     "finetune: 8 parameters trainable",
                     "finetune: 2 parameters trainable, head/bias (lr x0.5)",
                     "finetune: optimizer state 0.000 MiB (0.000 MiB without freezing)"]


def test_config_refuses_bad_finetune_and_reinit_values():
    with pytest.raises(ConfigError, match="lr_multipliers entry 'head/\\*\\*': write"):
        make_config("digits_cnn", **{"finetune.lr_multipliers": "head/**"})
    with pytest.raises(ConfigError, match="init_from_reinit is set but config.init_from is not"):
        make_config("digits_cnn", init_from_reinit="head/**")


class _WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train, name="frozen_bn")(nn.Dense(3)(x))
        return nn.BatchNorm(use_running_average=not train, name="live_bn")(x)


def test_frozen_batch_norm_runs_in_inference_mode_under_jit():
    model = _WithBatchNorm()
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5)) * 3 + 1
    variables = model.init(jax.random.PRNGKey(1), x, train=False)

    @jax.jit
    def train_apply(variables, x):
        with finetune.inference_batch_norm(frozenset({"frozen_bn"})):
            return model.apply(variables, x, train=True, mutable=["batch_stats"])

    _, state = train_apply(variables, x)
    _, unfrozen = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before, after = variables["batch_stats"], state["batch_stats"]
    for name in ("mean", "var"):
        np.testing.assert_array_equal(after["frozen_bn"][name], before["frozen_bn"][name])
        assert not np.array_equal(unfrozen["batch_stats"]["frozen_bn"][name],
                                  before["frozen_bn"][name])
        assert not np.array_equal(after["live_bn"][name], before["live_bn"][name])


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batch_stats_picks_the_frozen_layers_or_none(freeze):
    model = _WithBatchNorm()
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5)) * 3 + 1
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    plan = finetune.plan(_section(trainable="live_bn/**", freeze_batch_stats=freeze),
                         variables["params"], to_updates=TO_UPDATES, grad_accum_steps=1)
    assert plan.inference_modules(thawed=False) == (
        frozenset({"Dense_0", "frozen_bn"}) if freeze else frozenset())
    _, state = plan.phased(lambda: model.apply(variables, x, train=True,
                                               mutable=["batch_stats"]), jnp.zeros((), jnp.int32))
    kept = np.array_equal(state["batch_stats"]["frozen_bn"]["mean"],
                          variables["batch_stats"]["frozen_bn"]["mean"])
    assert kept == freeze


def _abstract(params, model_state=None):
    shapes = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32),
                                       tree)
    return types.SimpleNamespace(params=shapes(params), model_state=shapes(model_state or {}))


def test_init_from_reinit_drops_the_paths_named_and_refuses_other_shape_changes():
    target = {"body": {"kernel": np.zeros((4, 4))}, "head": {"kernel": np.zeros((4, 10))}}
    loaded = {"params": {"body": {"kernel": np.ones((4, 4))},
                         "head": {"kernel": np.ones((4, 5))}}, "model_state": {}}
    kept, dropped = without_reinit(loaded, _abstract(target), ["head/**"])
    assert set(kept["params"]) == {"body"}
    assert dropped == ["head/kernel (4, 5) -> (4, 10)"]
    with pytest.raises(ConfigError, match=r"params 'head/kernel' has shape \(4, 5\) in the "
                                          r"checkpoint but \(4, 10\) in this model"):
        without_reinit(loaded, _abstract(target), [])
    with pytest.raises(ConfigError, match="init_from_reinit pattern 'fc/\\*\\*' matches no"):
        without_reinit(loaded, _abstract(target), ["fc/**"])


def test_keep_classes_relabels_every_split_and_subsamples_nest():
    labels = np.repeat(np.arange(4), 30)
    dataset = data_lib.Dataset(name="toy", features=np.arange(120.0)[:, None], targets=labels,
                               num_classes=4, description="",
                               predefined_splits={"test": (np.zeros((8, 1)),
                                                           np.arange(8) % 4)})
    kept = data_lib.keep_classes(dataset, (3, 1))
    assert kept.num_classes == 2 and sorted(set(kept.targets)) == [0, 1]
    np.testing.assert_array_equal(kept.features[kept.targets == 0, 0], np.arange(90.0, 120.0))
    np.testing.assert_array_equal(kept.predefined_splits["test"][1], [1, 0, 1, 0])
    with pytest.raises(ValueError, match="each must appear once and be a class"):
        data_lib.keep_classes(dataset, (4,))
    few = data_lib.per_class_subsample(labels, 3, seed=7)
    more = data_lib.per_class_subsample(labels, 10, seed=7)
    assert np.bincount(labels[few]).tolist() == [3, 3, 3, 3]
    assert set(few) <= set(more)
    assert not np.array_equal(few, data_lib.per_class_subsample(labels, 3, seed=8))


# --- end to end (slow): bitwise frozen, and resume across the unfreeze boundary ------------

RUN = {"model.batch_norm": True, "train.log_every": "2 steps", "logging.progress": False,
       "logging.plot": False, "logging.tensorboard": False, "finetune.trainable": "Dense_1/**"}
FROZEN_BN = ("BatchNorm_0", "BatchNorm_1")


def _initial(config):
    from jaxdl import tasks
    from jaxdl.training import build
    from jaxdl.training.state import create_state
    dataset, splits = build.load_splits(config)
    task = tasks.build_task(config, dataset, axis_name=None, train_split=splits["train"])
    state = create_state(task, optax.identity(), config.seed, splits["train"].inputs[:1])
    return jax.device_get({"params": state.params, "model_state": state.model_state})


def _flat(tree):
    from flax import traverse_util
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _assert_frozen(before, after, *, changed=("Dense_1/",)):
    for part in ("params", "model_state"):
        b, a = _flat(before[part]), _flat(after[part])
        for key in b:
            if key.startswith(changed):
                assert not np.array_equal(a[key], b[key]), key
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sharded", "pmap"])
def test_frozen_parameters_and_their_batch_stats_are_bitwise_unchanged(backend, tmp_path):
    from jaxdl.training import loop
    config = make_config("digits_cnn", **RUN, **{
        "train.duration": "4 steps", "train.eval_every": "4 steps", "checkpoint.every": "4 steps",
        "parallel.backend": backend, "optimizer.weight_decay": 0.1})
    loop.train_and_evaluate(config, tmp_path / "run")
    after, step = runs.read_weights(tmp_path / "run")
    assert step == 4
    assert set(_flat(after["model_state"])) >= {f"batch_stats/{b}/mean" for b in FROZEN_BN}
    _assert_frozen(_initial(config), after)


@pytest.mark.slow
def test_resume_across_the_unfreeze_boundary_is_bitwise_exact(tmp_path):
    from jaxdl.training import loop
    from jaxdl.training.errors import RunInterrupted
    config = make_config("digits_cnn", **RUN, **{
        "train.duration": "6 steps", "train.eval_every": "6 steps", "checkpoint.every": "6 steps",
        "finetune.unfreeze_at": "3 steps", "finetune.unfreeze_warmup": "2 steps",
        "finetune.lr_multipliers": "Conv_0/**=0.1", "parallel.backend": "pmap"})
    loop.train_and_evaluate(config, tmp_path / "whole")
    calls = []
    with pytest.raises(RunInterrupted):  # checkpointed after step 2, before the boundary
        loop.train_and_evaluate(config, tmp_path / "split",
                                should_stop=lambda: calls.append(1) or len(calls) == 2)
    early, step = runs.read_weights(tmp_path / "split")
    assert step == 2
    initial = _initial(config)
    _assert_frozen(initial, early)  # before the thaw: backbone and its statistics as they were
    loop.train_and_evaluate(config, tmp_path / "split")
    whole, _ = runs.read_weights(tmp_path / "whole")
    split, step = runs.read_weights(tmp_path / "split")
    assert step == 6
    for part in ("params", "model_state"):
        w, s = _flat(whole[part]), _flat(split[part])
        assert w.keys() == s.keys()
        for key in w:
            np.testing.assert_array_equal(s[key], w[key], err_msg=key)
    # After the thaw everything trained, statistics included.
    _assert_frozen(initial, whole, changed=("",))


def test_examples_per_class_is_refused_for_a_regression_dataset():
    from jaxdl.training import build
    config = make_config("digits_mlp", **{"data.name": "diabetes", "data.examples_per_class": 5})
    with pytest.raises(ConfigError, match="examples_per_class needs classes; 'diabetes' is a "
                                          "regression dataset"):
        build.load_splits(config)


def test_a_task_with_an_optimizer_per_part_is_refused():
    from test_gan import _task
    from jaxdl.training import build
    config = make_config("digits_cnn", **{"finetune.trainable": "generator/**"})
    plan = build.Plan(steps_per_epoch=10, total_steps=10, log_every=1, eval_every=1,
                      checkpoint_every=1, total_updates=10)
    with pytest.raises(ConfigError, match="keeps an optimizer per part of the model"):
        build._finetune_plan(config, _task(), {"inputs": np.zeros((1, 8, 8, 1), np.float32)},
                             plan)
