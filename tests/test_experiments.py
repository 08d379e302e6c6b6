"""Every experiment end to end through the CLI a user types, with a shrunken config."""

import json
import math
import os

import numpy as np
import pytest

from conftest import REPO, data_path, run_cli, stderr_tail
from jaxdl.training.writers import read_metrics

EXPERIMENTS = ["experiments.digits_cnn", "experiments.digits_mlp"]
SHRINK = ["--config.train.duration=3 epochs", "--config.train.eval_every=1 epoch",
          "--config.train.log_every=10 steps", "--config.logging.progress=False"]


def _values(records):
    """The metric values of a metrics.jsonl, without the wall-clock time."""
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.mark.parametrize("module", EXPERIMENTS)
@pytest.mark.slow
def test_experiment_runs_end_to_end(module, tmp_path, repo):
    workdir = tmp_path / "run"
    relative = os.path.relpath(workdir, repo)  # as `make run` passes it: relative to the repo
    result = run_cli(module, f"--workdir={relative}", *SHRINK,
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "final test: accuracy" in result.stdout
    for name in ("config.json", "env.json", "metrics.jsonl", "summary.json", "curves.png"):
        assert (workdir / name).stat().st_size > 0, name
    assert list((workdir / "tensorboard").iterdir()), "no TensorBoard event file"
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]

    config = json.loads((workdir / "config.json").read_text())
    assert config["config"]["train"]["duration"] == "3 epochs"
    steps_per_epoch = config["derived"]["steps_per_epoch"]
    assert config["derived"]["total_steps"] == 3 * steps_per_epoch

    env = json.loads((workdir / "env.json").read_text())
    assert env["packages"]["jax"] and env["device_count"] == 4

    records = read_metrics(workdir / "metrics.jsonl")
    assert {r["split"] for r in records} == {"train", "validation", "test"}
    assert all({"step", "split"} <= r.keys() for r in records)
    train = [r for r in records if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) and r["learning_rate"] >= 0 for r in train)
    evals = [r["step"] for r in records if r["split"] == "validation"]
    assert evals == [steps_per_epoch * k for k in (1, 2, 3)]
    # The test split chooses nothing: evaluated once, at the end.
    assert [r["step"] for r in records if r["split"] == "test"] == [3 * steps_per_epoch]

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 3 * steps_per_epoch
    assert summary["final"]["test"]["examples"] == config["num_examples"]["test"]
    # "best" is chosen on validation; the test figure there is the best checkpoint's.
    best_step = summary["best"]["validation"]["step"]
    assert summary["best"]["test"]["step"] == best_step
    validation = {r["step"]: r["accuracy"] for r in records if r["split"] == "validation"}
    assert summary["best"]["validation"]["accuracy"] == max(validation.values())
    if best_step == 3 * steps_per_epoch:
        assert summary["best"]["test"]["accuracy"] == summary["final"]["test"]["accuracy"]
    assert summary["train_examples_per_second"] > 0


@pytest.mark.slow
def test_same_config_gives_identical_metrics(tmp_path):
    """Reproducible on CPU: dropout on, two runs, the same values in every logged line."""
    runs = []
    for name in ("a", "b"):
        result = run_cli("experiments.digits_mlp", f"--workdir={tmp_path / name}", *SHRINK,
                         f"--compilation_cache_dir={tmp_path / 'cache'}")
        assert result.returncode == 0, stderr_tail(result.stderr)
        runs.append(_values(read_metrics(tmp_path / name / "metrics.jsonl")))
    assert len(runs[0]) > 5
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_default_experiment_reaches_its_target(tmp_path):
    """What `make run` runs, unshrunk: the documented >= 98% test accuracy."""
    result = run_cli("experiments.digits_cnn", f"--workdir={tmp_path / 'run'}",
                     "--config.logging.progress=False",
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"]["test"]["accuracy"] >= 0.98, summary["final"]


MY_MODEL = '''
import flax.linen as nn


class TinyMLP(nn.Module):
    width: int
    num_classes: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.num_classes)(x)
'''


@pytest.mark.slow
def test_a_model_from_the_users_own_file_trains(tmp_path, monkeypatch):
    """The README's bring-your-own-model example, through the CLI, without editing jaxdl."""
    (tmp_path / "my_models.py").write_text(MY_MODEL)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    result = run_cli("experiments.digits_mlp", f"--workdir={tmp_path / 'run'}", *SHRINK,
                     "--config.model={'name': 'my_models:TinyMLP', 'width': 32, "
                     "'num_classes': 10}", f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["model"] == {"name": "my_models:TinyMLP", "width": 32,
                                         "num_classes": 10}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"]["test"]["accuracy"] > 0.5


def _stratified_validation_count(source: str, fraction: float) -> int:
    """The validation size a stratified split gives: each class's share `n * fraction`
    rounded on its own (largest remainder between validation and train, a tie to validation,
    listed first), so the total is not `fraction * n` rounded once: MNIST's 5,000 / 60,000
    gives 5,002 (8 of its 10 classes round up)."""
    from jaxdl import data
    counts = np.bincount(data.load_source(source).targets)
    quotas = counts * fraction
    return int(sum(math.floor(q) + (q - math.floor(q) >= 0.5) for q in quotas))


MNIST_FILES = data_path("mnist")


@pytest.mark.skipif(not MNIST_FILES.is_dir(),
                    reason=f"MNIST IDX files absent ({MNIST_FILES}; set JAXDL_DATA_DIR)")
def test_mnist_cnn_runs_end_to_end_on_the_idx_files(tmp_path):
    result = run_cli("experiments.mnist_cnn", f"--workdir={tmp_path / 'run'}",
                     "--config.train.duration=40 steps", "--config.train.eval_every=40 steps",
                     "--config.train.log_every=20 steps", "--config.checkpoint.every=40 steps",
                     "--config.logging.progress=False",
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    validation = _stratified_validation_count("mnist", 5000 / 60000)
    assert config["num_examples"] == {"train": 60000 - validation, "validation": validation,
                                      "test": 10000}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"]["test"]["examples"] == 10000
    assert summary["final"]["test"]["accuracy"] > 0.8  # 40 steps of SGD already learn a lot
