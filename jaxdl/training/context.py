"""What one run shares between the loop and its hooks: the trainer, the state on the devices,
the workdir's writers and checkpoints, and the run's record (best and final metrics, the
best monitored value, the train-metrics window, time and examples so far), which every
checkpoint carries so a resumed run goes on exactly where it stopped.

`open_run` is the run's start: it resumes from the latest checkpoint, drops what a killed
segment logged after it, writes config.json and env.json, and says what will train.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import data as data_lib, runs
from jaxdl.data import augment
from jaxdl.schema import ConfigError
from jaxdl.training import environment, writers
from jaxdl.training.build import TRAIN, Plan, Trainer, is_test, preview_images
from jaxdl.training.checkpoints import CheckpointError, Checkpoints
from jaxdl.training.window import Window

PREVIEW_COLUMNS = 8  # a display layout: two rows of 8 examples, before and after


def better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when `value` improves on `best` by more than `min_delta`."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best + min_delta if mode == "max" else value < best - min_delta


class _Silent:
    """Writer and progress of a process other than 0: one process speaks for the run."""

    def write(self, *args, **kwargs):
        pass

    update = message = close = write


@dataclasses.dataclass(eq=False)
class Context:
    """The run as the loop and every hook see it. Hooks talk to each other only through
    what is here (a hook never reaches into another hook)."""

    config: Any
    workdir: Path
    trainer: Trainer
    checkpoints: Checkpoints
    writer: Any
    progress: Any
    primary: bool  # process 0: the only one that writes files and prints
    start: int  # the step this segment starts from (0, or the checkpoint it resumed)
    state: Any  # on the devices
    hooks: list = dataclasses.field(default_factory=list)
    # The run's record, carried in every checkpoint (`record`).
    best: dict = dataclasses.field(default_factory=dict)
    final: dict = dataclasses.field(default_factory=dict)
    stopping: dict = dataclasses.field(default_factory=lambda: {
        "best": None, "best_step": None, "bad_evals": 0})
    window: Window = dataclasses.field(default_factory=Window)
    train_seconds: float = 0.0
    examples_seen: int = 0
    # Signals between hooks, within one step.
    save_requested: bool = False  # save at this step (the best so far is kept on disk)
    stopped_early: bool = False
    summary_extra: dict = dataclasses.field(default_factory=dict)
    summary: dict | None = None  # set once summary.json is written
    wall_start: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def plan(self) -> Plan:
        return self.trainer.plan

    @property
    def monitor(self) -> tuple[str, str]:
        """(split, metric) of `checkpoint.monitor`; the split may be an EMA one."""
        split, _, name = self.config.checkpoint.monitor.partition("/")
        return split, name

    def monitored(self, results: dict[str, dict[str, float]]) -> float | None:
        split, name = self.monitor
        return results.get(split, {}).get(name)

    def message(self, text: str) -> None:
        self.progress.message(text)

    def record(self) -> dict[str, Any]:
        """What a checkpoint carries besides the state (fetches the pending train metrics)."""
        return {"window": self.window.snapshot(self.trainer.backend,
                                               skip_nonfinite=self.config.guard.skip_nonfinite),
                "best": self.best, "final": self.final, "train_seconds": self.train_seconds,
                "examples_seen": self.examples_seen, "early_stopping": self.stopping}

    def evaluate(self, state, *, step: int, final: bool, splits, write_files: bool,
                 limit: int = 0) -> dict[str, dict[str, float]]:
        """Metrics of `splits` for `state` (the first `limit` eval batches when > 0), plus
        what hooks evaluate beside them (the EMA weights' '<split>_ema', whole splits)."""
        results = self.trainer.evaluate_all(state, step=step, final=final, workdir=self.workdir,
                                            write_files=write_files, splits=splits, limit=limit)
        for hook in self.hooks:
            results.update(hook.evaluations(self, state, step=step, splits=splits))
        return results

    def log_train(self, step: int) -> None:
        """The train metrics of the steps since the last log, written and shown."""
        metrics = self.window.take(self.trainer.backend,
                                   skip_nonfinite=self.config.guard.skip_nonfinite, step=step,
                                   max_skipped_fraction=self.config.guard.max_skipped_fraction)
        metrics["epoch"] = step / self.plan.steps_per_epoch
        self.writer.write(step, TRAIN, metrics)
        monitor = self.trainer.task.monitor
        self.progress.update(step, {k: metrics[k] for k in ("loss", monitor) if k in metrics})

    def log_eval(self, step: int, results: dict[str, dict[str, float]], last: bool) -> None:
        """Writes an evaluation, keeps it as the final one and the best per split: best by
        `checkpoint.monitor`'s metric (the one the best checkpoint is chosen by, so
        `best.test` is of the same step), the task's headline metric where a split lacks it."""
        task = self.trainer.task
        _, metric = self.monitor
        for name, result in results.items():
            self.writer.write(step, name, result)
            self.final[name] = result
            key, mode = ((metric, self.config.checkpoint.mode) if metric in result
                         else (task.monitor, task.monitor_mode))
            if not is_test(name) and better(result[key], self.best.get(name, {}).get(key),
                                            mode):
                self.best[name] = {**result, "step": step}
        self.message(f"step {step}: " + "  ".join(
            f"{name}{' (not for selection)' if is_test(name) and not last else ''} "
            f"{task.monitor} {results[name][task.monitor]:.4f}" for name in results))

    def close(self) -> None:
        self.progress.close()
        self.writer.close()
        self.checkpoints.close()


def open_run(config, workdir: Path, trainer: Trainer, hooks: list, stream) -> Context:
    """Resumes or starts the run in `workdir` (created here: every check that can refuse
    the config ran before) and reports what it will train."""
    images = preview_images(config, trainer.splits[TRAIN]) if config.data.preview else None
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir / runs.CHECKPOINTS_DIRNAME,
                              keep_last=config.checkpoint.keep_last,
                              keep_best=config.checkpoint.keep_best,
                              best_mode=config.checkpoint.mode)
    start, carried, state, backend, plan = 0, {}, trainer.state, trainer.backend, trainer.plan
    if checkpoints.steps():
        try:
            host_state, carried, start = checkpoints.restore(trainer.abstract_state)
        except CheckpointError as e:
            raise ConfigError(f"{e}; resume with the config that wrote it, or start a new "
                              "--workdir") from None
        state = backend.put_state(host_state)
    primary = jax.process_index() == 0
    class_counts = _class_counts(trainer.dataset, trainer.splits)
    if primary:
        run_dir = runs.RunDir(workdir)
        if start < plan.total_steps:
            run_dir.mark_incomplete()  # a stale marker: an extended run trains on
        # Steps after the checkpoint are replayed: drop what they logged the first time.
        truncate_metrics(workdir / writers.METRICS_FILENAME, start)
        writers.truncate_tensorboard(workdir / writers.TENSORBOARD_DIRNAME, start)
        mlflow = (writers.MlflowLog(config.logging.mlflow, config.logging.mlflow_experiment,
                                    workdir, config.to_dict())
                  if config.logging.mlflow else None)
        writer = writers.MetricWriter(workdir, tensorboard=config.logging.tensorboard,
                                      csv=config.logging.csv, mlflow=mlflow)
        progress = writers.Progress(plan.total_steps, initial_step=start,
                                    examples_per_step=config.data.batch_size, stream=stream,
                                    tty=None if config.logging.progress else False)
        _write_config(run_dir, config, plan, trainer.splits, class_counts)
        (workdir / runs.ENV_FILENAME).write_text(json.dumps(
            environment.describe(backend.devices, config.parallel.backend), indent=2) + "\n")
    else:
        writer = progress = _Silent()
    ctx = Context(config=config, workdir=workdir, trainer=trainer, checkpoints=checkpoints,
                  writer=writer, progress=progress, primary=primary, start=start, state=state,
                  hooks=hooks, **{k: v for k, v in carried.items() if k != "early_stopping"},
                  **({"stopping": carried["early_stopping"]} if carried else {}))
    if isinstance(ctx.window, dict):
        ctx.window = Window(**ctx.window)
    if images is not None and primary:
        path = augment.preview_png(augment.parse(config.data.augmentation),
                                   jax.random.key(config.seed), images,
                                   workdir / runs.PREVIEW_FILENAME, columns=PREVIEW_COLUMNS)
        ctx.message(f"augmentation preview: {path}")
    ctx.message(f"{config.model.name} on {config.data.name}: {plan.total_steps} steps "
                f"({plan.steps_per_epoch}/epoch), {backend.kind} over {backend.num_devices} "
                f"{backend.devices[0].platform} device(s), compiled in "
                f"{trainer.compile_seconds:.1f}s")
    for name, counts in (class_counts or {}).items():
        ctx.message(_describe_counts(name, counts))
    for line in trainer.notes:
        ctx.message(line)
    if start:
        ctx.message(f"resuming from the checkpoint at step {start} in {checkpoints.directory}")
    return ctx


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drops logged events after `last_step`: a resumed run logs them again, identically.
    The kept lines stay byte for byte as written; a half-written last line goes."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
        if step <= last_step:
            keep.append(line if line.endswith("\n") else line + "\n")
    path.write_text("".join(keep))


