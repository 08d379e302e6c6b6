"""python -m jaxdl.sweep: grids, Optuna search with pruning, k-fold CV and the results table
over ordinary runs; resumable after SIGKILL, safe with several workers; bad input refused
in one line before anything is written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env
from jaxdl.schema import ConfigError
from jaxdl.sweep import __main__ as cli, lr_find, results, space, study

# digits_mlp at its smallest: 19 steps an epoch, a checkpoint and an evaluation each epoch.
TINY = ["--config.train.duration=4 epochs", "--config.train.eval_every=1 epoch",
        "--config.train.log_every=1 epoch", "--config.checkpoint.every=1 epoch",
        "--config.logging.plot=False"]
GRID = ["--grid", "optimizer.learning_rate=0.05,0.1", "--grid", "model.dropout_rate=0,0.1"]


@pytest.fixture
def own_signals():
    """The sweep's SIGTERM/SIGINT handlers are the process's; pytest gets its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def sweep_cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jaxdl.sweep", *args], cwd=REPO,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def table_rows(directory: Path) -> list[dict[str, str]]:
    """results.csv without its wall time: what two sweeps of one command must agree on."""
    with open(directory / results.RESULTS_CSV) as f:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(f)]


# -- bad input: one line, exit 2, nothing written ---------------------------------------

