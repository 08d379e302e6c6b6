"""Bad input through the real CLI: exit status 2, one `error:` line, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUM_DEVICES = 4


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={NUM_DEVICES}"
    return subprocess.run([sys.executable, "-m", "experiments.digits_cnn", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under `path` with its bytes (None when `path` does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(path.rglob("*"))}


def assert_bad_input(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and exactly one non-empty stderr line, `error: ...` naming the problem."""
    context = f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, f"exit status {result.returncode}{context}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}{context}"
    line = lines[0]
    assert line.startswith("error:"), context
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path / "run"


def test_missing_workdir(tmp_path):
    before = sorted(tmp_path.iterdir())
    result = run_cli()
    assert_bad_input(result, "--workdir")
    assert sorted(tmp_path.iterdir()) == before


def test_unknown_key(workdir):
    result = run_cli(f"--workdir={workdir}", "--config.optimizer.lr=0.1")
    assert_bad_input(result, "optimizer.lr")
    assert not workdir.exists()


def test_wrong_type(workdir):
    result = run_cli(f"--workdir={workdir}", "--config.data.batch_size=abc")
    assert_bad_input(result, "batch_size", "abc")
    assert not workdir.exists()


def test_negative_learning_rate(workdir):
    result = run_cli(f"--workdir={workdir}", "--config.optimizer.learning_rate=-1")
    assert_bad_input(result, "config.optimizer.learning_rate", "must be")
    assert not workdir.exists()


def test_unknown_optimizer_lists_valid_names(workdir):
    from jaxdl.training import optim
    result = run_cli(f"--workdir={workdir}", "--config.optimizer.name=adamax")
    line = assert_bad_input(result, "config.optimizer.name", "adamax")
    for name in optim.OPTIMIZERS:
        assert name in line
    assert not workdir.exists()


def test_unknown_model_lists_valid_names(workdir):
    from jaxdl import models
    result = run_cli(f"--workdir={workdir}", "--config.model.name=resnet9000")
    line = assert_bad_input(result, "config.model.name", "resnet9000")
    for name in models.model_names():
        assert name in line
    assert not workdir.exists()


def test_batch_not_divisible_by_devices(workdir):
    result = run_cli(f"--workdir={workdir}", "--config.data.batch_size=66")
    assert_bad_input(result, "config.data.batch_size", "66", str(NUM_DEVICES))
    assert not workdir.exists()


def test_more_devices_than_exist(workdir):
    result = run_cli(f"--workdir={workdir}", "--config.parallel.num_devices=8")
    assert_bad_input(result, "num_devices", "8", str(NUM_DEVICES))
    assert not workdir.exists()


def test_workdir_holding_something_else(workdir):
    """Files but no jaxdl config.json: not a run to resume, so refused untouched."""
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.3}\n')
    (workdir / "notes.txt").write_text("keep me\n")
    before = snapshot(workdir)
    result = run_cli(f"--workdir={workdir}")
    line = assert_bad_input(result, "holds no jaxdl run", str(workdir))
    assert "--overwrite" not in line  # it would not empty a folder that holds no run
    assert snapshot(workdir) == before


def test_workdir_is_a_file(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("a regular file\n")
    before = snapshot(tmp_path)
    result = run_cli(f"--workdir={path}")
    assert_bad_input(result, str(path), "file")
    assert snapshot(tmp_path) == before
