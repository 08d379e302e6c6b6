"""The loop's hooks: EMA of the weights, checkpoints by wall time, profiling, and the plateau
value that reaches optax through the optimizer state."""

import io
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import make_config
from jaxdl.schema import ConfigError
from jaxdl.training import checkpoints, loop, optim
from jaxdl.training.writers import read_metrics

QUIET = {"logging.progress": False, "logging.plot": False, "logging.tensorboard": False}
# digits_mlp: 19 steps per epoch; short runs of it keep these tests quick.
SHORT = {"train.duration": "3 epochs", "train.log_every": "5 steps",
         "train.eval_every": "1 epoch", "checkpoint.every": "1 epoch",
         "checkpoint.keep_last": 10}


def _config(**overrides):
    return make_config("digits_mlp", **QUIET, **overrides)


def _train(workdir, config, **kwargs):
    return loop.train_and_evaluate(config, workdir, stream=io.StringIO(), **kwargs)


def _records(workdir):
    return [{k: v for k, v in r.items() if k != "time"}
            for r in read_metrics(workdir / "metrics.jsonl")]


def _latest_state(workdir, config):
    trainer = loop.build(config)
    state, _, _ = checkpoints.Checkpoints(workdir / "checkpoints", keep_last=10, keep_best=1,
                                          best_mode="max").restore(trainer.abstract_state)
    return state


def _steps(trainer, n):
    """The trainer's state after `n` train steps, and the host parameters after each."""
    state, params = trainer.state, [trainer.backend.get_state(trainer.state).params]
    for step in range(n):
        state, _ = trainer.train_step(state, trainer.backend.put_batch(trainer.train_batch(step)))
        params.append(trainer.backend.get_state(state).params)
    return trainer.backend.get_state(state), params


# --------------------------------------------------------------------------------- EMA


def test_ema_is_the_formula_of_the_parameters_each_step():
    decay = 0.9
    trainer = loop.build(_config(**{"optimizer.ema_decay": decay, "parallel.num_devices": 1}))
    host, params = _steps(trainer, 4)
    expected = params[0]
    for p in params[1:]:
        expected = jax.tree.map(lambda e, q: decay * e + (1 - decay) * q, expected, p)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
                 host.ema_params, expected)
    assert not np.allclose(host.ema_params["Dense_0"]["kernel"], params[-1]["Dense_0"]["kernel"])


def test_a_skipped_non_finite_step_leaves_the_average_unchanged():
    trainer = loop.build(_config(**{"optimizer.ema_decay": 0.9, "guard.skip_nonfinite": True,
                                    "parallel.num_devices": 1}))
    state = trainer.state
    for step in range(2):  # the average now differs from the parameters
        state, _ = trainer.train_step(state, trainer.backend.put_batch(trainer.train_batch(step)))
    before = trainer.backend.get_state(state).ema_params
    batch = {name: (np.full_like(value, np.nan) if np.issubdtype(value.dtype, np.floating)
                    else value) for name, value in trainer.train_batch(2).items()}
    state, metrics = trainer.train_step(state, trainer.backend.put_batch(batch))
    assert trainer.backend.get_metrics(metrics["scalars"]["finite"]) == 0
    jax.tree.map(np.testing.assert_array_equal,
                 trainer.backend.get_state(state).ema_params, before)


def test_ema_is_off_by_default_and_the_state_keeps_no_average():
    trainer = loop.build(_config(**{"parallel.num_devices": 1}))
    assert trainer.abstract_state.ema_params is None


