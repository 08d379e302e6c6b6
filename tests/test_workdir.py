"""A run's workdir over its life: --overwrite removes a run's files and nothing else, the
completion marker is written last, a resume logs each step once (TensorBoard included),
and a finished run can be extended when its schedule allows it."""

from __future__ import annotations

import collections
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env, make_config, stderr_tail

from jaxdl import app, runs
from jaxdl.training import loop, optim, writers

STEPS_PER_EPOCH = 19  # digits_cnn: 1,257 training images, batch 64
# A schedule that ignores the run's length, so a finished run may be extended.
BASE = {"train.duration": "1 epoch", "schedule.name": "constant",
        "schedule.warmup": "0 steps", "logging.progress": "False"}


def _args(workdir, cache, **overrides) -> list[str]:
    config = {**BASE, **overrides}
    return [f"--workdir={workdir}", f"--compilation_cache_dir={cache}",
            *(f"--config.{key}={value}" for key, value in config.items())]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.digits_cnn", *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and one `error:` line naming every needle (absl/XLA W-lines aside)."""
    context = f"\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{stderr_tail(result.stderr)}"
    assert result.returncode == 2, f"exit status {result.returncode}{context}"
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not (line[:1] == "W" and line[1:2].isdigit())]
    assert len(lines) == 1 and lines[0].startswith("error:"), context
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(path: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else "<dir>"
            for p in sorted(path.rglob("*"))}


