"""The one training loop: every experiment runs through `train_and_evaluate`.

What differs between experiments is the task and the config; this loop only moves
batches through the compiled step, evaluates on a cadence and writes what a researcher
reads afterwards: metrics.jsonl, TensorBoard events, curves.png and summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import data as data_lib
from jaxdl import tasks
from jaxdl.config import Clock, ConfigError
from jaxdl.training import environment, optim, parallel, step as step_lib, writers
from jaxdl.training.state import create_state

TRAIN = "train"
EVAL_SPLITS = ("validation", "test")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every duration of the run, converted to steps once."""

    steps_per_epoch: int
    total_steps: int
    log_every: int
    eval_every: int
    total_updates: int

    @classmethod
    def from_config(cls, config, num_train_examples: int) -> "Plan":
        steps_per_epoch = data_lib.steps_per_epoch(num_train_examples, config.data.batch_size)
        clock = Clock(steps_per_epoch=steps_per_epoch, batch_size=config.data.batch_size)
        total = clock.steps(config.train.duration)
        if total <= 0:
            raise ConfigError(f"config.train.duration={config.train.duration!r} is zero steps")
        return cls(steps_per_epoch=steps_per_epoch, total_steps=total,
                   log_every=clock.steps(config.train.log_every),
                   eval_every=clock.steps(config.train.eval_every),
                   total_updates=max(1, total // config.optimizer.grad_accum_steps))

    def to_updates(self, config):
        clock = Clock(steps_per_epoch=self.steps_per_epoch, batch_size=config.data.batch_size)
        return lambda text: clock.steps(text) // config.optimizer.grad_accum_steps

    @staticmethod
    def due(step: int, every: int, total: int) -> bool:
        """True after `step` steps when the cadence `every` (0 = only at the end) is due."""
        return step == total or (every > 0 and step % every == 0)


def load_splits(config) -> tuple[data_lib.Dataset, dict[str, data_lib.ArraySplit]]:
    """The dataset split into train / validation / test by the config's fractions and seed."""
    dataset = data_lib.load_source(config.data.name)
    fractions = {"validation": config.data.validation_fraction,
                 "test": config.data.test_fraction}
    fractions[TRAIN] = 1.0 - sum(fractions.values())
    if dataset.num_classes is None:
        indices = data_lib.random_split(len(dataset.targets), fractions, config.data.split_seed)
    else:
        indices = data_lib.stratified_split(dataset.targets, fractions, config.data.split_seed)
    splits = {name: data_lib.ArraySplit(dataset.features[idx], dataset.targets[idx])
              for name, idx in indices.items() if len(idx)}
    return dataset, splits


def _mean_metrics(sums: dict[str, float]) -> dict[str, float]:
    count = sums["count"]
    return {k: v / count for k, v in sums.items() if k != "count"}


class _Window:
    """Train metrics of the steps since the last log, kept on device until fetched."""

    def __init__(self):
        self.pending = []

    def add(self, metrics):
        self.pending.append(metrics)

    def fetch(self, backend: parallel.Backend) -> dict[str, float]:
        fetched = backend.get_metrics(self.pending)
        self.pending = []
        sums = {k: float(sum(m["sums"][k] for m in fetched)) for k in fetched[0]["sums"]}
        out = _mean_metrics(sums)
        out.update({k: float(v) for k, v in fetched[-1]["scalars"].items()})
        return out


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


@dataclasses.dataclass
class Trainer:
    """Everything a run needs, built from the config: the same pieces for the loop, the
    benchmarks and the tests, so none of them trains a copy of the step."""

    config: Any
    dataset: data_lib.Dataset
    splits: dict[str, data_lib.ArraySplit]
    plan: Plan
    backend: parallel.Backend
    task: tasks.Task
    tx: Any
    state: Any  # on the devices
    train_step: Any  # compiled
    eval_step: Any  # compiled
    compile_seconds: float

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """The host batch of global step `step` (0-based), mask included."""
        batch = data_lib.train_batch(self.splits[TRAIN], self.config.data.batch_size,
                                     self.config.seed, step)
        return _with_mask(batch)

    def evaluate(self, state, split_name: str) -> dict[str, float]:
        """Metrics over every example of the split: the last batch is padded and masked."""
        total = None
        for batch in data_lib.eval_batches(self.splits[split_name],
                                           self.config.data.eval_batch_size):
            sums = self.eval_step(state, self.backend.put_batch(batch))
            total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
        sums = {k: float(v) for k, v in self.backend.get_metrics(total).items()}
        return {**_mean_metrics(sums), "examples": sums["count"]}


def _with_mask(batch):
    return {**batch, "mask": np.ones(len(batch["targets"]), np.float32)}


def build(config) -> Trainer:
    """Loads the data, builds task and optimizer, initialises and places the state, and
    compiles the train and eval steps once. Raises ConfigError for a config the data or
    the devices cannot honour."""
    try:
        dataset, splits = load_splits(config)
        if TRAIN not in splits:
            raise ConfigError("the train split is empty")
        plan = Plan.from_config(config, len(splits[TRAIN]))
        backend = parallel.Backend(config.parallel.backend,
                                   parallel.select_devices(config.parallel.num_devices))
        task = tasks.build_task(config, dataset, axis_name=backend.axis_name)
        tx, _ = optim.make_optimizer(config.optimizer, config.schedule,
                                     total_updates=plan.total_updates,
                                     to_updates=plan.to_updates(config))
    except ValueError as e:
        raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None

    example = _with_mask(data_lib.train_batch(splits[TRAIN], config.data.batch_size,
                                              config.seed, 0))
    state = backend.put_state(create_state(task, tx, config.seed, example["inputs"][:1]))
    train_step, train_seconds = backend.compile(
        step_lib.make_train_step(task, tx, axis_name=backend.axis_name), state,
        backend.put_batch(example), donate_state=True)
    eval_example = next(data_lib.eval_batches(splits[TRAIN], config.data.eval_batch_size))
    eval_step, eval_seconds = backend.compile(
        step_lib.make_eval_step(task, axis_name=backend.axis_name), state,
        backend.put_batch(eval_example), donate_state=False)
    return Trainer(config=config, dataset=dataset, splits=splits, plan=plan, backend=backend,
                   task=task, tx=tx, state=state, train_step=train_step, eval_step=eval_step,
                   compile_seconds=train_seconds + eval_seconds)


def run(config, workdir: Path, *, stream=sys.stderr) -> Iterator[dict[str, Any]]:
    """Trains `config` writing into `workdir`; yields one report per evaluation.

    The final report (after the last step) carries the run summary under `summary`.
    """
    workdir = Path(workdir)
    trainer = build(config)
    splits, plan, backend, task = trainer.splits, trainer.plan, trainer.backend, trainer.task
    state, train_step, eval_step = trainer.state, trainer.train_step, trainer.eval_step
    batch_size = config.data.batch_size
    eval_splits = [name for name in EVAL_SPLITS if name in splits]

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(
        {"config": config.to_dict(), "derived": dataclasses.asdict(plan),
         "num_examples": {k: len(v) for k, v in splits.items()}}, indent=2, default=str) + "\n")
    (workdir / "env.json").write_text(json.dumps(
        environment.describe(backend.devices, config.parallel.backend), indent=2) + "\n")

    writer = writers.MetricWriter(workdir, tensorboard=config.logging.tensorboard)
    progress = writers.Progress(plan.total_steps, examples_per_step=batch_size, stream=stream,
                                tty=None if config.logging.progress else False)
    progress.message(f"{config.model.name} on {config.data.name}: {plan.total_steps} steps "
                     f"({plan.steps_per_epoch}/epoch), {backend.kind} over "
                     f"{backend.num_devices} {backend.devices[0].platform} device(s), compiled "
                     f"in {trainer.compile_seconds:.1f}s")
    best: dict[str, dict[str, float]] = {}
    final: dict[str, dict[str, float]] = {}
    window = _Window()
    train_seconds, examples_seen = 0.0, 0
    wall_start = time.perf_counter()
    try:
        segment_start = time.perf_counter()
        batches = data_lib.train_batches(splits[TRAIN], batch_size, config.seed)
        for step in range(1, plan.total_steps + 1):
            state, metrics = train_step(state, backend.put_batch(_with_mask(next(batches))))
            window.add(metrics)
            examples_seen += batch_size
            log_now = Plan.due(step, plan.log_every, plan.total_steps)
            eval_now = Plan.due(step, plan.eval_every, plan.total_steps)
            if not (log_now or eval_now):
                continue
            train_metrics = window.fetch(backend)  # waits for the device
            train_seconds += time.perf_counter() - segment_start
            train_metrics["epoch"] = step / plan.steps_per_epoch
            writer.write(step, TRAIN, train_metrics)
            progress.update(step, {k: train_metrics[k] for k in ("loss", task.monitor)})
            if not math.isfinite(train_metrics["loss"]):
                raise FloatingPointError(
                    f"non-finite train loss {train_metrics['loss']} in steps "
                    f"{step - plan.log_every + 1}..{step}")
            if eval_now:
                report = {"step": step}
                for name in eval_splits:
                    result = trainer.evaluate(state, name)
                    writer.write(step, name, result)
                    report[name] = final[name] = result
                    if _better(result[task.monitor], best.get(name, {}).get(task.monitor),
                               task.monitor_mode):
                        best[name] = {**result, "step": step}
                progress.message(f"step {step}: " + "  ".join(
                    f"{name} {task.monitor} {report[name][task.monitor]:.4f}"
                    for name in eval_splits))
                if step == plan.total_steps:
                    report["summary"] = {
                        "final": final, "best": best, "monitor": task.monitor,
                        "monitor_mode": task.monitor_mode, "steps": plan.total_steps,
                        "epochs": plan.total_steps / plan.steps_per_epoch,
                        "train_examples_per_second": examples_seen / train_seconds,
                        "train_seconds": train_seconds,
                        "compile_seconds": trainer.compile_seconds,
                        "wall_seconds": time.perf_counter() - wall_start,
                        "last_train": train_metrics,
                    }
                    (workdir / "summary.json").write_text(
                        json.dumps(report["summary"], indent=2) + "\n")
                yield report
            segment_start = time.perf_counter()
    finally:
        progress.close()
        writer.close()
        if config.logging.plot:
            bookkeeping = ("epoch", "examples")
            records = [{k: v for k, v in r.items() if k not in bookkeeping}
                       for r in writers.read_metrics(workdir / "metrics.jsonl")]
            writers.plot_curves(records,
                                workdir / "curves.png",
                                title=f"{config.model.name} on {config.data.name}")


def train_and_evaluate(config, workdir: Path, *, stream=sys.stderr) -> dict[str, Any]:
    """Runs the whole training; returns the summary (also written to summary.json)."""
    report = {}
    for report in run(config, workdir, stream=stream):
        pass
    return report["summary"]
