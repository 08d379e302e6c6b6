"""The one training loop: every experiment runs through `train_and_evaluate`.

What differs between experiments is the task and the config; this loop only moves
batches through the compiled step, evaluates on a cadence and writes what a researcher
reads afterwards: metrics.jsonl, TensorBoard events, curves.png and summary.json.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import data as data_lib
from jaxdl import tasks
from jaxdl.config import Clock, ConfigError
from jaxdl.training import environment, optim, parallel, step as step_lib, writers
from jaxdl.training.checkpoints import Checkpoints
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
    checkpoint_every: int
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
                   checkpoint_every=clock.steps(config.checkpoint.every),
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
    """Train metrics of the steps since the last log: kept on device until fetched, then
    summed on the host in step order, so a resumed run sums exactly as an uninterrupted one
    (the partial sums travel in the checkpoint)."""

    def __init__(self, sums: dict[str, float] | None = None,
                 scalars: dict[str, float] | None = None):
        self.pending = []
        self.sums = dict(sums or {})
        self.scalars = dict(scalars or {})

    def add(self, metrics):
        self.pending.append(metrics)

    def absorb(self, backend: parallel.Backend) -> None:
        for metrics in backend.get_metrics(self.pending):  # waits for the device
            for name, value in metrics["sums"].items():
                self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.scalars = {name: float(value) for name, value in metrics["scalars"].items()}
        self.pending = []

    def take(self, backend: parallel.Backend) -> dict[str, float]:
        """The window's mean metrics and last scalars; starts a new window."""
        self.absorb(backend)
        out = {**_mean_metrics(self.sums), **self.scalars}
        self.sums, self.scalars = {}, {}
        return out

    def snapshot(self, backend: parallel.Backend) -> dict[str, Any]:
        self.absorb(backend)
        return {"sums": dict(self.sums), "scalars": dict(self.scalars)}


class RunInterrupted(Exception):
    """Training stopped on request (a signal); the run is checkpointed at `step`."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; a checkpoint was saved there")
        self.step = step


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
    abstract_state: Any  # shapes and dtypes of one copy: the checkpoint restore target
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
    initial = create_state(task, tx, config.seed, example["inputs"][:1])
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), initial)
    state = backend.put_state(initial)
    train_step, train_seconds = backend.compile(
        step_lib.make_train_step(task, tx, axis_name=backend.axis_name), state,
        backend.put_batch(example), donate_state=True)
    eval_example = next(data_lib.eval_batches(splits[TRAIN], config.data.eval_batch_size))
    eval_step, eval_seconds = backend.compile(
        step_lib.make_eval_step(task, axis_name=backend.axis_name), state,
        backend.put_batch(eval_example), donate_state=False)
    return Trainer(config=config, dataset=dataset, splits=splits, plan=plan, backend=backend,
                   task=task, tx=tx, state=state, abstract_state=abstract_state, train_step=train_step, eval_step=eval_step,
                   compile_seconds=train_seconds + eval_seconds)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drops logged events after `last_step`: a resumed run logs them again, identically."""
    if not path.exists():
        return
    keep = [json.dumps(r, allow_nan=False) for r in writers.read_metrics(path)
            if r["step"] <= last_step]
    # read_metrics decoded non-finite values; write them back the way the writer does.
    path.write_text("".join(line + "\n" for line in keep) if keep else "")


def _fresh_progress() -> dict[str, Any]:
    return {"window": {}, "best": {}, "final": {}, "train_seconds": 0.0, "examples_seen": 0}


