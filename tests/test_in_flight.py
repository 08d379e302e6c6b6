"""Programs queued ahead of the devices stay bounded, and the shipped parallel configurations
run past their evaluations on real host devices.

XLA's CPU client aborts ("Termination timeout for all reduce RendezvousKey ... 40 seconds")
when about 30 multi-device programs are queued on host devices. An evaluation used to queue
every eval batch (gather, step, sum) at once: mnist_cnn died at its 4th evaluation.
"""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, make_config, stderr_tail
from jaxdl.data import mnist
from jaxdl.training import loop, parallel


def _record_depths(monkeypatch) -> list[int]:
    """Every queue depth `Backend.dispatched` leaves behind, in order."""
    depths = []
    original = parallel.Backend.dispatched

    def dispatched(self, outputs):
        out = original(self, outputs)
        depths.append(self.in_flight)
        return out

    monkeypatch.setattr(parallel.Backend, "dispatched", dispatched)
    return depths


@pytest.mark.parametrize("skip_nonfinite", [False, True])
def test_queued_programs_never_exceed_max_in_flight(monkeypatch, tmp_path, skip_nonfinite):
    """Train steps, the device feed's gathers and the evaluation's batches and sums all
    count, whichever `guard.skip_nonfinite` says (it used to turn the wait off)."""
    depths = _record_depths(monkeypatch)
    config = make_config("digits_cnn", **{
        "train.duration": "30 steps", "train.eval_every": "15 steps",
        "train.log_every": "30 steps", "data.eval_batch_size": 16,
        "parallel.max_in_flight": 3, "guard.skip_nonfinite": skip_nonfinite,
        "logging.progress": False, "logging.plot": False, "logging.tensorboard": False})
    summary = loop.train_and_evaluate(config, tmp_path / "run")
    assert summary["steps"] == 30
    # 30 steps, each a gather and a step, and 2 evaluations of many small batches:
    # the bound is reached and never passed.
    assert len(depths) > 100
    assert max(depths) == 3


def test_backend_waits_for_the_oldest_program(monkeypatch):
    backend = parallel.Backend("sharded", jax.devices(), max_in_flight=2)
    waited = []
    monkeypatch.setattr(parallel, "_wait", lambda outputs: waited.append(outputs))
    for i in range(5):
        backend.dispatched(i)
    assert waited == [0, 1, 2] and backend.in_flight == 2
    backend.wait_all()
    assert waited == [0, 1, 2, 3, 4] and backend.in_flight == 0


def test_wait_skips_outputs_donated_to_a_later_step():
    """A step's state is donated to the next step; waiting uses a leaf still alive."""
    donated, alive = jax.numpy.ones(3), jax.numpy.zeros(2)
    donated.delete()
    parallel._wait((donated, {"metrics": alive}))  # would raise on the deleted array


def test_max_in_flight_below_one_is_refused():
    with pytest.raises(ValueError, match="max_in_flight must be >= 1, got 0"):
        parallel.Backend("pmap", jax.devices(), max_in_flight=0)


def _own_devices_env() -> dict[str, str]:
    """The CLI's environment without the suite's 4 forced devices: the experiment's own
    `parallel.host_devices` decides, as for a user."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", "")).strip()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = flags
    return env


def _run(tmp_path, *command: str, timeout: float):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, *command, f"--workdir={workdir}", "--config.logging.progress=False",
         f"--compilation_cache_dir={tmp_path / 'cache'}"],
        cwd=REPO, env=_own_devices_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "RendezvousKey" not in result.stderr
    env = json.loads((workdir / "env.json").read_text())
    return workdir, env


@pytest.mark.slow
def test_mnist_cnn_setting_survives_evaluations_of_many_batches(tmp_path):
    """mnist_cnn's pinned setting (pmap over 2 host devices, the device feed, its model and
    step cost) on MNIST-shaped random images, evaluated on 100 batches twice: on the
    unbounded queue this aborted at the first evaluation (measured on the 2-core CPU)."""
    workdir, env = _run(
        tmp_path, str(REPO / "tests" / "synthetic_mnist_cnn.py"),
        "--config.data.eval_batch_size=50", "--config.train.duration=40 steps",
        "--config.train.eval_every=20 steps", timeout=600)
    assert env["device_count"] == 2
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["final"]["validation"]["examples"] == 5000


# The experiments pinned to several host devices, each run through its first evaluation
# (its own cadence) plus a few steps, with its own parallel settings and logging cadence.
# mnist_dcgan's Frechet distance needs a trained classifier run; its generator loss stands
# in as the monitor here.
_PINNED = {
    "experiments.mnist_cnn": ("450 steps",),
    "experiments.mnist_dcgan": ("310 steps", "--config.checkpoint.monitor=validation/g_loss"),
}


@pytest.mark.parametrize("module", sorted(_PINNED))
def test_pinned_parallel_experiment_runs_through_its_first_evaluation(module, tmp_path):
    duration, *overrides = _PINNED[module]
    if not os.environ.get(mnist.ENV_VAR):
        pytest.skip(f"${mnist.ENV_VAR} is not set: the MNIST files are not available")
    workdir, env = _run(tmp_path, "-m", module, f"--config.train.duration={duration}",
                        *overrides, timeout=900)
    assert env["device_count"] == 2
    evals = [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "validation"]
    assert len(evals) >= 2 and np.isfinite([r["loss"] for r in evals if "loss" in r]).all()