@pytest.mark.parametrize("args, match", [
    (["--grid", "optimizer.no_such_key=1,2"], "config.optimizer.no_such_key: unknown key"),
    (["--grid", "optimizer.learning_rate="], "empty value list"),
    (["--optuna", "optimizer.learning_rate=log:1e-4:big", "--trials", "2"], "'big' is not a number"),
    (["--optuna", "optimizer.learning_rate=normal:0:1", "--trials", "2"], "KIND one of"),
    (["--optuna", "optimizer.learning_rate=log:1e-4:1e-1"], "--optuna needs --trials"),
    (["--grid", "seed=0,1", "--trials=3"], "--trials counts Optuna trials"),
    (["--grid", "seed=0,1", "--storage", "sqlite:////no/such/folder/study.db"],
     "--storage=sqlite:////no/such/folder/study.db: cannot open the study database"),
    (["--grid", "seed=0,1", "--objective", "test/accuracy", "--mode", "max"],
     "the test split never chooses"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, match):
    workdir = tmp_path / "sweep"
    with pytest.raises(SystemExit, match="2") as info:
        cli.main(["experiments.digits_mlp", f"--workdir={workdir}", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not workdir.exists()


def test_another_space_in_the_same_directory_is_refused(tmp_path, capsys):
    spec = space.make_spec("digits_mlp", None, [], ["seed=0,1"], [], 0, 1, None, None,
                           "validation/accuracy", "max", "none")
    (tmp_path / study.SPEC_FILENAME).write_text(json.dumps(spec.to_json()))
    assert study.check_directory(tmp_path, spec)  # the same command continues
    with pytest.raises(SystemExit, match="2"):
        cli.main(["experiments.digits_mlp", f"--workdir={tmp_path}", "--grid", "seed=0,1,2"])
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --workdir={tmp_path} holds a sweep with another grid ([['seed', "
                   "['0', '1']]] here, [['seed', ['0', '1', '2']]] asked); rerun it with the "
                   "same command or choose a new --workdir")
    assert sorted(p.name for p in tmp_path.iterdir()) == [study.SPEC_FILENAME]


# -- the pieces -------------------------------------------------------------------------

def test_grid_values_split_outside_brackets_and_points_vary_the_last_key_fastest():
    assert space.split_values("(64,32),(128, 64)") == ["(64,32)", "(128, 64)"]
    spec = space.make_spec("digits_mlp", None, [], ["a=1,2", "b=x,y"], [], 5, 2, None, None,
                           "validation/accuracy", "max", "none")
    assert spec.grid_points() == [{"a": "1", "b": "x"}, {"a": "1", "b": "y"},
                                  {"a": "2", "b": "x"}, {"a": "2", "b": "y"}]
    assert len(spec.members()) == 10 and spec.members()[1] == {"fold": 0, "seed": 1}
    assert space.parse_optuna(["x=log:1e-4:1e-1", "y=choice:relu,gelu"]) == {
        "x": {"kind": "log", "low": 1e-4, "high": 1e-1},
        "y": {"kind": "choice", "choices": ["relu", "gelu"]}}
    with pytest.raises(ConfigError, match="needs --optuna"):
        space.make_spec("digits_mlp", None, [], ["a=1"], [], 0, 1, None, None,
                        "validation/accuracy", "max", "median")


def test_the_table_sorts_by_the_validation_objective_never_the_test_split():
    spec = space.make_spec("digits_mlp", None, [], ["seed=0,1,2"], [], 0, 1, None, None,
                           "validation/loss", "min", "none").to_json()

    def record(trial, status, validation, test):
        metrics = {"validation/loss": {"mean": validation, "std": 0.0},
                   "test/loss": {"mean": test, "std": 0.0}}
        return {"id": trial, "status": status, "params": {"seed": trial}, "metrics": metrics,
                "objective": validation, "steps": 10, "wall_seconds": 1.0}

    rows = [record("0", "complete", 0.5, 0.1), record("1", "complete", 0.3, 0.9),
            record("2", "pruned", 0.1, 0.0)]
    rows[2]["pruned_at"] = {"step": 5, "value": 0.25}
    lines = results.table(spec, rows).splitlines()
    assert [line.split("|")[2].strip() for line in lines[4:]] == ["1", "0", "2"]
    assert "| (0.2500 at step 5) |" in lines[6]
    assert lines[4].startswith("| best | 1 |")
    header = lines[2].split("|")
    assert header.index(" validation/loss ") < header.index(" test/loss ")


def test_lr_find_suggests_where_the_loss_falls_fastest_and_stops_at_divergence():
    rates = np.geomspace(1e-6, 10, 300)
    # A loss that falls fastest at 1e-2 (a logistic step in log rate), then explodes at 1.
    losses = 2.0 - 1.5 / (1 + np.exp(-3 * (np.log10(rates) + 2))) + (rates > 1) * rates ** 3
    found = lr_find.suggest(rates, losses)
    # The smoothing lags the curve by a few steps: still within a factor ~2 of 1e-2.
    assert 5e-3 < found["steepest"] < 4e-2
    assert max(found["rates"]) < 3.0  # cut where it diverged
    assert found["minimum_over_10"] < max(found["rates"]) / 5
    overrides = lr_find.overrides(200, 1e-7, 10.0)
    assert "--config.schedule.decay_factor=100000000.0" in overrides


def _sweep(directory: Path, grid=(), optuna=(), budget=0, folds=0, seeds=1) -> study.Sweep:
    import functools

    from jaxdl import app
    spec = space.make_spec("digits_mlp", None, [], list(grid), list(optuna), folds, seeds, None,
                           None, "validation/accuracy", "max", "none")
    directory.mkdir()
    (directory / study.SPEC_FILENAME).write_text(json.dumps(spec.to_json()))
    sweep = study.Sweep(directory=directory, spec=spec, budget=budget,
                        configure=functools.partial(app.load_config, "digits_mlp"),
                        storage=study.open_storage(directory, None))
    sweep.trials_dir.mkdir()
    return sweep


def _record(sweep: study.Sweep, trial_id: str, status: str, **extra) -> None:
    study._write_json(sweep.record_path(trial_id), {"id": trial_id, "status": status,
                                                    "params": {}, "segments": [], **extra})


def test_each_run_of_a_trial_holds_out_its_fold_with_its_seed(tmp_path):
    sweep = _sweep(tmp_path / "cv", grid=["optimizer.learning_rate=0.1"], folds=3, seeds=2)
    runs = sweep.member_configs(["--config.optimizer.learning_rate=0.1"])
    # digits_mlp validates on a 10% fraction: k-fold takes validation from the fold instead
    assert [(c.data.folds, c.data.fold, c.data.validation_fraction, c.seed) for _, c in runs] == [
        (3, 0, 0.0, 0), (3, 0, 0.0, 1), (3, 1, 0.0, 0), (3, 1, 0.0, 1), (3, 2, 0.0, 0), (3, 2, 0.0, 1)]
    assert all(c.optimizer.learning_rate == 0.1 for _, c in runs)
    assert sweep.member_dir("0000", runs[3][0]) == sweep.trials_dir / "0000" / "fold1_seed1"


def test_a_worker_skips_finished_and_locked_trials_and_takes_up_a_dead_workers_trial(
        tmp_path, monkeypatch):
    ran = []

    def run_trial(self, trial_id, params, optuna_trial=None):  # no training: who runs what
        ran.append((trial_id, params, optuna_trial and optuna_trial.number))
        _record(self, trial_id, "complete")

    monkeypatch.setattr(study.Sweep, "run_trial", run_trial)
    grid = _sweep(tmp_path / "grid", grid=["seed=0,1,2,3"])
    _record(grid, "0000", "complete")
    _record(grid, "0002", "running")  # its worker died: the lock is free
    with study._flock(grid.trials_dir / "0001.lock", wait=False) as held:  # a live worker
        assert held
        grid.work()
    assert ran == [("0002", {"seed": "2"}, None), ("0003", {"seed": "3"}, None)]

    ran.clear()
    search = _sweep(tmp_path / "optuna", optuna=["optimizer.learning_rate=log:1e-3:1e-1"],
                    budget=3)
    optuna_study = search.study()
    for number in (0, 1):  # two trials started; 0000's worker died, 0001's still runs
        trial = optuna_study.ask({"optimizer.learning_rate": study._distribution(
            {"kind": "log", "low": 1e-3, "high": 1e-1})})
        _record(search, f"000{number}", "running", optuna_number=trial.number,
                params={"optimizer.learning_rate": repr(trial.params["optimizer.learning_rate"])})
    with study._flock(search.trials_dir / "0001.lock", wait=False) as held:
        assert held
        search.work()
    assert [(trial_id, number) for trial_id, _, number in ran] == [("0000", 0), ("0002", 2)]
    assert len(search.records()) == 3  # the budget, counting the trial still running


def test_lr_find_reads_the_runs_curve_and_writes_its_plot_and_suggestion(tmp_path):
    run = tmp_path / lr_find.RUN_DIRNAME
    run.mkdir()
    rates = np.geomspace(1e-5, 1.0, 50)
    loss = 2.0 - 1.5 / (1 + np.exp(-3 * (np.log10(rates) + 2)))
    rows = [{"step": i + 1, "split": "train", "loss": float(l), "learning_rate": float(r)}
            for i, (r, l) in enumerate(zip(rates, loss))]
    rows.insert(10, {"step": 10, "split": "validation", "loss": 9.0})  # not the ramp's
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = lr_find.report(tmp_path, "digits_mlp")
    assert (tmp_path / lr_find.PLOT_FILENAME).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / lr_find.RESULT_FILENAME).read_text())["steepest"] == found["steepest"]
    assert len(found["rates"]) == 50 and 3e-3 < found["steepest"] < 5e-2


# -- end to end (slow) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 4-trial grid run without interruption, in this process."""
    workdir = tmp_path_factory.mktemp("grid") / "sweep"
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        cli.main(["experiments.digits_mlp", f"--workdir={workdir}", *GRID, *TINY])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return workdir


@pytest.mark.slow
def test_a_grid_of_four_runs_every_trial_as_a_run_and_aggregates(uninterrupted):
    rows = table_rows(uninterrupted)
    assert len(rows) == 4 and all(r["status"] == "complete" for r in rows)
    assert [r["best"] for r in rows] == ["1", "0", "0", "0"]
    accuracies = [float(r["validation/accuracy mean"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    for trial in ("0000", "0001", "0002", "0003"):
        saved = json.loads((uninterrupted / "trials" / trial / "config.json").read_text())
        record = json.loads((uninterrupted / "trials" / f"{trial}.json").read_text())
        assert saved["config"]["optimizer"]["learning_rate"] == float(
            record["params"]["optimizer.learning_rate"])
        assert saved["config"]["model"]["dropout_rate"] == float(record["params"]["model.dropout_rate"])
    for name in (results.RESULTS_MD, results.OBJECTIVE_PNG, results.PARALLEL_PNG):
        assert (uninterrupted / name).is_file()
    trials = study.load_study(uninterrupted).trials
    assert sorted(t.user_attrs[study.TRIAL_ATTR] for t in trials) == ["0000", "0001", "0002", "0003"]


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_resumes_each_trial_once_with_the_same_table(
        uninterrupted, tmp_path):
    workdir = tmp_path / "sweep"
    args = ["experiments.digits_mlp", f"--workdir={workdir}", *GRID, *TINY]
    process = sweep_cli(*args)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        for trial in sorted((workdir / "trials").glob("[0-9]*[0-9]")):
            steps = [p for p in (trial / "checkpoints").glob("*") if p.name.isdigit()]
            if steps and not (trial / "summary.json").exists():
                process.send_signal(signal.SIGKILL)
                killed = trial.name
                break
        time.sleep(0.02)
    process.communicate()
    assert killed is not None, "the sweep ended before a trial had a checkpoint"
    finished = sweep_cli(*args)
    out, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err[-2000:]
    assert table_rows(workdir) == table_rows(uninterrupted)
    for record in (json.loads(p.read_text()) for p in (workdir / "trials").glob("*.json")):
        assert record["status"] == "complete"
        froms = [s["from_step"] for s in record["segments"]]
        # every trial trained once; the killed one went on from its checkpoint
        assert froms == ([0, froms[1]] if record["id"] == killed else [0]), record
        assert record["id"] != killed or froms[1] > 0


@pytest.mark.slow
def test_two_workers_sharing_a_study_never_run_the_same_trial(uninterrupted, tmp_path):
    workdir = tmp_path / "sweep"
    process = sweep_cli("experiments.digits_mlp", f"--workdir={workdir}", *GRID, *TINY,
                        "--workers=2")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    records = [json.loads(p.read_text()) for p in (workdir / "trials").glob("*.json")]
    assert sorted(r["id"] for r in records) == ["0000", "0001", "0002", "0003"]
    assert all(len(r["segments"]) == 1 for r in records)
    assert table_rows(workdir) == table_rows(uninterrupted)


@pytest.mark.slow
def test_a_trial_the_median_pruner_stops_is_marked_pruned(tmp_path, own_signals):
    workdir = tmp_path / "sweep"
    # One rate that learns and one that cannot; with seed 3 the sampler draws 0.1 first,
    # so the median pruner (one finished trial is enough) stops the second at its first
    # evaluation.
    cli.main(["experiments.digits_mlp", f"--workdir={workdir}", "--optuna",
              "optimizer.learning_rate=choice:0.1,1e-07", "--trials=2", "--pruner=median",
              "--pruner_startup_trials=1", *TINY, "--config.seed=3"])
    records = [json.loads(p.read_text()) for p in sorted((workdir / "trials").glob("*.json"))]
    assert [r["params"]["optimizer.learning_rate"] for r in records] == ["0.1", "1e-07"]
    assert [r["status"] for r in records] == ["complete", "pruned"]
    assert records[1]["steps"] == 19  # stopped at its first evaluation, of 76 steps
    assert records[1]["pruned_at"]["step"] == 19
    assert [r["status"] for r in table_rows(workdir)] == ["complete", "pruned"]
    import optuna
    trials = study.load_study(workdir).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.PRUNED]


@pytest.mark.slow
def test_five_folds_equal_the_five_hand_run_folds_bitwise(tmp_path, own_signals):
    from jaxdl import app
    from jaxdl.training import loop
    short = ["--config.train.duration=2 epochs", "--config.train.eval_every=1 epoch",
             "--config.checkpoint.every=2 epochs", "--config.logging.plot=False"]
    cli.main(["experiments.breast_cancer_mlp", f"--workdir={tmp_path / 'sweep'}", "--folds=5",
              *short])
    record = json.loads((tmp_path / "sweep" / "trials" / "0000.json").read_text())
    assert [r["fold"] for r in record["runs"]] == [0, 1, 2, 3, 4]
    for run in record["runs"]:
        by_hand = tmp_path / f"fold{run['fold']}"
        config = app.load_config("breast_cancer_mlp", [*short, f"--config.data.fold={run['fold']}"])
        summary = loop.train_and_evaluate(config, by_hand, stream=open(os.devnull, "w"))
        swept = tmp_path / "sweep" / run["dir"]
        assert json.loads((swept / "config.json").read_text())["config"] == json.loads(
            (by_hand / "config.json").read_text())["config"]
        assert run["metrics"] == {f"{s}/{k}": v for s, m in summary["final"].items()
                                  for k, v in m.items() if k != "examples"}
    accuracies = [r["metrics"]["validation/accuracy"] for r in record["runs"]]
    assert record["metrics"]["validation/accuracy"] == {"mean": float(np.mean(accuracies)),
                                                        "std": float(np.std(accuracies))}


@pytest.mark.slow
def test_lr_find_ramps_the_experiments_own_optimizer_and_suggests_a_rate(tmp_path, own_signals,
                                                                        capsys):
    cli.main(["lr_find", "experiments.digits_mlp", f"--workdir={tmp_path}", "--steps=30"])
    saved = json.loads((tmp_path / lr_find.RUN_DIRNAME / "config.json").read_text())["config"]
    assert saved["optimizer"]["name"] == "momentum" and saved["schedule"]["name"] == "exponential"
    rates, _ = lr_find.read_curve(tmp_path / lr_find.RUN_DIRNAME)
    assert len(rates) == 30 and rates[0] == pytest.approx(1e-7) and rates[-1] > 1.0
    assert "suggested learning rate" in capsys.readouterr().out
    assert (tmp_path / lr_find.PLOT_FILENAME).is_file()