def run(config, workdir: Path, *, stream=sys.stderr,
        should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if it has one;
    yields one report per evaluation. The last report carries the run summary.

    `should_stop` is polled after every step; when it turns true the run is checkpointed
    and RunInterrupted is raised.
    """
    workdir = Path(workdir)
    trainer = build(config)
    splits, plan, backend, task = trainer.splits, trainer.plan, trainer.backend, trainer.task
    state, train_step = trainer.state, trainer.train_step
    batch_size = config.data.batch_size
    eval_splits = [name for name in EVAL_SPLITS if name in splits]
    monitor_split, _, monitor_name = config.checkpoint.monitor.partition("/")
    if monitor_split not in eval_splits or not monitor_name:
        raise ConfigError(f"config.checkpoint.monitor={config.checkpoint.monitor!r}: write "
                          f"'<split>/<metric>' with split one of {', '.join(eval_splits)}")

    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir / "checkpoints", keep_last=config.checkpoint.keep_last,
                              keep_best=config.checkpoint.keep_best,
                              best_mode=config.checkpoint.mode)
    start, carried = 0, _fresh_progress()
    if checkpoints.steps():
        host_state, carried, start = checkpoints.restore(trainer.abstract_state)
        state = backend.put_state(host_state)
    _truncate_metrics(workdir / writers.METRICS_FILENAME, start)
    if not (workdir / "config.json").exists():
        (workdir / "config.json").write_text(json.dumps(
            {"config": config.to_dict(), "derived": dataclasses.asdict(plan),
             "num_examples": {k: len(v) for k, v in splits.items()}},
            indent=2, default=str) + "\n")
    (workdir / "env.json").write_text(json.dumps(
        environment.describe(backend.devices, config.parallel.backend), indent=2) + "\n")

    writer = writers.MetricWriter(workdir, tensorboard=config.logging.tensorboard)
    progress = writers.Progress(plan.total_steps, initial_step=start, examples_per_step=batch_size,
                                stream=stream, tty=None if config.logging.progress else False)
    progress.message(f"{config.model.name} on {config.data.name}: {plan.total_steps} steps "
                     f"({plan.steps_per_epoch}/epoch), {backend.kind} over "
                     f"{backend.num_devices} {backend.devices[0].platform} device(s), compiled "
                     f"in {trainer.compile_seconds:.1f}s")
    if start:
        progress.message(f"resuming from the checkpoint at step {start} in "
                         f"{checkpoints.directory}")
    best, final = carried["best"], carried["final"]
    window = _Window(**carried["window"])
    train_seconds, examples_seen = carried["train_seconds"], carried["examples_seen"]
    wall_start = time.perf_counter()

    def save(step: int, monitor: float | None) -> None:
        checkpoints.save(step, backend.get_state(state), {
            "window": window.snapshot(backend), "best": best, "final": final,
            "train_seconds": train_seconds, "examples_seen": examples_seen}, monitor=monitor)

    try:
        segment_start = time.perf_counter()
        batches = data_lib.train_batches(splits[TRAIN], batch_size, config.seed, start)
        in_flight = collections.deque(maxlen=config.parallel.max_in_flight)
        for step in range(start + 1, plan.total_steps + 1):
            state, metrics = train_step(state, backend.put_batch(_with_mask(next(batches))))
            window.add(metrics)
            if len(in_flight) == in_flight.maxlen:
                # A deep queue of steps with cross-device all-reduces can deadlock XLA's CPU
                # collectives (benchmarks/README.md); waiting on an older step bounds it.
                jax.block_until_ready(in_flight.popleft())
            in_flight.append(metrics)
            examples_seen += batch_size
            log_now = Plan.due(step, plan.log_every, plan.total_steps)
            eval_now = Plan.due(step, plan.eval_every, plan.total_steps)
            save_now = Plan.due(step, plan.checkpoint_every, plan.total_steps)
            stop_now = should_stop()
            if not (log_now or eval_now or save_now or stop_now):
                continue
            window.absorb(backend)  # waits for the device
            train_seconds += time.perf_counter() - segment_start
            report = {"step": step}
            if log_now or eval_now:
                train_metrics = window.take(backend)
                train_metrics["epoch"] = step / plan.steps_per_epoch
                writer.write(step, TRAIN, train_metrics)
                progress.update(step, {k: train_metrics[k] for k in ("loss", task.monitor)})
                if not math.isfinite(train_metrics["loss"]):
                    raise FloatingPointError(
                        f"non-finite train loss {train_metrics['loss']} in steps "
                        f"{step - plan.log_every + 1}..{step}")
            if eval_now:
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
            if save_now or stop_now:
                monitored = report.get(monitor_split, {}).get(monitor_name)
                save(step, monitored)
            if stop_now and step < plan.total_steps:
                raise RunInterrupted(step)
            if step == plan.total_steps:
                report["summary"] = {
                    "final": final, "best": best, "monitor": task.monitor,
                    "monitor_mode": task.monitor_mode, "steps": plan.total_steps,
                    "epochs": plan.total_steps / plan.steps_per_epoch,
                    "resumed_from_step": start,
                    "train_examples_per_second": examples_seen / max(train_seconds, 1e-9),
                    "train_seconds": train_seconds,
                    "compile_seconds": trainer.compile_seconds,
                    "wall_seconds": time.perf_counter() - wall_start,  # of this process
                }
                (workdir / "summary.json").write_text(
                    json.dumps(report["summary"], indent=2) + "\n")
            if eval_now:
                yield report
            segment_start = time.perf_counter()
    finally:
        progress.close()
        writer.close()
        checkpoints.close()
        if config.logging.plot:
            bookkeeping = ("epoch", "examples")
            records = [{k: v for k, v in r.items() if k not in bookkeeping}
                       for r in writers.read_metrics(workdir / writers.METRICS_FILENAME)]
            writers.plot_curves(records, workdir / "curves.png",
                                title=f"{config.model.name} on {config.data.name}")


def train_and_evaluate(config, workdir: Path, *, stream=sys.stderr,
                       should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Runs (or resumes) the whole training; returns the summary, also in summary.json."""
    report = {}
    for report in run(config, workdir, stream=stream, should_stop=should_stop):
        pass
    return report["summary"]
