"""A multi-host run that loses a process: the other stops with one line naming it (not
JAX's SIGABRT and stack dump), the latest checkpoint stays complete, and rerunning both
processes resumes from it."""

import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, cli_env, stderr_tail

STEPS = 190  # 10 epochs of 19 steps
RUN = ["--config.train.duration=10 epochs", "--config.checkpoint.every=1 epoch",
       "--config.train.eval_every=5 epochs", "--config.logging.progress=False",
       "--config.logging.plot=False", "--config.logging.tensorboard=False",
       "--heartbeat_timeout=5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, cache, logs, tag):
    """Both processes of the run, one forced CPU device each; output goes to files."""
    port = _free_port()
    env = {**cli_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = []
    for i in range(2):
        out = open(logs / f"{tag}{i}.out", "w")
        err = open(logs / f"{tag}{i}.err", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.digits_cnn", f"--workdir={workdir}",
             f"--compilation_cache_dir={cache}", *RUN,
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}"], cwd=REPO, env=env, stdout=out, stderr=err))
    return procs


def _committed(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


@pytest.mark.slow
def test_a_lost_process_stops_the_other_with_one_line_and_the_rerun_resumes(tmp_path):
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    procs = _start(workdir, cache, tmp_path, "first")
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "checkpoints").is_dir() or not _committed(workdir):
            assert all(p.poll() is None for p in procs), (tmp_path / "first0.err").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        procs[1].kill()  # SIGKILL: nothing of process 1 runs after this
        killed = time.monotonic()
        code = procs[0].wait(timeout=60)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    err = (tmp_path / "first0.err").read_text()
    assert code == 3, stderr_tail(err)
    assert waited < 30, stderr_tail(err)  # heartbeat timeout 5 s, plus a round or two
    assert "Fatal Python error" not in err and "Check failure" not in err, stderr_tail(err)
    assert "Traceback" not in err, stderr_tail(err)
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(r"error: process 1 of 2 was lost \(.*\); process 0 stops too; the last "
                         r"complete checkpoint is step (\d+), where a rerun of every process "
                         r"resumes", last)
    assert match, last
    saved = int(match.group(1))
    assert _committed(workdir)[-1] == saved and 0 < saved < STEPS

    procs = _start(workdir, cache, tmp_path, "rerun")
    try:
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    errs = [(tmp_path / f"rerun{i}.err").read_text() for i in range(2)]
    assert codes == [0, 0], stderr_tail(errs[0]) + stderr_tail(errs[1])
    # The latest checkpoint was complete: the rerun resumed from it, no fallback warned.
    assert not any("unreadable" in e for e in errs), errs
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["resumed_from_step"] == saved and summary["steps"] == STEPS
    assert "final test: accuracy" in (tmp_path / "rerun0.out").read_text()


class _Service:
    """A fake coordination-service client: `live` answers each liveness round (or raises)."""

    def __init__(self, answers):
        self.answers, self.barriers, self.keys, self.calls = list(answers), [], {}, 0

    def get_live_nodes(self, ids):
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return {i: 1 for i in answer}

    def wait_at_barrier(self, name, timeout_ms):
        self.barriers.append(name)

    def key_value_set(self, key, value):
        self.keys[key] = value

    def key_value_try_get(self, key):
        if key not in self.keys:
            raise RuntimeError(f"NOT_FOUND: {key}")
        return self.keys[key]


def _watch(answers, process_id=0, num_processes=2):
    from jaxdl import cluster
    lost = []
    done = threading.Event()
    watch = cluster.Watch(_Service(answers), process_id=process_id,
                          num_processes=num_processes,
                          on_lost=lambda ids: (lost.append(ids), done.set()),
                          round_seconds=0.01)
    return watch, lost, done


def test_the_watch_names_the_processes_missing_from_a_liveness_round():
    watch, lost, done = _watch([[0, 1, 2], [0, 1, 2], [0, 2]], num_processes=3)
    assert done.wait(5) and lost == [[1]]


def test_a_worker_that_cannot_reach_the_service_names_process_0():
    watch, lost, done = _watch([[0, 1], RuntimeError("UNAVAILABLE: Socket closed")],
                               process_id=1)
    assert done.wait(5) and lost == [[0]]


def test_settle_returns_after_a_full_round_when_everyone_is_alive():
    watch, lost, done = _watch([[0, 1]])
    started = time.monotonic()
    watch.settle(timeout=5)
    assert time.monotonic() - started < 4 and lost == []


def test_after_finish_the_others_leaving_is_not_a_loss():
    # Process 0 waits at the barrier, then until the others have disconnected.
    watch, lost, done = _watch([[0, 1]] * 20 + [[0]])
    watch.finish(timeout=5)
    assert watch._client.barriers == ["jaxdl_finished"]
    assert watch._live == {0} and not done.wait(0.2) and lost == []
    assert not watch._thread.is_alive()


def test_a_worker_stops_asking_when_it_finishes():
    # JAX shuts the client down at exit: no liveness call of ours may be in flight then.
    watch, lost, done = _watch([[0, 1]], process_id=1)
    watch.finish(timeout=5)
    assert not watch._thread.is_alive()
    calls = watch._client.calls
    time.sleep(0.2)  # 20 rounds' pause
    assert watch._client.calls == calls and lost == []


def test_a_process_that_finished_first_is_not_lost():
    # Process 1 reached the end barrier and left before process 0's own finish began.
    watch, lost, done = _watch([[0, 1]] * 20 + [[0]])
    watch._client.keys["jaxdl_finished/1"] = "1"
    time.sleep(0.3)
    assert not done.is_set() and lost == []
