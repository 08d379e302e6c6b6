"""Runs that never lose work: kill a run anywhere, rerun the command, get the same numbers."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, run_cli, stderr_tail
from jaxdl.training.writers import read_metrics

# Cadences deliberately out of step: a kill lands between logs, evals and checkpoints.
CONFIG = ["--config.train.duration=12 epochs", "--config.train.log_every=7 steps",
          "--config.train.eval_every=2 epochs", "--config.checkpoint.every=50 steps",
          "--config.checkpoint.keep_last=2", "--config.logging.progress=False",
          "--config.logging.plot=False", "--config.logging.tensorboard=False"]


def _command(workdir, cache, *extra):
    return [sys.executable, "-m", "experiments.digits_cnn", f"--workdir={workdir}",
            f"--compilation_cache_dir={cache}", *CONFIG, *extra]


def _logged(workdir):
    path = workdir / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


def _checkpoint_steps(workdir):
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def _kill_when(workdir, cache, condition, sig=signal.SIGKILL, timeout=120, extra=()):
    """Starts the run and sends `sig` the moment `condition(workdir)` holds."""
    proc = subprocess.Popen(_command(workdir, cache, *extra), cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if condition(workdir):
                proc.send_signal(sig)
                break
        except (OSError, ValueError):  # a file caught mid-write: look again
            pass
        time.sleep(0.002)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _values(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def _final_params(workdir):
    from experiments import digits_cnn
    from jaxdl import config as config_lib
    from jaxdl.training import checkpoints, loop
    config = config_lib.validate(digits_cnn.get_config())
    trainer = loop.build(config)
    ckpt = checkpoints.Checkpoints(workdir / "checkpoints", keep_last=2, keep_best=0,
                                   best_mode="max")
    state, _, step = ckpt.restore(trainer.abstract_state)
    ckpt.close()
    return step, state


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    result = subprocess.run(_command(root / "run", root / "cache"), cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, stderr_tail(result.stderr)
    return root / "run"


@pytest.mark.slow
def test_sigkill_at_three_points_then_resume_is_bitwise_identical(reference, tmp_path):
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    total = json.loads((reference / "summary.json").read_text())["steps"]

    def mid_training(w):  # an arbitrary step, before the first checkpoint
        return len(_logged(w)) >= 4

    def after_checkpoint(w):  # right after the second checkpoint is committed
        return len(_checkpoint_steps(w)) >= 2

    eval_steps = {r["step"] for r in _logged(reference) if r["split"] != "train"}

    def inside_eval(w):  # an eval step's train record written, its evals not yet: the
        # loop is evaluating (every split is evaluated, then all are written)
        records = _logged(w)
        return bool(records) and records[-1]["split"] == "train" and \
            records[-1]["step"] in eval_steps and records[-1]["step"] > 150

    for condition in (mid_training, after_checkpoint, inside_eval):
        code, err = _kill_when(workdir, cache, condition)
        assert code == -signal.SIGKILL, f"{condition.__name__}: the run ended first ({code})"
        assert not (workdir / "summary.json").exists()
    resumed_from = _checkpoint_steps(workdir)
    assert resumed_from and max(resumed_from) < total

    final = subprocess.run(_command(workdir, cache), cwd=REPO, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, stderr_tail(final.stderr)
    assert "resuming from the checkpoint at step" in final.stderr

    assert _values(_logged(workdir)) == _values(_logged(reference))
    step_a, state_a = _final_params(reference)
    step_b, state_b = _final_params(workdir)
    assert step_a == step_b == total
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(a, b)


# Only the signal handler can write a checkpoint before the end: none is due, and no best
# checkpoint is kept.
HANDLER_ONLY = ["--config.checkpoint.every=1000 steps", "--config.checkpoint.keep_best=0"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.slow
def test_a_signal_checkpoints_the_current_step_and_the_rerun_finishes_identically(
        sig, reference, tmp_path):
    """SIGTERM or Ctrl-C (SIGINT): a checkpoint at the step where the run stopped, exit
    status 128 + the signal (130 for Ctrl-C), and a rerun that ends as the reference."""
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    logged_at_kill = []

    def after_ten_logs(w):
        records = _logged(w)
        if len(records) >= 10:
            logged_at_kill.append(max(r["step"] for r in records))
            return True
        return False

    code, err = _kill_when(workdir, cache, after_ten_logs, sig=sig, extra=HANDLER_ONLY)
    assert code == 128 + sig, err[-2000:]
    assert sig != signal.SIGINT or code == 130
    stopped = re.findall(r"stopped at step (\d+); a checkpoint was saved there; rerun the "
                         r"same command to resume", err)
    assert len(stopped) == 1, err[-2000:]
    stopped_at = int(stopped[0])
    assert _checkpoint_steps(workdir) == [stopped_at]
    assert stopped_at >= logged_at_kill[0]
    total = json.loads((reference / "summary.json").read_text())["steps"]
    assert stopped_at < total and not (workdir / "summary.json").exists()
    final = subprocess.run(_command(workdir, cache, *HANDLER_ONLY), cwd=REPO, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, stderr_tail(final.stderr)
    assert f"resuming from the checkpoint at step {stopped_at}" in final.stderr
    assert _values(_logged(workdir)) == _values(_logged(reference))


NO_DROPOUT = ["--config.model.dropout_rate=0.0"]


@pytest.fixture(scope="module")
def reference_without_dropout(tmp_path_factory):
    """The uninterrupted run without dropout, whose masks differ by device layout: then
    layouts agree to float32 rounding (test_engine), so a resumed run can be compared."""
    root = tmp_path_factory.mktemp("reference_without_dropout")
    result = subprocess.run(_command(root / "run", root / "cache", *NO_DROPOUT), cwd=REPO,
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, stderr_tail(result.stderr)
    return root / "run"


@pytest.mark.parametrize("first, second", [
    (["--config.parallel.backend=sharded"],  # 4 devices
     ["--config.parallel.backend=pmap", "--config.parallel.num_devices=1"]),
    (["--config.parallel.backend=pmap", "--config.parallel.num_devices=1"],
     ["--config.parallel.backend=sharded"]),
], ids=["4-sharded-to-1-pmap", "1-pmap-to-4-sharded"])
@pytest.mark.slow
def test_resume_on_another_device_count_and_backend(first, second, reference_without_dropout,
                                                    tmp_path):
    reference = reference_without_dropout
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    code, _ = _kill_when(workdir, cache, lambda w: len(_checkpoint_steps(w)) >= 1,
                         extra=[*first, *NO_DROPOUT])
    assert code == -signal.SIGKILL
    final = run_cli("experiments.digits_cnn", f"--workdir={workdir}",
                    f"--compilation_cache_dir={cache}", *CONFIG, *second, *NO_DROPOUT)
    assert final.returncode == 0, stderr_tail(final.stderr)
    resumed_at = int(re.search(r"resuming from the checkpoint at step (\d+)",
                               final.stderr).group(1))
    env = json.loads((workdir / "env.json").read_text())
    devices = 1 if "--config.parallel.num_devices=1" in second else 4
    assert env["device_count"] == devices
    assert env["backend"] == second[0].split("=")[1]
    # Every loss logged after the resume is the reference's, to float32 rounding across
    # layouts: weights restored wrong (or re-initialised) would be far off at once.
    def train_losses(run):
        return {r["step"]: r["loss"] for r in _logged(run)
                if r["split"] == "train" and r["step"] > resumed_at}
    resumed, expected = train_losses(workdir), train_losses(reference)
    assert resumed and resumed.keys() == expected.keys()
    for step in resumed:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-3), step


def test_a_finished_run_is_not_trained_again(reference):
    result = run_cli("experiments.digits_cnn", f"--workdir={reference}", *CONFIG)
    assert result.returncode == 0
    assert "already complete" in result.stdout
    assert "final test: accuracy" in result.stdout


def test_a_changed_config_is_refused_and_nothing_is_touched(reference):
    before = (reference / "metrics.jsonl").read_bytes()
    result = run_cli("experiments.digits_cnn", f"--workdir={reference}", *CONFIG,
                     "--config.optimizer.learning_rate=0.5")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "optimizer.learning_rate: 0.003 -> 0.5" in result.stderr
    assert (reference / "metrics.jsonl").read_bytes() == before


def test_killed_between_the_last_checkpoint_and_the_summary(reference, tmp_path):
    """The final checkpoint is committed before summary.json is written; a kill in between
    must leave a rerun that only writes the summary, with the same final metrics."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "summary.json").unlink()
    result = run_cli("experiments.digits_cnn", f"--workdir={workdir}", *CONFIG)
    assert result.returncode == 0, stderr_tail(result.stderr)
    summary = json.loads((workdir / "summary.json").read_text())
    ref = json.loads((reference / "summary.json").read_text())
    assert summary["final"] == ref["final"] and summary["steps"] == ref["steps"]
    assert _values(_logged(workdir)) == _values(_logged(reference))


def test_resume_truncation_keeps_logged_lines_as_written(tmp_path):
    """Lines up to the checkpoint stay byte for byte, non-finite values included; later
    lines and a half-written last line go."""
    from jaxdl.training import loop
    from jaxdl.training.writers import MetricWriter
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write(5, "train", {"loss": float("nan"), "skipped_steps": 5.0})
        writer.write(10, "train", {"loss": 0.5})
        writer.write(15, "train", {"loss": 0.25})
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + '{"step": 20, "spl')  # killed mid-write
    loop._truncate_metrics(path, 10)
    assert path.read_text() == "".join(lines[:2])
    assert '"nan"' in lines[0]
