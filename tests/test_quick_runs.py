"""Quick runs and running from anywhere: `--fast_dev_run` (config.fast_dev_run), and
`python -m jaxdl.run REFERENCE [--import MODULE]` for stock experiments, a user's own file
and a model the user's module registers by name."""

import io
import json
import os
import sys
import time

import pytest

from conftest import REPO, cli_env, make_config, stderr_tail
from test_experiments import MY_MODEL
from jaxdl import api, app, config as config_lib, data as data_lib, run as run_tool

QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}
QUIET_FLAGS = [f"--config.{k}=False" for k in QUIET]


def test_fast_dev_run_cuts_the_experiment_to_a_smoke_run_and_keeps_the_rest():
    config = make_config("digits_cnn", **{"early_stopping.patience": 3,
                                          "logging.profile_steps": "5:6"})
    quick = config_lib.fast_dev_run(config, 3)
    assert quick.train.duration == quick.train.eval_every == quick.train.log_every == "3 steps"
    assert quick.checkpoint.every == "3 steps"
    assert quick.data.eval_limit == 1 and quick.data.eval_limit_at_end
    assert quick.early_stopping.patience == 0 and quick.logging.profile_steps == ""
    for section in ("model", "task", "optimizer", "schedule"):
        assert quick[section].to_dict() == config[section].to_dict()
    assert quick.data.batch_size == config.data.batch_size


def test_eval_limit_must_not_be_negative():
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.eval_limit"):
        make_config("digits_cnn", **{"data.eval_limit": -1})


def test_api_train_needs_a_workdir_unless_fast_dev_run():
    with pytest.raises(api.ConfigError, match=r"workdir is required"):
        api.train("digits_cnn", QUIET)


@pytest.mark.parametrize("argv, expected", [
    (["digits_cnn", "--workdir", "w"], ("digits_cnn", [], ["--workdir", "w"])),
    (["x.py", "--import", "a,b", "--workdir=w", "--import=c", "--config.seed=1"],
     ("x.py", ["a", "b", "c"], ["--workdir=w", "--config.seed=1"])),
    (["--workdir", "w", "digits_cnn"], (None, [], ["--workdir", "w", "digits_cnn"]))])
def test_run_splits_reference_imports_and_the_experiments_flags(argv, expected):
    assert run_tool.split_args(argv) == expected


def test_run_refuses_a_missing_reference_or_module_in_one_line(capsys, tmp_path):
    for argv, message in ([["jaxdl.run", "--workdir=w"], "name the experiment first"],
                          [["jaxdl.run", "digits_cnn", "--import", "no_such_module_x"],
                           "--import no_such_module_x: no module 'no_such_module_x'"],
                          [["jaxdl.run", str(tmp_path / "none.py")], "no such file"]):
        with pytest.raises(SystemExit, match="^2$"):
            run_tool.main(argv)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_load_config_takes_a_file_for_the_benchmarks_too(tmp_path):
    """benchmarks/step_throughput reads experiments through app.load_config: a user's own
    file with --config overrides times as a stock one does."""
    path = tmp_path / "mine.py"
    path.write_text("from experiments.digits_cnn import get_config\n")
    config = app.load_config(str(path), ["--config.precision=bf16", "--config.data.batch_size=32"])
    assert config.precision == "bf16" and config.data.batch_size == 32


# test_experiments' user model, registered by name as a user's module would.
MY_MODELS = (MY_MODEL + "\n\nfrom jaxdl import models\n\n"
             "models.register('my_tiny_mlp')(TinyMLP)\n")


