"""Early stopping, the non-finite guard, init_from and a damaged latest checkpoint."""

import io
import json
import shutil

import jax
import numpy as np
import pytest

from conftest import make_config
from jaxdl import runs
from jaxdl.schema import ConfigError
from jaxdl.training import checkpoints, loop
from jaxdl.training.writers import read_metrics

QUIET = {"logging.progress": False, "logging.plot": False, "logging.tensorboard": False}


def _train(workdir, **overrides):
    stream = io.StringIO()
    summary = loop.train_and_evaluate(make_config(**QUIET, **overrides), workdir, stream=stream)
    return summary, stream.getvalue()


def test_early_stopping_restores_the_best_checkpoint_and_evaluates_it(tmp_path):
    summary, log = _train(tmp_path, **{"early_stopping.patience": 2,
                                       "train.eval_every": "1 epoch"})
    stopped = summary["early_stopping"]
    steps_per_epoch = json.loads((tmp_path / "config.json").read_text())["derived"][
        "steps_per_epoch"]
    assert stopped["stopped_at_step"] < 760, "it should stop before the 40 epochs end"
    assert stopped["stopped_at_step"] - stopped["best_step"] == 2 * steps_per_epoch
    records = read_metrics(tmp_path / "metrics.jsonl")
    validation = {r["step"]: r["accuracy"] for r in records if r["split"] == "validation"}
    assert stopped["best_value"] == max(validation.values()) == validation[stopped["best_step"]]
    # The final metrics are those of the restored best weights, not of the last step.
    assert summary["final"]["validation"]["accuracy"] == validation[stopped["best_step"]]
    assert f"epoch {stopped['best_epoch']:g}" in log and "is restored" in log
    assert stopped["best_step"] in checkpoints.Checkpoints(
        tmp_path / "checkpoints", keep_last=1, keep_best=0, best_mode="max").steps()


def test_patience_needs_a_kept_best_checkpoint():
    from jaxdl.config import ConfigError
    with pytest.raises(ConfigError, match="keep_best"):
        make_config(**{"early_stopping.patience": 2, "checkpoint.keep_best": 0})


DIVERGE = {"optimizer.name": "sgd", "optimizer.learning_rate": 1e30, "schedule.name": "constant",
           "schedule.warmup": "0 steps", "train.duration": "2 epochs"}


@pytest.mark.slow
def test_a_non_finite_step_stops_the_run_naming_it_and_keeps_good_checkpoints(tmp_path):
    # Checkpointing every step, a diverging run must stop at its first bad step and save
    # nothing from that step on.
    with pytest.raises(loop.NonFiniteError, match=r"non-finite training at step (\d+)") as e:
        _train(tmp_path / "b", **DIVERGE, **{"checkpoint.every": "1 steps"})
    bad_step = int(e.value.args[0].split("step ")[1].split(":")[0])
    assert "the last finite step was" in str(e.value)
    saved = checkpoints.Checkpoints(tmp_path / "b" / "checkpoints", keep_last=1, keep_best=0,
                                    best_mode="max")
    assert saved.steps() and max(saved.steps()) < bad_step
    trainer = loop.build(make_config(**QUIET, **DIVERGE))
    state, _, _ = saved.restore(trainer.abstract_state)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))


def _replay(config, steps, params=None):
    """The state after train steps 0..steps-1 of `config`'s batches from its initial state
    (with `params` in place of the initial parameters), and each step's finiteness flag."""
    trainer = loop.build(config)
    state = trainer.state
    if params is not None:
        state = trainer.backend.put_state(
            trainer.backend.get_state(state).replace(params=params))
    finite = []
    for step in range(steps):
        state, metrics = trainer.train_step(state, trainer.backend.put_batch(
            trainer.train_batch(step)))
        finite.append(bool(trainer.backend.get_metrics(metrics)["scalars"]["finite"]))
    return trainer.backend.get_state(state), finite


def test_skip_nonfinite_stops_a_run_that_only_survives_by_skipping(tmp_path):
    """A learning rate that destroys the model used to finish "successfully" at chance
    accuracy with every step skipped; more than max_skipped_fraction of a window stops it."""
    with pytest.raises(loop.NonFiniteError,
                       match=r"[45] of the 5 steps up to step 5 were non-finite and skipped"):
        _train(tmp_path, **DIVERGE, **{"guard.skip_nonfinite": True,
                                       "train.log_every": "5 steps"})
    assert not (tmp_path / "summary.json").exists()


