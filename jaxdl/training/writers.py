"""Metric sinks for training runs: JSONL + TensorBoard (+ MLflow), console progress, and PNG
curves.

Nothing here reads flags or holds global state; every cadence (when to write, when to
report progress) belongs to the caller. TensorBoard files are written with tensorboardX
so that tensorflow is never imported (slow, and it would grab a GPU).
"""

from __future__ import annotations

import csv as csv_lib
import datetime
import json
import math
import os
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import tqdm

from jaxdl import runs

if TYPE_CHECKING:
    import jax

__all__ = ["MetricWriter", "MlflowLog", "Progress", "plot_curves", "read_metrics", "read_tensorboard",
           "truncate_tensorboard"]

METRICS_FILENAME = runs.METRICS_FILENAME
TENSORBOARD_DIRNAME = runs.TENSORBOARD_DIRNAME

# Keys every JSONL record carries besides the metrics; metric names may not reuse them.
_RESERVED_KEYS = ("step", "split", "time")

# JSON has no NaN/Infinity; these strings stand in for them so every line stays valid JSON.
_STR_TO_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _to_float(name: str, value: Any) -> float:
    """Python float from a scalar, 0-d numpy array or 0-d jax.Array."""
    arr = np.asarray(value)  # also pulls a jax.Array to host
    if arr.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got shape {arr.shape}")
    return float(arr.reshape(()))


def _encode(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def write_csv(jsonl: str | os.PathLike, path: str | os.PathLike) -> None:
    """`path`: the records of metrics.jsonl `jsonl` as one CSV table (step, split, every
    metric any record has, time; a cell a record lacks stays empty). Rewritten whole from
    the JSONL file, so it always agrees with it, a resumed run included (which drops the
    steps it replays from the JSONL file first)."""
    records = read_metrics(jsonl)
    names = sorted({k for r in records for k in r} - set(_RESERVED_KEYS))
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")  # runs.METRICS_CSV_TMP_FILENAME
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv_lib.DictWriter(f, fieldnames=["step", "split", *names, "time"])
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(path)


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value in _STR_TO_NONFINITE:
        return _STR_TO_NONFINITE[value]
    return value


# MLflow's limits per `log_batch` call.
_MLFLOW_MAX_PARAMS, _MLFLOW_MAX_METRICS = 100, 1000


def _flat(config: Mapping, prefix: str = "") -> dict[str, str]:
    """{'optimizer.learning_rate': '0.001', ...}: a nested config as MLflow params."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = str(value)
    return out


class MlflowLog:
    """The run's config (as params) and metrics mirrored into an MLflow tracking store.

    Through an explicit `MlflowClient`, not `mlflow.start_run`: no process-wide active run.
    The MLflow run's id is kept in the workdir, so a resumed run continues the same MLflow
    run; the steps it replays (bitwise the values logged the first time) are not logged
    twice: per metric, only steps after the last one the store holds are sent.
    """

    def __init__(self, uri: str, experiment: str, workdir: str | os.PathLike,
                 config: Mapping):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=uri)
        Path(workdir).mkdir(parents=True, exist_ok=True)
        id_file = Path(workdir) / runs.MLFLOW_RUN_FILENAME
        self.logged_through: dict[str, int] = {}  # metric key -> last step in the store
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            for key in self._client.get_run(self.run_id).data.metrics:
                history = self._client.get_metric_history(self.run_id, key)
                self.logged_through[key] = max(m.step for m in history)
            self._client.update_run(self.run_id, status="RUNNING")
            return
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = (found.experiment_id if found is not None
                         else self._client.create_experiment(experiment))
        self.run_id = self._client.create_run(experiment_id,
                                              run_name=Path(workdir).name).info.run_id
        params = [Param(k, v) for k, v in _flat(config).items()]
        for i in range(0, len(params), _MLFLOW_MAX_PARAMS):
            self._client.log_batch(self.run_id, params=params[i:i + _MLFLOW_MAX_PARAMS])
        id_file.write_text(self.run_id + "\n")

    def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{split}/{name}", value, now, step) for name, value in values.items()
                   if step > self.logged_through.get(f"{split}/{name}", -1)]
        for i in range(0, len(metrics), _MLFLOW_MAX_METRICS):
            self._client.log_batch(self.run_id, metrics=metrics[i:i + _MLFLOW_MAX_METRICS])

    def close(self) -> None:
        self._client.set_terminated(self.run_id, status="FINISHED")


class MetricWriter:
    """Writes metrics to `workdir/metrics.jsonl` and (optionally) TensorBoard and MLflow.

    Each `write` appends one JSON line `{"step", "split", <metrics>..., "time"}` and
    flushes it, so a killed run keeps everything written so far. Non-finite values are
    stored as the strings "nan", "inf", "-inf" (JSON cannot represent them);
    `read_metrics` turns them back into floats.
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True,
                 csv: bool = False, mlflow: MlflowLog | None = None):
        self.workdir = Path(workdir)
        self._mlflow = mlflow
        self.csv = csv  # metrics.csv, rewritten from metrics.jsonl at `close`
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILENAME
        # Append: a resumed run continues the same file instead of erasing history.
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # only pay the protobuf import when used

            self._tb = SummaryWriter(logdir=str(self.workdir / TENSORBOARD_DIRNAME))

    def write(
        self,
        step: int,
        split: str,
        metrics: Mapping[str, float | np.ndarray | jax.Array],
    ) -> None:
        """Record `metrics` of `split` at `step` (one JSON line, flushed)."""
        if self._file is None:
            raise ValueError("MetricWriter is closed")
        step = int(step)
        values = {}
        for name, value in metrics.items():
            if name in _RESERVED_KEYS:
                raise ValueError(f"metric name {name!r} is reserved")
            values[name] = _to_float(name, value)
        record: dict[str, Any] = {"step": step, "split": str(split)}
        record.update({name: _encode(v) for name, v in values.items()})
        record["time"] = time.time()
        # allow_nan=False: fail loudly rather than ever emit invalid JSON.
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, v in values.items():
                self._tb.add_scalar(f"{split}/{name}", v, global_step=step)
            # Writes happen at logging cadence, so flushing each time is cheap and keeps
            # TensorBoard as durable as the JSONL file.
            self._tb.flush()
        if self._mlflow is not None:
            self._mlflow.write(step, split, values)

    def close(self) -> None:
        """Flush and close all backends; calling it again does nothing."""
        if self._file is not None:
            self._file.close()
            self._file = None
            if self.csv:
                write_csv(self.path, self.workdir / runs.METRICS_CSV_FILENAME)
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._mlflow is not None:
            self._mlflow.close()
            self._mlflow = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Parse a metrics.jsonl file; "nan"/"inf"/"-inf" strings become floats again.

    A torn final line (the run was killed mid-write) is ignored; any other malformed
    line raises.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no trailing newline: the write never finished
                break
            raise
        records.append(
            {k: (v if k in _RESERVED_KEYS else _decode(v)) for k, v in raw.items()}
        )
    return records


