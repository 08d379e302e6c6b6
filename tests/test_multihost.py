"""Two processes on this machine (2 CPU devices each, gloo collectives) train exactly what
one process with 4 devices trains."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, run_cli, stderr_tail
from jaxdl.training.writers import read_metrics

SHRINK = ["--config.train.duration=2 epochs", "--config.train.eval_every=1 epoch",
          "--config.train.log_every=5 steps", "--config.logging.progress=False"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir, cache, backend, pipeline):
    port = _free_port()
    env = {**cli_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.digits_cnn", f"--workdir={workdir}",
         f"--compilation_cache_dir={cache}", *SHRINK, f"--config.parallel.backend={backend}",
         f"--config.data.pipeline={pipeline}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, stderr_tail(err)
    return outputs


def _params(workdir):
    from jaxdl.training import checkpoints, loop
    from conftest import make_config
    trainer = loop.build(make_config())
    saved = checkpoints.Checkpoints(workdir / "checkpoints", keep_last=2, keep_best=0,
                                    best_mode="max")
    state, _, step = saved.restore(trainer.abstract_state)
    saved.close()
    return step, state.params


# Each backend with one of the two feeds: the host feed has each process read and place
# only its own rows; the device feed has every process hold the splits and gather its rows.
@pytest.mark.parametrize("backend,pipeline", [("sharded", "device"), ("pmap", "host")])
@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(backend, pipeline, tmp_path):
    one = run_cli("experiments.digits_cnn", f"--workdir={tmp_path / 'one'}",
                  f"--compilation_cache_dir={tmp_path / 'cache'}", *SHRINK,
                  f"--config.parallel.backend={backend}")
    assert one.returncode == 0, stderr_tail(one.stderr)
    (out0, err0), (out1, err1) = _two_processes(tmp_path / "two", tmp_path / "cache", backend,
                                                pipeline)

    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["process_count"] == 2 and env["device_count"] == 4
    # Process 0 speaks for the run; process 1 prints no summary and writes no second log.
    assert "final test: accuracy" in out0 and "final test" not in out1
    a = read_metrics(tmp_path / "one" / "metrics.jsonl")
    b = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "accuracy"):
            # gloo's all-reduce sums in another order than in-process: equal to rounding.
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra, rb)
    step_a, params_a = _params(tmp_path / "one")
    step_b, params_b = _params(tmp_path / "two")
    assert step_a == step_b == 38
    for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