class _HostBackend:
    """Hands `_Window` the host metrics it is given, as a backend hands fetched ones."""

    def get_metrics(self, metrics):
        return metrics


def _step_metrics(finite: bool):
    return {"sums": {"loss": 2.0, "count": 4.0},
            "scalars": {"grad_norm": 1.0, "param_norm": 3.0, "finite": float(finite)}}


@pytest.mark.parametrize("skipped, raises", [(0, False), (2, False), (3, True)])
def test_the_skipped_share_of_a_window_is_bounded(skipped, raises):
    window = loop._Window()
    for step in range(1, 5):
        window.add(step, _step_metrics(finite=step > skipped))
    take = lambda: window.take(_HostBackend(), skip_nonfinite=True, step=4,
                               max_skipped_fraction=0.5)
    if raises:
        with pytest.raises(loop.NonFiniteError, match="3 of the 4 steps up to step 4"):
            take()
    else:
        out = take()
        assert out["skipped_steps"] == skipped and out["loss"] == pytest.approx(0.5)


def test_overflowing_parameters_make_a_step_non_finite():
    """A finite loss and gradient with a learning rate that overflows the weights: the step
    is skipped (it used to be applied, and every later step then skipped)."""
    trainer = loop.build(make_config(**{
        "guard.skip_nonfinite": True, "parallel.num_devices": 1, "optimizer.name": "sgd",
        "optimizer.learning_rate": float("inf"), "schedule.name": "constant",
        "schedule.warmup": "0 steps"}))
    before = trainer.backend.get_state(trainer.state)
    state, metrics = trainer.train_step(
        trainer.state, trainer.backend.put_batch(trainer.train_batch(0)))
    fetched = trainer.backend.get_metrics(metrics)
    assert np.isfinite(fetched["sums"]["loss"]) and np.isfinite(fetched["scalars"]["grad_norm"])
    assert fetched["scalars"]["finite"] == 0
    after = trainer.backend.get_state(state)
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)):
        np.testing.assert_array_equal(a, b)


def test_summary_json_is_strict_json_when_a_metric_is_not_finite(tmp_path):
    def refuse(constant):
        raise ValueError(f"bare {constant} in summary.json")

    summary = {"final": {"validation": {"loss": float("nan"), "accuracy": 0.1}}}
    assert runs.finite_or_null(summary) == {"final": {"validation": {"loss": None,
                                                                      "accuracy": 0.1}}}
    _train(tmp_path, **{"train.duration": "1 epoch", "train.eval_every": "1 epoch"})
    json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)


def test_a_skipped_step_leaves_the_state_unchanged():
    """Parameters, optimizer state and BatchNorm statistics (README: guard.skip_nonfinite)."""
    trainer = loop.build(make_config(**{"guard.skip_nonfinite": True, "model.batch_norm": True,
                                        "parallel.num_devices": 1}))
    assert jax.tree.leaves(trainer.abstract_state.model_state), "no BatchNorm statistics"
    clean = trainer.train_batch(0)
    poisoned = {**clean, "inputs": clean["inputs"].copy()}
    poisoned["inputs"][:5] = np.nan  # a few bad rows: the batch statistics turn NaN
    before = trainer.backend.get_state(trainer.state)
    state, metrics = trainer.train_step(trainer.state, trainer.backend.put_batch(poisoned))
    after = trainer.backend.get_state(state)
    assert trainer.backend.get_metrics(metrics)["scalars"]["finite"] == 0
    assert int(after.step) == int(before.step) + 1
    for a, b in zip(jax.tree.leaves((before.params, before.opt_state, before.model_state)),
                    jax.tree.leaves((after.params, after.opt_state, after.model_state))):
        np.testing.assert_array_equal(a, b)
    # The same step on the clean batch does move the statistics: the comparison can fail.
    state, metrics = trainer.train_step(state, trainer.backend.put_batch(clean))
    moved = trainer.backend.get_state(state).model_state
    assert trainer.backend.get_metrics(metrics)["scalars"]["finite"] == 1
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after.model_state),
                                                        jax.tree.leaves(moved)))