def test_ema_under_pmap_on_4_devices_equals_one_device():
    decay = 0.8
    one, _ = _steps(loop.build(_config(**{"optimizer.ema_decay": decay,
                                          "parallel.num_devices": 1})), 5)
    four, _ = _steps(loop.build(_config(**{"optimizer.ema_decay": decay,
                                           "parallel.backend": "pmap",
                                           "parallel.num_devices": 4})), 5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 one.ema_params, four.ema_params)
    assert np.asarray(four.ema_params["Dense_0"]["kernel"]).shape == (64, 128)


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_resume_with_ema_is_bitwise_exact(tmp_path):
    config = _config(**SHORT, **{"optimizer.ema_decay": 0.9,
                                 "checkpoint.monitor": "validation_ema/accuracy"})
    _train(tmp_path / "whole", config)
    polls = iter(range(10**6))
    with pytest.raises(loop.RunInterrupted, match="stopped at step 30"):
        _train(tmp_path / "cut", config, should_stop=lambda: next(polls) == 29)
    summary = _train(tmp_path / "cut", config)
    assert summary["resumed_from_step"] == 30
    assert _records(tmp_path / "cut") == _records(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["final"] == whole["final"] and summary["best"] == whole["best"]
    a, b = (_latest_state(tmp_path / name, config) for name in ("cut", "whole"))
    jax.tree.map(np.testing.assert_array_equal, a.ema_params, b.ema_params)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    # The EMA weights are evaluated and logged beside the raw ones, and monitored.
    splits = {r["split"] for r in _records(tmp_path / "whole")}
    assert {"validation", "validation_ema", "test", "test_ema"} <= splits
    assert whole["best"]["validation_ema"]["accuracy"] > 0.8


def test_monitoring_the_ema_weights_needs_ema():
    with pytest.raises(ConfigError, match=r"validation_ema/accuracy.*ema_decay=0\.0"):
        _config(**{"checkpoint.monitor": "validation_ema/accuracy"})


# ------------------------------------------------------------------ checkpoints by time


class _StepClock:
    """12 seconds of wall time per train step: the step count is read from `should_stop`,
    which the loop polls once per step."""

    def __init__(self):
        self.steps = 0

    def should_stop(self):
        self.steps += 1
        return False

    def __call__(self):
        return 12.0 * self.steps


@pytest.mark.parametrize("log_every, saved", [
    ("1 steps", [3, 6, 9, 12, 15, 18, 20]),
    # Wall time is looked at only where the loop logs (the same steps on every process).
    ("4 steps", [4, 8, 12, 16, 20])])
def test_checkpoints_by_wall_time(tmp_path, log_every, saved):
    clock = _StepClock()
    config = _config(**{"train.duration": "20 steps", "train.log_every": log_every,
                        "train.eval_every": "20 steps", "checkpoint.every": "30 s",
                        "checkpoint.keep_last": 100, "parallel.num_devices": 1})
    _train(tmp_path, config, should_stop=clock.should_stop, clock=clock)
    assert checkpoints.Checkpoints(tmp_path / "checkpoints", keep_last=100, keep_best=1,
                                   best_mode="max").steps() == saved
    derived = json.loads((tmp_path / "config.json").read_text())["derived"]
    assert derived["checkpoint_seconds"] == 30.0 and derived["checkpoint_every"] == 0


@pytest.mark.parametrize("every, seconds", [("10 minutes", 600.0), ("30 s", 30.0),
                                            ("1 hour", 3600.0), ("2.5 min", 150.0)])
def test_checkpoint_every_reads_wall_time(every, seconds):
    config = _config(**{"checkpoint.every": every})
    assert loop.Plan.from_config(config, 1000).checkpoint_seconds == seconds


def test_checkpoint_every_refuses_an_unknown_unit_in_one_line():
    with pytest.raises(ConfigError, match=r"checkpoint.every='10 parsecs'.*s\|minutes\|hours"):
        _config(**{"checkpoint.every": "10 parsecs"})


# ----------------------------------------------------------------------------- profile


def test_profile_leaves_a_trace_tensorboard_lists(tmp_path):
    config = _config(**{"train.duration": "6 steps", "train.log_every": "3 steps",
                        "train.eval_every": "6 steps", "checkpoint.every": "6 steps",
                        "logging.profile_steps": "2:4", "parallel.num_devices": 1})
    _train(tmp_path, config)
    # TensorBoard's profile plugin: <logdir>/plugins/profile/<run>/<host>.xplane.pb
    traces = list((tmp_path / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert (tmp_path / "summary.json").is_file()
    # ops.md: where the 3 traced steps' time went, the ops named by the model code
    ops = (tmp_path / "profile" / "ops.md").read_text()
    assert ops.startswith("# profile: 3 steps traced into "), ops
    rows = [line.split(" | ") for line in ops.splitlines() if line.startswith("| ")]
    sources = [row[1] for row in rows if len(row) == 5 and row[0] != "| op"]
    assert any(s.startswith("forward: ") for s in sources), ops
    assert any(s.startswith("backward: ") for s in sources), ops
    assert "| dot_general |" in ops or "| conv_general_dilated |" in ops, ops


@pytest.mark.parametrize("value, message", [
    ("3-5", "write 'START:END'"), ("5:3", "needs 1 <= START <= END"), ("0:2", "needs 1 <= START <= END")])
def test_profile_steps_malformed_is_one_line(value, message):
    with pytest.raises(ConfigError, match=f"logging.profile_steps={value!r}: {message}"):
        _config(**{"logging.profile_steps": value})


def test_profile_steps_past_the_end_is_refused_before_writing(tmp_path):
    config = _config(**{"train.duration": "6 steps", "logging.profile_steps": "5:7"})
    with pytest.raises(ConfigError, match="the run has 6 steps; END must be <= 6"):
        _train(tmp_path / "run", config)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- plateau


def _plateau_tx():
    sched = ml_collections.ConfigDict(dict(
        name="plateau", warmup="0 steps", plateau_factor=0.5, plateau_patience=1,
        plateau_cooldown=0, plateau_rtol=1e-4, plateau_accumulation=1))
    opt = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.1, weight_decay=0.0, weight_decay_mask="all",
        grad_clip_norm=0.0, grad_accum_steps=1))
    tx, _ = optim.make_optimizer(opt, sched, total_updates=100, to_updates=lambda t: 0)
    return tx


def test_a_value_observed_through_the_state_acts_as_optax_value_argument():
    """The plateau hook's way (`observe`, then an update without `value=`) and optax's own
    (`value=` at the update) give the same learning rates; steps without an observation
    (NaN) leave the plateau's count alone."""
    tx, params, grads = _plateau_tx(), {"w": jnp.ones(3)}, {"w": jnp.ones(3)}
    observed = explicit = tx.init(params)
    values = [1.0, None, 1.0, None, 1.0, 1.0, None]
    rates = []
    for value in values:
        given = jnp.float32(jnp.nan if value is None else value)
        if value is not None:
            observed = optim.observe(observed, np.float32(value))
        _, observed = tx.update(grads, observed, params)
        _, explicit = tx.update(grads, explicit, params, value=given)
        rates.append((float(optim.current_learning_rate(observed)),
                      float(optim.current_learning_rate(explicit))))
    assert [a for a, _ in rates] == [b for _, b in rates]
    assert rates[0][0] == pytest.approx(0.1) and rates[-1][0] < rates[0][0]
    # The observation is taken once: the state waits for the next one.
    is_observed = lambda x: isinstance(x, optim.ObservedState)
    waiting = [x for x in jax.tree.leaves(observed, is_leaf=is_observed) if is_observed(x)]
    assert len(waiting) == 1 and np.isnan(waiting[0].value)


def test_the_train_state_and_the_task_contract_know_nothing_of_the_plateau():
    from jaxdl.tasks.base import Task
    from jaxdl.training.state import TrainState
    import inspect
    assert "monitor" not in TrainState.__dataclass_fields__
    assert "monitor" not in inspect.signature(Task.learn).parameters
    assert isinstance(_plateau_tx(), optax.GradientTransformationExtraArgs)


def test_ema_decay_is_a_fraction():
    with pytest.raises(ConfigError, match=r"optimizer.ema_decay=1.0: must be in \[0, 1\)"):
        _config(**{"optimizer.ema_decay": 1.0})