_EVENT_FILES = "events.out.tfevents.*"


def _event_records(path: Path) -> list[tuple[int, bytes, bytes]]:
    """(step, payload, raw record) of every complete event in a TensorBoard file, in order.
    A TFRecord is a u64 length, its masked CRC, the payload, the payload's masked CRC; a
    record cut short or failing its CRC (the run was killed mid-write) ends the file."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    data, pos, out = path.read_bytes(), 0, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        end = pos + 12 + length + 4
        payload = data[pos + 12:pos + 12 + length]
        if end > len(data) or struct.unpack("<I", data[end - 4:end])[0] != masked_crc32c(payload):
            break
        out.append((event_pb2.Event.FromString(payload).step, payload, data[pos:end]))
        pos = end
    return out


def read_tensorboard(directory: str | os.PathLike) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the TensorBoard files of `directory`, file by
    file in the order they were written. No tensorflow or tensorboard needed."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(Path(directory).glob(_EVENT_FILES), key=_written_order):
        for step, payload, _ in _event_records(path):
            for value in event_pb2.Event.FromString(payload).summary.value:
                out.append((value.tag, step, value.simple_value))
    return out


def _written_order(path: Path) -> tuple[int, str]:
    # tensorboardX names a file events.out.tfevents.<unix time>.<host>...: by time.
    parts = path.name.split(".")
    return (int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0, path.name)


def truncate_tensorboard(directory: str | os.PathLike, last_step: int) -> None:
    """Drops the events after `last_step` from the TensorBoard files of `directory`: a
    resumed run logs those steps again, into a new file, and every reader (TensorBoard,
    read_tensorboard, pandas exports) must see each step once. Kept records stay byte for
    byte; a file is replaced atomically."""
    for path in Path(directory).glob(_EVENT_FILES):
        records = _event_records(path)
        kept = b"".join(raw for step, _, raw in records if step <= last_step)
        if kept == path.read_bytes():
            continue
        tmp = path.with_name(".truncating.tmp")  # TensorBoard reads any name with "tfevents"
        tmp.write_bytes(kept)
        tmp.replace(path)


def _format_rate(rate: float) -> str:
    # Large rates read best as integers, small ones need a few significant digits.
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


def _format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{name} {float(np.asarray(v)):.4g}" for name, v in metrics.items())


class Progress:
    """Human-readable progress: a tqdm bar on a terminal, plain log lines elsewhere.

    The training loop calls `update` at its logging points; rates are measured over the
    interval since the previous update (wall clock).
    """

    def __init__(
        self,
        total_steps: int,
        *,
        initial_step: int = 0,
        examples_per_step: int,
        stream: TextIO = sys.stderr,
        tty: bool | None = None,
    ):
        self.total_steps = int(total_steps)
        self.examples_per_step = int(examples_per_step)
        self.stream = stream
        self.tty = stream.isatty() if tty is None else bool(tty)
        self._last_step = int(initial_step)
        self._last_time = time.perf_counter()
        self._bar: tqdm.tqdm | None = None
        if self.tty:
            self._bar = tqdm.tqdm(
                total=self.total_steps,
                initial=self._last_step,
                file=stream,
                unit="step",
                dynamic_ncols=True,
            )

    def _interval_rate(self, step: int) -> float | None:
        """Steps/s since the previous update; None when it cannot be measured."""
        now = time.perf_counter()
        dt, dsteps = now - self._last_time, step - self._last_step
        self._last_time, self._last_step = now, step
        if dt <= 0 or dsteps <= 0:
            return None
        return dsteps / dt

    def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        """Report that training reached `step`, with optional metrics to show."""
        step = int(step)
        metrics = metrics or {}
        rate = self._interval_rate(step)
        if rate is None:
            rates = "- steps/s - ex/s"
        else:
            ex_rate = rate * self.examples_per_step
            rates = f"{_format_rate(rate)} steps/s {_format_rate(ex_rate)} ex/s"
        if self._bar is not None:
            # tqdm already shows the ETA; the postfix adds metrics and interval rates.
            postfix = " | ".join(p for p in (_format_metrics(metrics), rates) if p)
            self._bar.set_postfix_str(postfix, refresh=False)
            # update() redraws only past tqdm's mininterval (returns True then); logging
            # points are rare, so make sure each one is shown, but only once.
            redrawn = step > self._bar.n and self._bar.update(step - self._bar.n)
            if not redrawn:
                self._bar.refresh()
            return
        pct = f" ({100 * step // self.total_steps}%)" if self.total_steps > 0 else ""
        parts = [f"step {step}/{self.total_steps}{pct}"]
        if metrics:
            parts.append(_format_metrics(metrics))
        parts.append(rates)
        if rate is None:
            parts.append("ETA ?")
        else:
            remaining = max(self.total_steps - step, 0) / rate
            parts.append(f"ETA {datetime.timedelta(seconds=round(remaining))}")
        self._print(" | ".join(parts))

    def message(self, text: str) -> None:
        """Print a line of text without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        print(text, file=self.stream)
        self.stream.flush()  # logs redirected to a file should show up promptly

    def close(self) -> None:
        """Finish the bar (if any); calling it again does nothing."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# Size of one subplot; the figure grows with the number of metrics.
_PANEL_SIZE_INCHES = (4.5, 3.2)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def plot_curves(metrics: list[dict], path: str | os.PathLike, *, title: str = "") -> None:
    """Save a PNG with one subplot per metric (x = step), one line per split.

    Non-numeric values are skipped, as are non-finite ones (they cannot be drawn). Names
    containing "loss" use a log y-axis when all their values are positive. An input with
    nothing to plot still yields a figure saying "no metrics".
    """
    # Figure + Agg canvas directly: pyplot would switch the process-wide backend/state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # series[name][split] = list of (step, value), in order of first appearance.
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for record in metrics:
        step, split = record.get("step"), str(record.get("split", ""))
        if not _is_number(step):
            continue
        for name, value in record.items():
            if name in _RESERVED_KEYS or not _is_number(value):
                continue
            points = series.setdefault(name, {}).setdefault(split, [])
            if math.isfinite(float(value)):
                points.append((float(step), float(value)))

    n = len(series)
    ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(_PANEL_SIZE_INCHES[0] * ncols, _PANEL_SIZE_INCHES[1] * nrows))
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no metrics", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for i, (name, by_split) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        all_values = []
        for split, points in by_split.items():
            if not points:
                continue
            points.sort()
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=split, marker="." if len(points) == 1 else None)
            all_values.extend(ys)
        if "loss" in name.lower() and all_values and min(all_values) > 0:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        if all_values:
            ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
