"""Tests for jaxdl.training.writers: JSONL/TensorBoard metrics, progress, curve plots."""

import importlib.util
import io
import json
import math

import numpy as np
import pytest

from jaxdl import runs
from jaxdl.training.writers import MetricWriter, MlflowLog, Progress, plot_curves, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tb_scalars(logdir):
    """{tag: [(step, value), ...]} from the event files under `logdir`, as the TensorBoard
    viewer (a dependency of jaxdl) reads them."""
    from tensorboard.backend.event_processing import event_accumulator

    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {logdir}"
    acc = event_accumulator.EventAccumulator(str(files[0].parent))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_write_and_read_two_splits(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write(10, "train", {"loss": 0.5, "accuracy": np.float32(0.25)})
        writer.write(10, "validation", {"loss": np.array(0.75)})
        writer.write(20, "train", {"loss": 0.125, "accuracy": 0.5})
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [
        (10, "train"),
        (10, "validation"),
        (20, "train"),
    ]
    assert records[0]["loss"] == 0.5 and records[0]["accuracy"] == 0.25
    assert records[1]["loss"] == 0.75 and "accuracy" not in records[1]
    assert records[2]["loss"] == 0.125 and records[2]["accuracy"] == 0.5
    assert all(isinstance(r["time"], float) for r in records)


def test_jax_scalar_values(tmp_path):
    import jax.numpy as jnp
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write(1, "train", {"loss": jnp.asarray(1.5)})
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["loss"] == 1.5


def test_nonfinite_round_trip_and_valid_json(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write(1, "train", {"a": float("nan"), "b": float("inf"), "c": -np.inf, "d": 1.0})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    # Strict JSON parser: NaN/Infinity literals would be rejected.
    raw = json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert (raw["a"], raw["b"], raw["c"]) == ("nan", "inf", "-inf")
    (record,) = read_metrics(tmp_path / "metrics.jsonl")
    assert math.isnan(record["a"])
    assert record["b"] == math.inf and record["c"] == -math.inf and record["d"] == 1.0


def test_flushed_before_close_and_append_mode(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(3, "train", {"loss": 2.0})
    # Read while still open: a killed run must keep what was written.
    (record,) = read_metrics(tmp_path / "metrics.jsonl")
    assert (record["step"], record["split"], record["loss"]) == (3, "train", 2.0)
    writer.close()
    writer.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="MetricWriter is closed"):
        writer.write(4, "train", {"loss": 1.0})
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write(4, "train", {"loss": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [3, 4]


def test_rejects_reserved_and_nonscalar(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(ValueError, match="metric name 'step' is reserved"):
            writer.write(1, "train", {"step": 1.0})
        with pytest.raises(ValueError, match=r"metric 'loss' must be a scalar, got shape \(3,\)"):
            writer.write(1, "train", {"loss": np.zeros(3)})


def test_read_metrics_ignores_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 1.0, "time": 0.0}\n{"step": 2, "spl')
    assert [r["step"] for r in read_metrics(path)] == [1]


def test_tensorboard_scalars(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write(5, "train", {"loss": 0.25})
        writer.write(5, "validation", {"loss": 0.5})
    scalars = _tb_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [(5, pytest.approx(0.25))]
    assert scalars["validation/loss"] == [(5, pytest.approx(0.5))]


def test_progress_plain_lines():
    stream = io.StringIO()
    progress = Progress(100, examples_per_step=64, stream=stream)  # StringIO is not a tty
    assert not progress.tty
    progress.update(10, {"loss": 0.43214})
    progress.update(20, {"loss": 0.3125, "accuracy": 0.9})
    progress.message("hello")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "step 10/100 (10%)" in lines[0] and "loss 0.4321" in lines[0]
    last = lines[1]
    assert "step 20/100 (20%)" in last
    assert "loss 0.3125" in last and "accuracy 0.9" in last
    assert "steps/s" in last and "ex/s" in last and "ETA" in last
    assert lines[2] == "hello"


def test_progress_plain_rates_use_interval(monkeypatch):
    clock = iter([0.0, 2.0, 3.0])  # init, first update, second update
    monkeypatch.setattr("jaxdl.training.writers.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = Progress(100, initial_step=10, examples_per_step=8, stream=stream, tty=False)
    progress.update(20)  # 10 steps in 2 s
    progress.update(50)  # 30 steps in 1 s
    first, second = stream.getvalue().splitlines()
    assert "5 steps/s 40 ex/s" in first and "ETA 0:00:16" in first
    assert "30 steps/s 240 ex/s" in second and "ETA 0:00:02" in second


def test_progress_tty():
    stream = io.StringIO()
    progress = Progress(250, initial_step=50, examples_per_step=32, stream=stream, tty=True)
    progress.update(100, {"loss": 1.23456})
    progress.message("note")
    progress.update(250, {"loss": 0.5})
    progress.close()
    progress.close()
    out = stream.getvalue()
    assert "250" in out
    assert "loss 1.235" in out and "ex/s" in out
    assert "note" in out


def test_plot_curves(tmp_path):
    records = [
        {"step": 1, "split": "train", "loss": 2.0, "accuracy": 0.1, "time": 0.0},
        {"step": 2, "split": "train", "loss": 1.0, "accuracy": 0.5, "note": "x", "time": 1.0},
        {"step": 2, "split": "validation", "loss": 1.5, "accuracy": float("nan"), "time": 1.0},
        {"step": 3, "split": "test", "loss": -1.0, "time": 2.0},
    ]
    path = tmp_path / "curves.png"
    plot_curves(records, path, title="run")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > len(PNG_SIGNATURE)


def test_plot_curves_from_writer_and_empty(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        for step in range(1, 4):
            writer.write(step, "train", {"loss": 1.0 / step})
    plot_curves(read_metrics(tmp_path / "metrics.jsonl"), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_SIGNATURE)

    empty = tmp_path / "sub" / "empty.png"
    plot_curves([], empty)
    data = empty.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 100


# --- metrics.csv (logging.csv) -------------------------------------------------------------


def test_csv_is_the_jsonl_as_one_table_and_follows_a_resume(tmp_path):
    import csv

    from jaxdl import runs
    from jaxdl.training.context import truncate_metrics

    with MetricWriter(tmp_path, tensorboard=False, csv=True) as writer:
        writer.write(1, "train", {"loss": 2.0})
        writer.write(2, "train", {"loss": float("nan")})
        writer.write(2, "validation", {"loss": 1.5, "accuracy": 0.5})
        writer.write(3, "train", {"loss": 1.0})
    # Resumed from the checkpoint at step 2: step 3 is replayed, with another value.
    truncate_metrics(tmp_path / "metrics.jsonl", 2)
    with MetricWriter(tmp_path, tensorboard=False, csv=True) as writer:
        writer.write(3, "train", {"loss": 0.5})
    rows = list(csv.DictReader((tmp_path / runs.METRICS_CSV_FILENAME).open()))
    assert [(r["step"], r["split"], r["loss"], r["accuracy"]) for r in rows] == [
        ("1", "train", "2.0", ""), ("2", "train", "nan", ""),
        ("2", "validation", "1.5", "0.5"), ("3", "train", "0.5", "")]
    assert list(rows[0]) == ["step", "split", "accuracy", "loss", "time"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.jsonl"]


def test_no_csv_unless_asked(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write(1, "train", {"loss": 2.0})
    assert not (tmp_path / "metrics.csv").exists()


# --- MLflow (logging.mlflow): the `mlflow` extra ------------------------------------------

_NO_MLFLOW = importlib.util.find_spec("mlflow") is None
needs_mlflow = pytest.mark.skipif(_NO_MLFLOW, reason="the mlflow extra is not installed "
                                                     "(pip install -e '.[mlflow]')")


def _mlflow_history(uri, run_id, key):
    from mlflow.tracking import MlflowClient
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


@pytest.mark.slow  # MLflow creates its sqlite tables: ~10 s
@needs_mlflow
def test_mlflow_mirrors_params_and_metrics_and_a_resume_logs_each_step_once(tmp_path):
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"seed": 3, "optimizer": {"name": "adam", "learning_rate": 0.001}}
    run = tmp_path / "run"
    with MetricWriter(run, tensorboard=False,
                      mlflow=MlflowLog(uri, "exp", run, config)) as writer:
        writer.write(1, "train", {"loss": 0.5})
        writer.write(2, "train", {"loss": 0.25})
    run_id = (run / runs.MLFLOW_RUN_FILENAME).read_text().strip()
    # Resumed from the checkpoint at step 1: step 2 is replayed (same value), then step 3.
    resumed = MlflowLog(uri, "exp", run, config)
    assert resumed.run_id == run_id and resumed.logged_through == {"train/loss": 2}
    with MetricWriter(run, tensorboard=False, mlflow=resumed) as writer:
        writer.write(2, "train", {"loss": 0.25})
        writer.write(3, "train", {"loss": 0.125})
        writer.write(3, "validation", {"accuracy": 0.75})
    assert _mlflow_history(uri, run_id, "train/loss") == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert _mlflow_history(uri, run_id, "validation/accuracy") == [(3, 0.75)]
    mlflow_run = MlflowClient(uri).get_run(run_id)
    assert mlflow_run.data.params == {"seed": "3", "optimizer.name": "adam",
                                      "optimizer.learning_rate": "0.001"}
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"


def test_logging_mlflow_without_the_package_is_refused(monkeypatch):
    from jaxdl import config as config_lib
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = config_lib.with_defaults(__import__("experiments.digits_mlp").digits_mlp.get_config())
    cfg.logging.mlflow = "sqlite:///mlflow.db"
    with pytest.raises(config_lib.ConfigError, match=r"logging.mlflow.*needs the mlflow package"):
        config_lib.validate(cfg)


@pytest.mark.slow
@needs_mlflow
def test_a_run_with_logging_mlflow_logs_what_metrics_jsonl_holds(tmp_path):
    from jaxdl import api
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tmp_path / "run"
    api.train("digits_mlp", {"logging.mlflow": uri, "logging.mlflow_experiment": "digits",
                             "logging.progress": False, "logging.plot": False},
              workdir=run, fast_dev_run=2, stream=io.StringIO())
    run_id = (run / runs.MLFLOW_RUN_FILENAME).read_text().strip()
    for record in read_metrics(run / "metrics.jsonl"):
        for name, value in record.items():
            if name not in ("step", "split", "time"):
                assert (record["step"], pytest.approx(value)) in _mlflow_history(
                    uri, run_id, f"{record['split']}/{name}")
