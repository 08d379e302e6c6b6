"""The test split never chooses anything: evaluated once at the end (and at the checkpoint
chosen on validation), never maximised over, never monitored."""

import json

import numpy as np
import pytest

from conftest import make_config
from jaxdl.config import ConfigError
from jaxdl.training import loop
from jaxdl.training.writers import read_metrics

QUIET = {"logging.progress": False, "logging.plot": False, "logging.tensorboard": False}
# A constant schedule, so a run stopped at step k holds the weights a longer run had at k.
# A large learning rate makes validation accuracy go up and down between evaluations.
SETUP = {"schedule.name": "constant", "schedule.warmup": "0 steps",
         "optimizer.learning_rate": 0.05, "train.eval_every": "5 steps",
         "train.log_every": "5 steps", "checkpoint.every": "0 steps",
         "checkpoint.keep_best": 1, "checkpoint.keep_last": 1, **QUIET}


def test_test_split_is_reported_at_the_best_validation_checkpoint(tmp_path):
    summary = loop.train_and_evaluate(
        make_config("digits_cnn", **{"train.duration": "60 steps", **SETUP}), tmp_path / "a")
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "test"] == [60]
    validation = {r["step"]: r["accuracy"] for r in records if r["split"] == "validation"}
    assert len(validation) == 12
    best_step = summary["best"]["validation"]["step"]
    assert validation[best_step] == max(validation.values())
    assert summary["best"]["test"]["step"] == best_step
    # Independently: a run that ends at the best step holds the same weights there.
    short = loop.train_and_evaluate(
        make_config("digits_cnn", **{"train.duration": f"{best_step} steps", **SETUP}),
        tmp_path / "b")
    assert short["final"]["test"]["accuracy"] == pytest.approx(
        summary["best"]["test"]["accuracy"], abs=1e-6)
    assert short["final"]["test"]["loss"] == pytest.approx(
        summary["best"]["test"]["loss"], rel=1e-5)
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["best"] == summary["best"]


def test_test_split_every_evaluation_is_an_option_that_chooses_nothing(tmp_path):
    summary = loop.train_and_evaluate(
        make_config("digits_cnn", **{"train.duration": "20 steps",
                                     "train.test_every_eval": True, **SETUP}), tmp_path / "a")
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "test"] == [5, 10, 15, 20]
    assert summary["best"]["test"]["step"] == summary["best"]["validation"]["step"]


def test_monitoring_the_test_split_is_refused(tmp_path):
    config = make_config("digits_cnn", **{"checkpoint.monitor": "test/accuracy", **QUIET})
    with pytest.raises(ConfigError, match="the test split never chooses anything"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("mode, values", [("max", [0.5, 0.9, 0.9, 0.7]),
                                          ("min", [0.9, 0.2, 0.2, 0.4])])
def test_a_tie_keeps_the_earlier_best_checkpoint_the_run_chose(tmp_path, mode, values):
    """The run's best step is the first to reach the best value (a later equal one is no
    improvement); that checkpoint must be the one kept, or restoring it fails."""
    from jaxdl.training.checkpoints import Checkpoints
    saved = Checkpoints(tmp_path, keep_last=1, keep_best=1, best_mode=mode)
    for step, value in enumerate(values, start=1):
        saved.save(step, {"w": np.full(2, step, np.float32)}, {"step": step}, monitor=value)
    assert saved.steps() == [2, 4]
    saved.close()