@pytest.mark.slow
def test_run_from_another_directory_with_a_registered_user_model(tmp_path):
    """From a folder outside the repository: a stock experiment with the user's model
    (registered by name in my_models.py) as a fast dev run kept in --workdir, then the
    user's own experiment file as a fast dev run whose files are not kept."""
    import subprocess

    (tmp_path / "my_models.py").write_text(MY_MODELS)
    (tmp_path / "my_exp.py").write_text(
        "from experiments.digits_mlp import get_config as stock\n\n"
        "def get_config():\n    c = stock()\n    c.seed = 3\n    return c\n")
    env = {**cli_env(), "TMPDIR": str(tmp_path)}
    common = [*QUIET_FLAGS, f"--compilation_cache_dir={tmp_path / 'cache'}"]

    def jaxdl_run(*args):
        return subprocess.run([sys.executable, "-m", "jaxdl.run", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)

    result = jaxdl_run("digits_mlp", "--import=my_models", "--fast_dev_run=2",
                       f"--workdir={tmp_path / 'run'}",
                       "--config.model={'name': 'my_tiny_mlp', 'width': 16, "
                       "'num_classes': 10}", *common)
    assert result.returncode == 0, stderr_tail(result.stderr)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["final"]["validation"]["examples"] == 128
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["model"]["name"] == "my_tiny_mlp"

    result = jaxdl_run(str(tmp_path / "my_exp.py"), "--fast_dev_run", *common)  # bare: 1 step
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "(removed at exit: pass --workdir to keep them)" in result.stdout
    assert not list(tmp_path.glob("jaxdl-fast-dev-run-*"))  # TMPDIR: nothing left


def test_a_bare_fast_dev_run_flag_is_one_step_and_a_given_count_is_kept():
    from jaxdl import app
    assert app._bare_fast_dev_run(["prog", "--fast_dev_run", "--workdir=w"]) == [
        "prog", f"--fast_dev_run={app.FAST_DEV_RUN_STEPS}", "--workdir=w"]
    assert app._bare_fast_dev_run(["prog", "--fast_dev_run"])[-1] == "--fast_dev_run=1"
    for kept in (["prog", "--fast_dev_run", "5"], ["prog", "--fast_dev_run=3"]):
        assert app._bare_fast_dev_run(kept) == kept


# --- --fast_dev_run on every experiment ---------------------------------------------------

EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py")
                     if p.stem != "__init__")
# TFDS catalog datasets (CIFAR-10, ImageNet) are not on this machine and cannot be
# downloaded: test_tfds.py runs those experiments on tfds mock data instead.
TFDS = {"cifar10_resnet20", "cifar10_resnet56", "imagenet_resnet50"}
# What an experiment needs besides its config here: mnist_dcgan's Frechet distance needs a
# classifier run (its docstring's first command), so it monitors the generator loss, as
# its config says to without one; the rainfall run's eval batch (366 days) does not split
# over the suite's 4 forced devices.
OVERRIDES = {"mnist_dcgan": {"checkpoint.monitor": "validation/g_loss",
                             "checkpoint.mode": "min"},
             "fulda_rainfall_runoff_lstm": {"parallel.num_devices": 1}}
# Experiments that learn from a finished run (task.teacher): the experiment whose fast dev
# run, kept in a folder of its own, serves as that run.
TEACHERS = {"mnist_distillation": "mnist_cnn"}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_on_every_experiment(experiment, tmp_path, monkeypatch,
                                         tmp_path_factory):
    if experiment in TFDS:
        pytest.skip(f"{experiment}: its TFDS data is not prepared here (no download)")
    config = api.load_config(experiment, OVERRIDES.get(experiment))
    if data_lib.source_location(config.data.name) is None:  # sklearn's ship in the package
        pytest.skip(f"{experiment}: the {config.data.name} files are not on this machine "
                    "(set $JAXDL_DATA_DIR)")
    overrides = {**QUIET, **OVERRIDES.get(experiment, {})}
    if experiment in TEACHERS:
        teacher = tmp_path_factory.mktemp("teacher") / "run"
        api.train(TEACHERS[experiment], QUIET, workdir=teacher, fast_dev_run=2,
                  stream=io.StringIO())
        overrides["task.teacher"] = str(teacher)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the run's temporary folder goes
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    start = time.process_time()
    summary = api.train(experiment, overrides, fast_dev_run=2, stream=io.StringIO())
    seconds = time.process_time() - start
    assert summary["steps"] == 2
    for split, metrics in summary["final"].items():
        assert 0 < metrics["examples"] <= config.data.eval_batch_size, split
    assert list(tmp_path.iterdir()) == []  # no file kept
    print(f"{experiment}: {seconds:.1f} CPU s")


def test_a_run_saved_before_eval_limit_existed_still_resumes():
    """config.json of a run from before data.eval_limit: the new keys at their defaults are
    no change of config (anything else still is)."""
    current = make_config("digits_cnn").to_dict()
    saved = {**current, "data": {k: v for k, v in current["data"].items()
                                 if k not in ("eval_limit", "eval_limit_at_end")}}
    assert config_lib.differences(saved, current) == []
    changed = {**current, "data": {**current["data"], "eval_limit": 2}}
    assert config_lib.differences(saved, changed) == ["data.eval_limit: None -> 2"]
