"""jaxdl.trained: a run loaded back at its best, latest or a given checkpoint gives the
metrics the run reported, through the run's own preprocessing; a workdir that is not a run,
a checkpoint it lacks and inputs of the wrong shape are one-line errors."""

import io

import numpy as np
import pytest
from conftest import make_config

from jaxdl.schema import ConfigError
from jaxdl.trained import load_run
from jaxdl.training import loop

QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """30 steps of a narrow digits_cnn on one device, evaluated and saved at 10, 20 and 30. The monitor is the
    validation loss with mode 'max', so the checkpoint it keeps as best is the first one
    (the loss falls), not the latest; the strong normalisation (inputs x10) makes every
    prediction wrong that skips the run's eval-time preprocessing."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = make_config("digits_cnn", **QUIET, **{
        "train.duration": "30 steps", "train.eval_every": "10 steps",
        "train.log_every": "10 steps", "checkpoint.every": "10 steps",
        "checkpoint.keep_last": 1, "checkpoint.keep_best": 1,
        "checkpoint.monitor": "validation/loss", "checkpoint.mode": "max",
        "data.augmentation": "normalize(mean=(0.5,),std=(0.1,))",
        "model.features": (8,), "model.dense_width": 16, "parallel.num_devices": 1})
    summary = loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    return workdir, summary


def _accuracy(run, split):
    data = run.dataset(split)
    return float(np.mean(run.apply(data.inputs).argmax(-1) == data.targets))


def test_best_is_the_checkpoint_the_monitor_chose_and_predicts_its_reported_accuracy(
        digits_run):
    workdir, summary = digits_run
    run = load_run(workdir)
    assert run.step == summary["best"]["test"]["step"] == 10
    assert run.config.checkpoint.monitor == "validation/loss"
    assert run.model.dtype == np.float32  # the run's precision
    assert _accuracy(run, "test") == pytest.approx(summary["best"]["test"]["accuracy"],
                                                   abs=1e-9)


def test_latest_and_a_step_number_load_those_checkpoints(digits_run):
    workdir, summary = digits_run
    latest = load_run(workdir, "latest")
    assert latest.step == summary["steps"] == 30
    assert _accuracy(latest, "test") == pytest.approx(summary["final"]["test"]["accuracy"],
                                                      abs=1e-9)
    assert load_run(workdir, 10).step == load_run(workdir, "10").step == 10


def test_preprocess_is_the_runs_normalisation(digits_run):
    run = load_run(digits_run[0], "latest")
    x = run.dataset("test").inputs[:3]
    np.testing.assert_allclose(np.asarray(run.preprocess(x)), (x - 0.5) / 0.1, rtol=1e-6)
    # The splits are the run's own cut (the sizes config.json recorded).
    assert {k: len(v) for k, v in run.splits.items()} == {"train": 1257, "validation": 179,
                                                          "test": 361}


def test_a_workdir_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"is not a jaxdl run: it holds no config\.json"):
        load_run(tmp_path)


@pytest.mark.parametrize("checkpoint, message", [
    (20, r"no checkpoint at step 20; saved steps: 10, 30"),
    ("final", r"checkpoint='final': give 'best', 'latest' or a step number")])
def test_a_checkpoint_the_run_lacks_is_one_line(digits_run, checkpoint, message):
    with pytest.raises(ConfigError, match=message):
        load_run(digits_run[0], checkpoint)


def test_inputs_of_the_wrong_shape_name_the_expected_shape_and_scale(digits_run):
    run = load_run(digits_run[0], "latest")
    with pytest.raises(ConfigError, match=r"inputs of shape \(2, 64\): .* takes \[N, 8, 8, 1\] "
                                          r"float32 examples, scaled like its train split "
                                          r"\(0 to 1\)"):
        run.apply(np.zeros((2, 64), np.float32))


def test_evaluate_gives_the_metrics_the_run_reported(digits_run):
    workdir, summary = digits_run
    best, latest = load_run(workdir), load_run(workdir, "latest")
    for key in ("accuracy", "loss", "examples"):
        assert best.evaluate("test")[key] == pytest.approx(summary["best"]["test"][key],
                                                           rel=1e-6)
        assert latest.evaluate("validation")[key] == pytest.approx(
            summary["final"]["validation"][key], rel=1e-6)