@pytest.mark.slow
def test_init_from_loads_matching_weights_and_reports_the_rest(tmp_path):
    _train(tmp_path / "source", **{"train.duration": "1 epoch"})
    loaded, _ = checkpoints.read_weights(tmp_path / "source")
    source = loaded["params"]
    # Same model: every array loads, and training starts from them.
    same = {"train.duration": "1 epoch", "init_from": str(tmp_path / "source")}
    summary, log = _train(tmp_path / "same", **same)
    assert set(source) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1"}
    assert "loaded 8 arrays" in log and "missing" not in log and "mismatched" not in log
    # The run's final weights are the source's trained on: replay its steps from them.
    replayed, _ = _replay(make_config(**QUIET, **same), summary["steps"], params=source)
    final, _ = checkpoints.read_weights(tmp_path / "same")
    for a, b in zip(jax.tree.leaves(final["params"]), jax.tree.leaves(replayed.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # A narrower dense layer: refused, naming the first array of another shape, before
    # anything is written; named in init_from_reinit, it starts afresh and the rest loads.
    narrower = {"train.duration": "1 epoch", "model.dense_width": 64,
                "init_from": str(tmp_path / "source")}
    with pytest.raises(ConfigError, match=r"params 'Dense_0/bias' has shape \(128,\) in the "
                                          r"checkpoint but \(64,\) in this model"):
        _train(tmp_path / "refused", **narrower)
    assert not (tmp_path / "refused").exists()
    _, log = _train(tmp_path / "other", **narrower,
                    init_from_reinit="Dense_0/**, Dense_1/kernel")
    assert "loaded 5 arrays" in log
    assert ("initialised afresh Dense_0/bias (128,) -> (64,), Dense_0/kernel (256, 128) -> "
            "(256, 64), Dense_1/kernel (128, 10) -> (64, 10)") in log
    # What loaded is the source's; what did not is the fresh initialisation.
    trainer = loop.build(make_config(**{"model.dense_width": 64}))
    fresh = trainer.backend.get_state(trainer.state).params
    merged = trainer.backend.get_state(loop._initial_weights(
        trainer, "source", loaded, 19, lambda message: None)).params
    for layer in ("Conv_0", "Conv_1"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(merged[layer][name], source[layer][name])
    np.testing.assert_array_equal(merged["Dense_1"]["bias"], source["Dense_1"]["bias"])
    for layer, name in (("Dense_0", "kernel"), ("Dense_0", "bias"), ("Dense_1", "kernel")):
        np.testing.assert_array_equal(merged[layer][name], fresh[layer][name])


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    _train(tmp_path, **{"train.duration": "2 epochs", "checkpoint.every": "1 epoch"})
    saved = checkpoints.Checkpoints(tmp_path / "checkpoints", keep_last=2, keep_best=0,
                                    best_mode="max")
    first, latest = saved.steps()
    saved.close()
    for path in (tmp_path / "checkpoints" / str(latest) / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")  # a half-written disk block
    trainer = loop.build(make_config())
    state, _, step = checkpoints.Checkpoints(
        tmp_path / "checkpoints", keep_last=2, keep_best=0, best_mode="max").restore(
        trainer.abstract_state)
    assert step == first
    assert int(state.step) == first


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_reduce_on_plateau_follows_the_monitored_eval_metric(tmp_path):
    """Patience counts evaluations of checkpoint.monitor: the learning rate may change only
    on the step right after an evaluation, and only by the plateau factor."""
    factor, lr = 0.5, 3e-3
    _train(tmp_path, **{"schedule.name": "plateau", "schedule.warmup": "0 steps",
                        "schedule.plateau_factor": factor, "schedule.plateau_patience": 0,
                        "schedule.plateau_accumulation": 1, "schedule.plateau_cooldown": 0,
                        "checkpoint.monitor": "validation/loss", "checkpoint.mode": "min",
                        "train.duration": "25 epochs", "train.eval_every": "1 epoch",
                        "train.log_every": "1 steps"})
    records = read_metrics(tmp_path / "metrics.jsonl")
    evals = {r["step"] for r in records if r["split"] == "validation"}
    rates = [(r["step"], r["learning_rate"]) for r in records if r["split"] == "train"]
    assert rates[0][1] == pytest.approx(lr)
    changes = [(step, prev, now) for (_, prev), (step, now) in zip(rates, rates[1:])
               if now != prev]
    assert changes, "validation loss rises on digits after ~15 epochs: lr must drop"
    for step, prev, now in changes:
        assert step - 1 in evals, f"lr changed at step {step}, not right after an evaluation"
        assert now == pytest.approx(prev * factor)