def check_workdir_refuses(capsys, workdir: Path, config, *, overwrite: bool) -> str:
    """app._check_workdir ends the process with exit status 2 and one `error:` line."""
    with pytest.raises(SystemExit, match="^2$"):
        app._check_workdir(str(workdir), config, overwrite)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache) -> Path:
    """A complete 1-epoch digits_cnn run with every writer on (TensorBoard, plots)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    result = cli(*_args(workdir, cache))
    assert result.returncode == 0, stderr_tail(result.stderr)
    return workdir


def copy_of(run: Path, where: Path) -> Path:
    shutil.copytree(run, where, dirs_exist_ok=True)
    return where


# --- item 1: --overwrite never destroys data ---------------------------------------------


def test_every_file_a_run_writes_is_a_run_entry(finished_run):
    assert runs.RunDir(finished_run).foreign_entries() == []
    assert runs.RunDir(finished_run).is_complete()


def test_overwrite_refuses_a_git_work_tree_and_deletes_nothing(finished_run, cache, tmp_path):
    project = copy_of(finished_run, tmp_path / "project")  # it even looks like a run
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "train.py").write_text("print('my sources')\n")
    before = snapshot(project)
    result = cli(*_args(project, cache), "--overwrite")
    assert_refused(result, str(project), "git work tree")
    assert snapshot(project) == before


def test_overwrite_refuses_the_current_directory(finished_run, cache, tmp_path):
    """`--workdir=. --overwrite`, the command that deleted a user's sources, in a folder
    that holds nothing but a run: refused all the same."""
    here = copy_of(finished_run, tmp_path / "here")
    before = snapshot(here)
    result = cli(*_args(".", cache), "--overwrite", cwd=here)
    assert_refused(result, "current directory")
    assert snapshot(here) == before


@pytest.mark.parametrize("target", ["home", "parent_of_home"])
def test_overwrite_refuses_home(target, finished_run, tmp_path, monkeypatch, capsys):
    home = copy_of(finished_run, tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    folder = home if target == "home" else tmp_path
    before = snapshot(tmp_path)
    err = check_workdir_refuses(capsys, folder, make_config(**{"train.duration": "1 epoch"}),
                                overwrite=True)
    assert "home directory" in err
    assert snapshot(tmp_path) == before


def test_the_filesystem_root_is_protected():
    assert app._protected(Path("/")) is not None


def test_overwrite_refuses_a_run_holding_a_foreign_file(finished_run, cache, tmp_path):
    workdir = copy_of(finished_run, tmp_path / "run")
    (workdir / "notes.txt").write_text("what I learned from this run\n")
    before = snapshot(workdir)
    line = assert_refused(cli(*_args(workdir, cache), "--overwrite"), "notes.txt")
    assert "pass --overwrite" not in line
    assert snapshot(workdir) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(cache, tmp_path):
    workdir = tmp_path / "data"
    workdir.mkdir()
    (workdir / "table.csv").write_text("a,b\n1,2\n")
    before = snapshot(workdir)
    assert_refused(cli(*_args(workdir, cache), "--overwrite"), "holds no jaxdl run")
    assert snapshot(workdir) == before


def test_overwrite_empties_a_finished_run_and_trains_afresh(finished_run, cache, tmp_path):
    workdir = copy_of(finished_run, tmp_path / "run")
    result = cli(*_args(workdir, cache), "--config.optimizer.learning_rate=0.001",
                 "--overwrite")
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "resuming" not in result.stderr
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["config"]["optimizer"]["learning_rate"] == 0.001
    logged = [(r["step"], r["split"]) for r in writers.read_metrics(workdir / "metrics.jsonl")]
    assert logged == [(STEPS_PER_EPOCH, "train"), (STEPS_PER_EPOCH, "validation"),
                      (STEPS_PER_EPOCH, "test")]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == STEPS_PER_EPOCH and summary["resumed_from_step"] == 0


# --- item 11: bookkeeping ------------------------------------------------------------------


def _quiet(**overrides):
    return make_config(**{"train.duration": "1 epoch", "logging.progress": False,
                          "schedule.name": "constant", "schedule.warmup": "0 steps",
                          **overrides})


@pytest.mark.slow
def test_a_crash_before_the_curves_leaves_the_run_incomplete(tmp_path, monkeypatch):
    """Killed after the last checkpoint but before curves.png: the run must not count as
    complete, and the rerun finishes it, curves included."""
    workdir = tmp_path / "run"
    config = _quiet()

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed("killed while plotting")

    monkeypatch.setattr(writers, "plot_curves", killed)
    with pytest.raises(Killed, match="killed while plotting"):
        loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    assert not runs.RunDir(workdir).is_complete()
    assert not (workdir / "summary.json").exists()

    monkeypatch.undo()
    summary = loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    assert summary["steps"] == STEPS_PER_EPOCH
    assert (workdir / "curves.png").stat().st_size > 0
    assert runs.RunDir(workdir).read_summary()["steps"] == STEPS_PER_EPOCH


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_a_resume_logs_each_step_once_in_tensorboard(tmp_path):
    """Killed after step 38 was logged but before its checkpoint was committed: the rerun
    replays steps 20-38; TensorBoard, like metrics.jsonl, must hold each step once."""
    workdir = tmp_path / "run"
    config = _quiet(**{"train.duration": "2 epochs", "train.log_every": "5 steps",
                       "train.eval_every": "1 epoch", "checkpoint.every": "1 epoch",
                       "logging.tensorboard": True, "logging.plot": False})
    loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    total = 2 * STEPS_PER_EPOCH
    first = writers.read_tensorboard(workdir / "tensorboard")
    shutil.rmtree(workdir / "checkpoints" / str(total))
    (workdir / "summary.json").unlink()

    out = io.StringIO()
    summary = loop.train_and_evaluate(config, workdir, stream=out)
    assert f"resuming from the checkpoint at step {STEPS_PER_EPOCH}" in out.getvalue()
    events = writers.read_tensorboard(workdir / "tensorboard")
    repeated = [key for key, n in collections.Counter(
        (tag, step) for tag, step, _ in events).items() if n > 1]
    assert not repeated, f"logged twice: {repeated[:5]}"
    assert sorted((tag, step) for tag, step, _ in events) == sorted(
        (tag, step) for tag, step, _ in first)
    logged = {(f"{r['split']}/loss", r["step"]) for r in writers.read_metrics(
        workdir / "metrics.jsonl")}
    assert logged == {(tag, step) for tag, step, _ in events if tag.endswith("/loss")}

    # Per-segment timings are named as such; train_seconds covers the whole run.
    assert summary["resumed_from_step"] == STEPS_PER_EPOCH
    assert "wall_seconds" not in summary
    assert summary["segment_wall_seconds"] > 0 and summary["train_seconds"] > 0


def test_truncate_tensorboard_drops_later_steps_and_a_torn_record(tmp_path):
    with writers.MetricWriter(tmp_path) as writer:
        for step in range(1, 11):
            writer.write(step, "train", {"loss": 1.0 / step})
    (path,) = (tmp_path / "tensorboard").iterdir()
    path.write_bytes(path.read_bytes()[:-5])  # killed mid-write
    assert [s for _, s, _ in writers.read_tensorboard(tmp_path / "tensorboard")] == list(
        range(1, 10))
    writers.truncate_tensorboard(tmp_path / "tensorboard", 4)
    assert [(t, s) for t, s, _ in writers.read_tensorboard(tmp_path / "tensorboard")] == [
        ("train/loss", s) for s in range(1, 5)]


# --- item 12: extending a finished run -----------------------------------------------------


@pytest.mark.slow
def test_a_finished_run_is_extended_from_its_checkpoint(finished_run, cache, tmp_path):
    """1 epoch, then 2: the run continues at step 20 with its optimizer state, so it ends
    where an uninterrupted 2-epoch run ends, to the bit."""
    workdir = copy_of(finished_run, tmp_path / "run")
    result = cli(*_args(workdir, cache, **{"train.duration": "2 epochs"}))
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert f"resuming from the checkpoint at step {STEPS_PER_EPOCH}" in result.stderr
    total = 2 * STEPS_PER_EPOCH
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == total and summary["resumed_from_step"] == STEPS_PER_EPOCH
    train_steps = [r["step"] for r in writers.read_metrics(workdir / "metrics.jsonl")
                   if r["split"] == "train"]
    assert train_steps == [STEPS_PER_EPOCH, total]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["config"]["train"]["duration"] == "2 epochs"
    assert saved["derived"]["total_steps"] == total
    assert saved["extended_from_steps"] == [STEPS_PER_EPOCH]

    reference = tmp_path / "uninterrupted"
    result = cli(*_args(reference, cache, **{"train.duration": "2 epochs"}))
    assert result.returncode == 0, stderr_tail(result.stderr)
    expected = json.loads((reference / "summary.json").read_text())
    assert summary["final"] == expected["final"]

    # The extended run is complete at its new length; the old command would shorten it.
    again = cli(*_args(workdir, cache, **{"train.duration": "2 epochs"}))
    assert again.returncode == 0 and "already complete" in again.stdout
    assert_refused(cli(*_args(workdir, cache)), "shorten", f"{total} steps")


@pytest.mark.parametrize("schedule", optim.SCHEDULES_SHAPED_BY_TOTAL)
def test_extension_refused_for_a_schedule_shaped_by_the_run_length(
        schedule, finished_run, tmp_path, capsys):
    workdir = copy_of(finished_run, tmp_path / "run")
    no_warmup = {"schedule.warmup": "0 steps"} if "warmup" in optim.SCHEDULE_FIELDS[schedule] \
        else {}
    longer = make_config(**{"train.duration": "2 epochs", "schedule.name": schedule,
                            **no_warmup})
    saved = json.loads((workdir / "config.json").read_text())
    saved["config"]["schedule"] = longer.schedule.to_dict()  # as if the run had trained with it
    (workdir / "config.json").write_text(json.dumps(saved))
    before = snapshot(workdir)
    err = check_workdir_refuses(capsys, workdir, longer, overwrite=False)
    assert f"config.schedule.name={schedule!r}" in err and "cannot be extended" in err
    assert snapshot(workdir) == before


def test_extension_refused_for_a_run_that_stopped_early(finished_run, tmp_path, capsys):
    workdir = copy_of(finished_run, tmp_path / "run")
    summary = json.loads((workdir / "summary.json").read_text())
    summary["early_stopping"] = {"stopped_at_step": STEPS_PER_EPOCH, "best_step": 10}
    (workdir / "summary.json").write_text(json.dumps(summary))
    err = check_workdir_refuses(capsys, workdir, _quiet(**{"train.duration": "2 epochs"}),
                                overwrite=False)
    assert "stopped early" in err