def _write_config(run_dir: runs.RunDir, config, plan: Plan, splits, class_counts) -> None:
    """config.json: written once, and again when the run is extended (a longer
    train.duration), which it then records."""
    extended = []
    if run_dir.config.exists():
        saved = json.loads(run_dir.config.read_text())
        old_total = saved.get("derived", {}).get("total_steps")
        if old_total in (None, plan.total_steps):
            return
        extended = [*saved.get("extended_from_steps", []), old_total]
    run_dir.config.write_text(json.dumps(
        {"config": config.to_dict(), "derived": dataclasses.asdict(plan),
         "num_examples": {k: len(v) for k, v in splits.items()},
         **({"class_counts": class_counts} if class_counts else {}),
         **({"extended_from_steps": extended} if extended else {})},
        indent=2, default=str) + "\n")


def _class_counts(dataset: data_lib.Dataset, splits) -> dict[str, list[int]] | None:
    """Examples of each class in each split, for data with one class label per example
    (None otherwise): how imbalanced the run's data is, said before it trains."""
    if dataset.num_classes is None:
        return None
    counts = {}
    for name, split in splits.items():
        if not isinstance(split, data_lib.ArraySplit):
            continue  # a streamed split's labels live in its records: counting reads them all
        labels = np.asarray(split.targets)
        if labels.ndim != 1 or len(labels) != len(split):
            return None
        counts[name] = np.bincount(labels.astype(np.int64),
                                   minlength=dataset.num_classes).tolist()
    return counts or None


def _describe_counts(split: str, counts: list[int]) -> str:
    """One line; past 20 classes only the extremes, which say how imbalanced it is."""
    total = sum(counts)
    if len(counts) <= 20:
        listed = "  ".join(f"{c}: {n}" for c, n in enumerate(counts))
    else:
        low, high = int(np.argmin(counts)), int(np.argmax(counts))
        listed = (f"{len(counts)} classes, fewest {counts[low]} (class {low}), most "
                  f"{counts[high]} (class {high})")
    return f"class counts {split} ({total} examples): {listed}"

