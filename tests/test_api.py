"""The Python API (jaxdl.api): configs from an experiment name, module or file with dict
overrides; the CLI's workdir rules as ConfigError; and, as a notebook would, a digits_cnn
trained, loaded at its best checkpoint, evaluated and used to predict, agreeing with the
run's summary.json."""

import io
import json

import numpy as np
import pytest

from conftest import REPO
from jaxdl import api

QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}


def test_a_config_takes_dict_overrides_and_a_new_optimizer_starts_from_its_defaults():
    config = api.load_config("digits_cnn", {"optimizer.name": "sgd", "data.batch_size": 32,
                                            "model.features": (8,)})
    assert config.optimizer.name == "sgd" and "b1" not in config.optimizer  # Adam's dropped
    assert config.data.batch_size == 32 and tuple(config.model.features) == (8,)
    assert config.checkpoint.monitor == "validation/accuracy"  # the rest is digits_cnn's


@pytest.mark.parametrize("reference", ["digits_mlp", "experiments.digits_mlp",
                                       str(REPO / "experiments" / "digits_mlp.py")])
def test_an_experiment_is_a_name_a_dotted_module_or_a_file(reference):
    assert api.load_config(reference).model.name == "mlp"


def test_a_users_experiment_file_outside_the_repository(tmp_path):
    path = tmp_path / "my_exp.py"
    path.write_text("from experiments.digits_mlp import get_config as base\n\n"
                    "def get_config():\n    c = base()\n    c.seed = 7\n    return c\n")
    assert api.load_config(str(path), {"data.batch_size": 16}).seed == 7


@pytest.mark.parametrize("experiment, overrides, message", [
    ("digits_cnn", {"data.no_such_key": 1}, r"config\.data\.no_such_key: unknown key"),
    ("digits_cnn", {"seed.x": 1}, r"config\.seed is a value, not a section"),
    ("no_such_experiment", {}, r"no experiment 'no_such_experiment': there is no module"),
    ("missing/file.py", {}, r"no experiment 'missing/file\.py': no such file")])
def test_bad_config_input_is_one_line(experiment, overrides, message):
    with pytest.raises(api.ConfigError, match=message):
        api.load_config(experiment, overrides)


def test_train_refuses_a_workdir_holding_something_else_and_writes_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(api.ConfigError, match=r"is not empty and holds no jaxdl run"):
        api.train("digits_cnn", QUIET, workdir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_notebook_train_load_best_evaluate_and_predict_agree_with_the_summary(tmp_path):
    """Done-when of issue 21: a digits_cnn (10 epochs, evaluated every 2) through the API;
    the best checkpoint's evaluate and predict + argmax give summary.json's test accuracy."""
    workdir = tmp_path / "run"
    summary = api.train("digits_cnn", {**QUIET, "train.duration": "10 epochs",
                                       "train.eval_every": "2 epochs",
                                       "checkpoint.every": "2 epochs"},
                        workdir=workdir, stream=io.StringIO())
    assert summary == json.loads((workdir / "summary.json").read_text())
    best_test = summary["best"]["test"]
    run = api.load(workdir)
    assert run.step == best_test["step"] == summary["best"]["validation"]["step"]
    assert api.evaluate(run, "test")["accuracy"] == pytest.approx(best_test["accuracy"],
                                                                  abs=1e-9)
    test = run.dataset("test")
    predicted = api.predict(run, test.inputs).argmax(-1)
    assert np.mean(predicted == test.targets) == pytest.approx(best_test["accuracy"], abs=1e-9)
    # A workdir is enough, and a finished run's train returns its summary without training.
    assert api.evaluate(workdir, "test", checkpoint="latest")["accuracy"] == pytest.approx(
        summary["final"]["test"]["accuracy"], abs=1e-9)
    assert api.train("digits_cnn", {**QUIET, "train.duration": "10 epochs",
                                    "train.eval_every": "2 epochs",
                                    "checkpoint.every": "2 epochs"},
                     workdir=workdir) == summary
