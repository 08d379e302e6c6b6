"""The one training loop: every experiment runs through `train_and_evaluate`.

What differs between experiments is the task and the config; this loop only moves
batches through the compiled step, evaluates on a cadence and writes what a researcher
reads afterwards: metrics.jsonl, TensorBoard events, curves.png and summary.json.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import data as data_lib, runs
from jaxdl.data import augment
from jaxdl import tasks
from jaxdl.models import layers
from jaxdl.schema import Clock, ConfigError
from jaxdl.training import environment, feeding, optim, parallel, step as step_lib, writers
from jaxdl.training.checkpoints import (CheckpointError, Checkpoints, merge_by_path,
                                        read_weights)
from jaxdl.training.state import create_state

TRAIN = "train"
TEST = "test"  # reported, never used to choose anything
EVAL_SPLITS = ("validation", TEST)


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
    def from_config(cls, config, epoch_examples: int) -> "Plan":
        """`epoch_examples`: examples one epoch visits (`data.epoch_length` of the train split
        under `config.data.sampling`: its size, or more when classes are oversampled)."""
        steps_per_epoch = data_lib.steps_per_epoch(epoch_examples, config.data.batch_size)
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


def load_splits(config) -> tuple[data_lib.Dataset, dict[str, Any]]:
    """The dataset split into train / validation / test by the config's fractions and seed.
    `config.data.options` are passed to the source's loader as keyword arguments.

    A split the dataset ships with (MNIST's test files) is used as it is; its fraction
    must then be 0, and the other splits come out of the remaining pool. With
    `config.data.folds` = k >= 2, validation is fold `config.data.fold` of a (stratified)
    k-fold of the pool the test split leaves, and train the other k - 1 folds: the test
    split is the same for every fold. A source that streams ships every split, train
    included (a lazy split object, read by `take`), and leaves no pool to cut fractions from.
    """
    options = dict(config.data.options)  # the source loader's own keyword arguments
    if config.data.data_dir:
        options["data_dir"] = config.data.data_dir
    try:
        dataset = data_lib.load_source(config.data.name, **options)
    except TypeError as e:
        if "'data_dir'" in str(e):
            raise ConfigError(f"config.data.data_dir applies to file datasets, not to "
                              f"{config.data.name!r}") from None
        raise ConfigError(f"config.data.options={options!r} do not fit source "
                          f"{config.data.name!r}: {e}") from None
    except FileNotFoundError as e:  # offline and not prepared: say where and how
        raise ConfigError(str(e)) from None
    predefined = {name: split if hasattr(split, "take") else data_lib.ArraySplit(*split)
                  for name, split in (dataset.predefined_splits or {}).items()}
    fractions = {"validation": config.data.validation_fraction,
                 "test": config.data.test_fraction}
    for name, split in predefined.items():
        if fractions.pop(name, 0.0):
            raise ConfigError(f"config.data.{name}_fraction must be 0.0 for "
                              f"{config.data.name!r}: it ships a fixed {name} split of "
                              f"{len(split)} examples")
    if TRAIN in predefined:  # streamed: no pool in memory to cut fractions from
        for name, fraction in fractions.items():
            if fraction:
                raise ConfigError(f"config.data.{name}_fraction must be 0.0 for "
                                  f"{config.data.name!r}: its splits are streamed, so none "
                                  f"can be cut out by fraction; name a fixed {name} split "
                                  f"in config.data.options instead (tfds: {name}_split)")
        return dataset, predefined
    folds = config.data.folds
    if folds:
        fractions.pop("validation", None)  # validation is a fold of what remains
    fractions[TRAIN] = 1.0 - sum(fractions.values())
    if dataset.num_classes is None:
        indices = data_lib.random_split(len(dataset.targets), fractions, config.data.split_seed)
    else:
        indices = data_lib.stratified_split(dataset.targets, fractions, config.data.split_seed)
    if folds:
        pool = indices.pop(TRAIN)
        parts = (data_lib.kfold(len(pool), folds, config.data.split_seed)
                 if dataset.num_classes is None else
                 data_lib.stratified_kfold(dataset.targets[pool], folds, config.data.split_seed))
        held_out = config.data.fold
        indices = {"validation": pool[parts[held_out]], **indices, TRAIN: pool[np.sort(
            np.concatenate([part for i, part in enumerate(parts) if i != held_out]))]}
    splits = {name: data_lib.ArraySplit(dataset.features[idx], dataset.targets[idx])
              for name, idx in indices.items() if len(idx)}
    splits.update(predefined)
    return dataset, splits


def _mean_metrics(sums: dict[str, float]) -> dict[str, float]:
    count = sums.get("count", 0.0)
    if not count:  # every step of the window was skipped
        return {"loss": math.nan}
    return {k: v / count for k, v in sums.items() if k != "count"}


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss or gradient norm."""


class _Window:
    """Train metrics of the steps since the last log: kept on device until fetched, then
    summed on the host in step order, so a resumed run sums exactly as an uninterrupted one
    (the partial sums travel in the checkpoint). Every step's finiteness is checked here."""

    def __init__(self, sums: dict[str, float] | None = None,
                 scalars: dict[str, float] | None = None, skipped: int = 0, steps: int = 0):
        self.pending: list[tuple[int, Any]] = []
        self.sums = dict(sums or {})
        self.scalars = dict(scalars or {})
        self.skipped = skipped
        self.steps = steps  # fetched in this window, skipped ones included
        self.last_finite: tuple[int, dict[str, float]] | None = None

    def add(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))

    def absorb(self, backend: parallel.Backend, *, skip_nonfinite: bool) -> None:
        """Fetches the pending steps (waiting for the device) and merges them in order.

        A non-finite step raises NonFiniteError naming it, unless `skip_nonfinite`, where
        the step left the state unchanged and only counts as skipped.
        """
        fetched = backend.get_metrics([metrics for _, metrics in self.pending])
        pending, self.pending = self.pending, []
        for (step, _), metrics in zip(pending, fetched):
            sums = {name: float(value) for name, value in metrics["sums"].items()}
            scalars = {name: float(value) for name, value in metrics["scalars"].items()}
            health = {"loss": sums["loss"] / sums["count"], "grad_norm": scalars["grad_norm"],
                      "param_norm": scalars["param_norm"]}
            self.steps += 1
            if not scalars.pop("finite"):
                if skip_nonfinite:
                    self.skipped += 1
                    continue
                last = (f"the last finite step was {self.last_finite[0]}: " + ", ".join(
                    f"{k} {v:.6g}" for k, v in self.last_finite[1].items())
                    if self.last_finite else "no finite step was fetched before it")
                raise NonFiniteError(
                    f"non-finite training at step {step}: " + ", ".join(
                        f"{k} {v}" for k, v in health.items()) + f"; {last}")
            self.last_finite = (step, health)
            for name, value in sums.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
            self.scalars = scalars

    def take(self, backend: parallel.Backend, *, skip_nonfinite: bool, step: int,
             max_skipped_fraction: float) -> dict[str, float]:
        """The window's mean metrics, last scalars and skipped steps; starts a new window.
        Raises NonFiniteError when more than `max_skipped_fraction` of the window's steps
        were skipped: a model that only survives by skipping is not training."""
        self.absorb(backend, skip_nonfinite=skip_nonfinite)
        if skip_nonfinite and self.skipped > max_skipped_fraction * self.steps:
            raise NonFiniteError(
                f"{self.skipped} of the {self.steps} steps up to step {step} were non-finite "
                f"and skipped (more than config.guard.max_skipped_fraction="
                f"{max_skipped_fraction}); the last finite step was " + (
                    f"{self.last_finite[0]}: " + ", ".join(
                        f"{k} {v:.6g}" for k, v in self.last_finite[1].items())
                    if self.last_finite else "not in this window"))
        out = {**_mean_metrics(self.sums), **self.scalars}
        if skip_nonfinite:
            out["skipped_steps"] = float(self.skipped)
        self.sums, self.scalars, self.skipped, self.steps = {}, {}, 0, 0
        return out

    def snapshot(self, backend: parallel.Backend, *, skip_nonfinite: bool) -> dict[str, Any]:
        self.absorb(backend, skip_nonfinite=skip_nonfinite)
        return {"sums": dict(self.sums), "scalars": dict(self.scalars), "skipped": self.skipped,
                "steps": self.steps}


class _Silent:
    """Writer and progress of a process other than 0: one process speaks for the run."""

    def write(self, *args, **kwargs):
        pass

    update = message = close = write


class OutOfMemoryError(MemoryError):
    """The device ran out of memory; the message carries the sizes that decide it."""


def _megabytes(tree) -> str:
    total = sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                for x in jax.tree.leaves(tree))
    return f"{total / 2**20:.1f} MiB"


@contextlib.contextmanager
def explain_out_of_memory(config, abstract_state, num_devices: int):
    """Re-raises XLA's RESOURCE_EXHAUSTED with the numbers that decide memory use per
    device and what to change, instead of a bare allocation failure."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        raise OutOfMemoryError(
            f"out of device memory ({str(e).strip().splitlines()[0][:200]}): per-device batch "
            f"{config.data.batch_size // num_devices} of a global {config.data.batch_size}, "
            f"parameters {_megabytes(abstract_state.params)}, optimizer state "
            f"{_megabytes(abstract_state.opt_state)}, model state "
            f"{_megabytes(abstract_state.model_state)} per device. Lower data.batch_size and "
            "raise optimizer.grad_accum_steps to keep the effective batch, set "
            "precision='bf16', or add devices") from e


def _os_reason(error: Exception) -> str:
    """The operating system's words for a write failure, which orbax buries in a path."""
    code = re.search(r"os_error_code='?(\d+)", str(error))
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the earlier ones are intact."""


class RunInterrupted(Exception):
    """Training stopped on request (a signal); the run is checkpointed at `step`."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; a checkpoint was saved there")
        self.step = step


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when `value` improves on `best` by more than `min_delta`."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best + min_delta if mode == "max" else value < best - min_delta


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
    eval_splits: list[str]  # the non-empty ones among EVAL_SPLITS
    train_step: Any  # compiled
    eval_step: Any  # compiled: (state, batch, totals) -> totals
    eval_totals: Any  # zero running totals of the eval step, on the host
    compile_seconds: float
    train_step_cost: dict[str, float]  # XLA's per-device estimate (`_CompiledStep.cost`)
    feed: Any  # `feeding.DeviceFeed` or `feeding.HostFeed`, as config.data.pipeline says

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """The host batch of global step `step` (0-based), mask included."""
        batch = data_lib.train_batch(self.splits[TRAIN], self.config.data.batch_size,
                                     self.config.seed, step, self.config.data.sampling)
        return _with_mask(batch)

    def evaluate(self, state, split_name: str) -> dict[str, float]:
        """Metrics over every example of the split: the last batch is padded and masked."""
        totals = self.backend.put_state(self.eval_totals)
        for batch in self.feed.eval(split_name):
            totals = self.eval_step(state, batch, totals)
        sums = {k: float(v) for k, v in self.backend.get_metrics(totals).items()}
        return {**_mean_metrics(sums), "examples": sums["count"]}


    def evaluate_all(self, state, *, step: int, final: bool, workdir: Path,
                     write_files: bool, splits=None) -> dict[str, dict[str, float]]:
        """The metrics of `splits` (default: every eval split), plus what the task adds on
        the host after them (`Task.on_eval`: samples, plots, metrics over a whole split)."""
        splits = self.eval_splits if splits is None else list(splits)
        results = {name: self.evaluate(state, name) for name in splits}
        self.backend.wait_all()  # nothing of ours queued beside what on_eval dispatches
        rng = jax.random.PRNGKey(self.config.seed)
        context = tasks.EvalContext(
            step=step, final=final, workdir=workdir, write_files=write_files,
            splits=self.splits, eval_splits=tuple(splits), rng=rng,
            variables_fn=lambda: _host_variables(self.backend.get_state(state)),
            eval_inputs=functools.partial(augment.apply, augment.eval_ops(
                augment.parse(self.config.data.augmentation)), rng))
        for name, extra in self.task.on_eval(context).items():
            if name not in results:
                raise ValueError(f"task {type(self.task).__name__} reported metrics for "
                                 f"{name!r}, which is not an eval split")
            results[name].update(extra)
        return results


def _host_variables(host_state) -> dict[str, Any]:
    return {"params": host_state.params, **host_state.model_state}


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
        if config.data.preview:
            _preview_images(config, splits[TRAIN])  # refuses non-images before compiling
        eval_splits = [name for name in EVAL_SPLITS if name in splits]
        monitor_split, _, monitor_name = config.checkpoint.monitor.partition("/")
        if monitor_split == TEST:
            raise ConfigError(f"config.checkpoint.monitor={config.checkpoint.monitor!r}: the "
                              "test split never chooses anything (checkpoint, early stop, "
                              "schedule); monitor a validation split (set "
                              "config.data.validation_fraction or data.folds)")
        if monitor_split not in eval_splits or not monitor_name:
            raise ConfigError(f"config.checkpoint.monitor={config.checkpoint.monitor!r}: write "
                              "'<split>/<metric>' with split one of the non-empty eval splits: "
                              f"{', '.join(eval_splits) or 'none (set a validation_fraction)'}")
        plan = Plan.from_config(config, data_lib.epoch_length(splits[TRAIN],
                                                              config.data.sampling))
        backend = parallel.Backend(config.parallel.backend,
                                   parallel.select_devices(config.parallel.num_devices),
                                   max_in_flight=config.parallel.max_in_flight)
        task = tasks.build_task(config, dataset, axis_name=backend.axis_name,
                                train_split=splits[TRAIN])
        tx, _ = optim.make_optimizer(config.optimizer, config.schedule,
                                     total_updates=plan.total_updates,
                                     to_updates=plan.to_updates(config))
    except ValueError as e:
        raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None

    example = _with_mask(data_lib.train_batch(splits[TRAIN], config.data.batch_size,
                                              config.seed, 0))
    abstract_state = jax.eval_shape(lambda x: create_state(task, tx, config.seed, x),
                                    example["inputs"][:1])
    tasks.check_model_state(config, abstract_state.model_state, axis_name=backend.axis_name,
                            num_devices=backend.num_devices)
    with explain_out_of_memory(config, abstract_state, backend.num_devices):
        try:
            return _place_and_compile(config, dataset, splits, plan, backend, task, tx,
                                      example, abstract_state, eval_splits)
        except layers.BatchAxisError as e:  # found while tracing the step: the model's fault
            raise ConfigError(f"model {config.model.name!r}: {e}") from None


def _place_and_compile(config, dataset, splits, plan, backend, task, tx, example,
                       abstract_state, eval_splits) -> Trainer:
    state = backend.put_state(create_state(task, tx, config.seed, example["inputs"][:1]))
    augmentation = augment.parse(config.data.augmentation)
    train_step, train_seconds = backend.compile(
        step_lib.make_train_step(task, tx, axis_name=backend.axis_name,
                                 skip_nonfinite=config.guard.skip_nonfinite,
                                 augmentation=augmentation), state,
        backend.put_batch(example), donate_state=True)
    eval_example = next(data_lib.eval_batches(splits[TRAIN], config.data.eval_batch_size))
    eval_totals = step_lib.eval_totals_zeros(task, abstract_state, eval_example,
                                             augmentation=augmentation)
    eval_step, eval_seconds = backend.compile(
        step_lib.make_eval_step(task, axis_name=backend.axis_name, augmentation=augmentation),
        state, backend.put_batch(eval_example), backend.put_state(eval_totals),
        donate_state=False)
    feed = _make_feed(config, backend, splits)

    def guarded(step_fn):
        def call(state, batch, *carry):
            with explain_out_of_memory(config, abstract_state, backend.num_devices):
                return step_fn(state, batch, *carry)
        return call

    return Trainer(config=config, dataset=dataset, splits=splits, plan=plan, backend=backend,
                   task=task, tx=tx, state=state, abstract_state=abstract_state,
                   eval_splits=eval_splits, train_step=guarded(train_step),
                   eval_step=guarded(eval_step), eval_totals=eval_totals,
                   compile_seconds=train_seconds + eval_seconds,
                   train_step_cost=train_step.cost(), feed=feed)


def _make_feed(config, backend, splits):
    try:
        return feeding.make_feed(config.data.pipeline, backend, splits,
                                 batch_size=config.data.batch_size,
                                 eval_batch_size=config.data.eval_batch_size, seed=config.seed,
                                 prefetch=config.data.prefetch,
                                 sampling=config.data.sampling)
    except ValueError as e:
        raise ConfigError(f"config.data.pipeline={config.data.pipeline!r}: {e}") from None
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        need = sum(x.nbytes for split in splits.values() for x in (split.inputs, split.targets))
        raise OutOfMemoryError(
            f"the data splits ({need / 2**20:.1f} MiB) do not fit on every device next to "
            "the training state; set config.data.pipeline='host' to stream batches from "
            "the host") from e


PREVIEW_FILENAME = runs.PREVIEW_FILENAME
PREVIEW_COLUMNS = 8  # a display layout: two rows of 8 examples, before and after


def _preview_images(config, split) -> np.ndarray:
    """The first examples of a split, if they are images a PNG can show."""
    images = split.take(np.arange(min(len(split), 2 * PREVIEW_COLUMNS)))["inputs"]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype.kind != "f":
        raise ConfigError(f"config.data.preview needs float NHWC images with 1 or 3 "
                          f"channels; {config.data.name!r} gives {images.dtype} inputs of "
                          f"shape {images.shape[1:]}")
    return images


def _truncate_metrics(path: Path, last_step: int) -> None:
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


def _fresh_progress() -> dict[str, Any]:
    return {"window": {}, "best": {}, "final": {}, "train_seconds": 0.0, "examples_seen": 0,
            "early_stopping": {"best": None, "best_step": None, "bad_evals": 0}}


def _initial_weights(trainer: Trainer, path: str, loaded: dict[str, Any], step: int,
                     message: Callable[[str], None]):
    """The trainer's initial state with parameters and model state taken from another run
    (`loaded`, read from `path`), matched by parameter path; what did not match is
    reported, not hidden."""
    host = trainer.backend.get_state(trainer.state)
    params, report = merge_by_path(host.params, loaded["params"])
    model_state, state_report = merge_by_path(host.model_state, loaded.get("model_state", {}))
    message(f"init_from {path} (step {step}): loaded {report['loaded'] + state_report['loaded']}"
            " arrays" + "".join(
                f"; {kind}: {', '.join(report[kind] + state_report[kind])}"
                for kind in ("missing", "unexpected", "mismatched")
                if report[kind] + state_report[kind]))
    return trainer.backend.put_state(host.replace(params=params, model_state=model_state))


def run(config, workdir: Path, *, stream=sys.stderr,
        should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if it has one;
    yields one report per evaluation. The last report carries the run summary.

    `should_stop` is polled after every step; when it turns true the run is checkpointed
    and RunInterrupted is raised. A non-finite step raises NonFiniteError and leaves the
    last good checkpoint as the latest (unless config.guard.skip_nonfinite).
    """
    workdir = Path(workdir)
    trainer = build(config)
    splits, plan, backend, task = trainer.splits, trainer.plan, trainer.backend, trainer.task
    state, train_step = trainer.state, trainer.train_step
    batch_size = config.data.batch_size
    skip_nonfinite = config.guard.skip_nonfinite
    patience, min_delta = config.early_stopping.patience, config.early_stopping.min_delta
    mode = config.checkpoint.mode
    eval_splits = trainer.eval_splits
    # The test split is evaluated at the end (and at the best checkpoint), or at every
    # evaluation when asked, for curves: it never chooses anything.
    periodic_splits = [name for name in eval_splits
                       if name != TEST or config.train.test_every_eval]
    monitor_split, _, monitor_name = config.checkpoint.monitor.partition("/")

    resuming = (workdir / runs.CHECKPOINTS_DIRNAME).is_dir() and any(
        p.name.isdigit() for p in (workdir / runs.CHECKPOINTS_DIRNAME).iterdir())
    weights = None
    if config.init_from and not resuming:
        try:  # before anything is written: a wrong path is bad input
            weights = read_weights(config.init_from)
        except CheckpointError as e:
            raise ConfigError(f"config.init_from: {e}") from None

    preview_images = _preview_images(config, splits[TRAIN]) if config.data.preview else None
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir / runs.CHECKPOINTS_DIRNAME,
                              keep_last=config.checkpoint.keep_last,
                              keep_best=config.checkpoint.keep_best, best_mode=mode)
    start, carried = 0, _fresh_progress()
    if checkpoints.steps():
        try:
            host_state, carried, start = checkpoints.restore(trainer.abstract_state)
        except CheckpointError as e:
            raise ConfigError(f"{e}; resume with the config that wrote it, or start a new "
                              "--workdir") from None
        state = backend.put_state(host_state)
    primary = jax.process_index() == 0  # the only process that writes files and prints
    class_counts = _class_counts(trainer.dataset, splits)
    if primary:
        run_dir = runs.RunDir(workdir)
        if start < plan.total_steps:
            run_dir.mark_incomplete()  # a stale marker: an extended run trains on
        # Steps after the checkpoint are replayed: drop what they logged the first time.
        _truncate_metrics(workdir / writers.METRICS_FILENAME, start)
        writers.truncate_tensorboard(workdir / writers.TENSORBOARD_DIRNAME, start)
        writer = writers.MetricWriter(workdir, tensorboard=config.logging.tensorboard)
        progress = writers.Progress(plan.total_steps, initial_step=start,
                                    examples_per_step=batch_size, stream=stream,
                                    tty=None if config.logging.progress else False)
        _write_config(run_dir, config, plan, splits, class_counts)
        (workdir / runs.ENV_FILENAME).write_text(json.dumps(
            environment.describe(backend.devices, config.parallel.backend), indent=2) + "\n")
    else:
        writer = progress = _Silent()
    if weights is not None:
        state = _initial_weights(trainer, config.init_from, *weights, progress.message)
    if preview_images is not None and primary:
        path = augment.preview_png(augment.parse(config.data.augmentation),
                                   jax.random.key(config.seed), preview_images,
                                   workdir / PREVIEW_FILENAME, columns=PREVIEW_COLUMNS)
        progress.message(f"augmentation preview: {path}")

    progress.message(f"{config.model.name} on {config.data.name}: {plan.total_steps} steps "
                     f"({plan.steps_per_epoch}/epoch), {backend.kind} over "
                     f"{backend.num_devices} {backend.devices[0].platform} device(s), compiled "
                     f"in {trainer.compile_seconds:.1f}s")
    for name, counts in (class_counts or {}).items():
        progress.message(_describe_counts(name, counts))
    if start:
        progress.message(f"resuming from the checkpoint at step {start} in "
                         f"{checkpoints.directory}")
    best, final, stopping = carried["best"], carried["final"], carried["early_stopping"]
    window = _Window(**carried["window"])
    train_seconds, examples_seen = carried["train_seconds"], carried["examples_seen"]
    wall_start = time.perf_counter()

    def save(step: int, monitor: float | None) -> None:
        progress_state = {
            "window": window.snapshot(backend, skip_nonfinite=skip_nonfinite), "best": best,
            "final": final, "train_seconds": train_seconds, "examples_seen": examples_seen,
            "early_stopping": stopping}
        previous = checkpoints.steps()
        try:
            checkpoints.save(step, backend.get_state(state), progress_state, monitor=monitor)
        except Exception as e:  # noqa: BLE001 - disk full, quota, permissions, orbax errors
            kept = (f"the checkpoint at step {previous[-1]} stays usable"
                    if previous else "no earlier checkpoint exists")
            raise CheckpointWriteError(
                f"could not write the checkpoint at step {step} in {checkpoints.directory} "
                f"({_os_reason(e)}); {kept}. Free disk space and rerun the same command to "
                "resume") from e

    finished = False

    def summarize(step: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Writes the summary, the run's completion marker, after every other file."""
        nonlocal finished
        summary = {
            "final": final, "best": best, "monitor": task.monitor,
            "monitor_mode": task.monitor_mode, "steps": step,
            "epochs": step / plan.steps_per_epoch, "resumed_from_step": start,
            "train_examples_per_second": examples_seen / max(train_seconds, 1e-9),
            # Of the whole run, every segment (process) since step 0.
            "train_seconds": train_seconds,
            # Of this segment only: this process, which started at resumed_from_step.
            "segment_compile_seconds": trainer.compile_seconds,
            "segment_wall_seconds": time.perf_counter() - wall_start,
            # The step loop's time blocked on the next batch.
            "segment_input_wait_seconds": trainer.feed.wait_seconds,
            **extra}
        if primary:
            if config.logging.plot:
                _plot_curves(config, workdir)
            runs.RunDir(workdir).write_summary(summary)
        finished = True
        return summary

    batches = None
    try:
        # Killed after the last checkpoint but before the summary: finish the bookkeeping.
        if patience and stopping["bad_evals"] >= patience:
            yield {"step": start, "summary": _stop_early(
                trainer, checkpoints, start, stopping, final, best, eval_splits,
                progress.message, summarize)}
            return
        if start == plan.total_steps:
            yield {"step": start, "summary": summarize(start, {})}
            return
        segment_start = time.perf_counter()
        batches = trainer.feed.train(TRAIN, start)
        # The backend keeps at most max_in_flight programs queued (Backend.dispatched);
        # the finiteness flag of a step that old is ready, so a diverged run stops early.
        recent = collections.deque(maxlen=config.parallel.max_in_flight)
        for step in range(start + 1, plan.total_steps + 1):
            state, metrics = train_step(state, next(batches))
            window.add(step, metrics)
            examples_seen += batch_size
            if len(recent) == recent.maxlen:
                oldest = recent.popleft()
                if not skip_nonfinite and not backend.get_metrics(oldest["scalars"]["finite"]):
                    window.absorb(backend, skip_nonfinite=False)  # raises, naming the step
            recent.append(metrics)
            log_now = Plan.due(step, plan.log_every, plan.total_steps)
            eval_now = Plan.due(step, plan.eval_every, plan.total_steps)
            save_now = Plan.due(step, plan.checkpoint_every, plan.total_steps)
            stop_now = should_stop()
            if not (log_now or eval_now or save_now or stop_now):
                continue
            window.absorb(backend, skip_nonfinite=skip_nonfinite)  # waits for the device
            train_seconds += time.perf_counter() - segment_start
            report, stop_early = {"step": step}, False
            if log_now or eval_now:
                train_metrics = window.take(
                    backend, skip_nonfinite=skip_nonfinite, step=step,
                    max_skipped_fraction=config.guard.max_skipped_fraction)
                train_metrics["epoch"] = step / plan.steps_per_epoch
                writer.write(step, TRAIN, train_metrics)
                progress.update(step, {k: train_metrics[k] for k in ("loss", task.monitor)
                                       if k in train_metrics})
            if eval_now:
                last = step == plan.total_steps
                results = trainer.evaluate_all(state, step=step, final=last, workdir=workdir,
                                               write_files=primary,
                                               splits=eval_splits if last else periodic_splits)
                for name, result in results.items():
                    writer.write(step, name, result)
                    report[name] = final[name] = result
                    if name != TEST and _better(result[task.monitor],
                                                best.get(name, {}).get(task.monitor),
                                                task.monitor_mode):
                        best[name] = {**result, "step": step}
                progress.message(f"step {step}: " + "  ".join(
                    f"{name}{' (not for selection)' if name == TEST and not last else ''} "
                    f"{task.monitor} {report[name][task.monitor]:.4f}" for name in results))
                monitored = report[monitor_split][monitor_name]
                if config.schedule.name == "plateau":  # observed by the next step's optimizer
                    sign = -1.0 if mode == "max" else 1.0
                    state = state.replace(monitor=backend.put_state(np.float32(sign * monitored)))
                if _better(monitored, stopping["best"], mode, min_delta):
                    stopping.update(best=monitored, best_step=step, bad_evals=0)
                    # Keep the best weights on disk: early stopping restores them.
                    save_now |= bool(config.checkpoint.keep_best)
                else:
                    stopping["bad_evals"] += 1
                    stop_early = bool(patience) and stopping["bad_evals"] >= patience
            if save_now or stop_now or stop_early:
                save(step, report.get(monitor_split, {}).get(monitor_name))
            if stop_early:
                report["summary"] = _stop_early(trainer, checkpoints, step, stopping, final,
                                                best, eval_splits, progress.message, summarize)
                yield report
                return
            if stop_now and step < plan.total_steps:
                raise RunInterrupted(step)
            if step == plan.total_steps:
                best.update(_test_at_best(trainer, checkpoints, stopping["best_step"], step,
                                          final, progress.message))
                report["summary"] = summarize(step, {})
            if eval_now:
                yield report
            segment_start = time.perf_counter()
    finally:
        if batches is not None:
            batches.close()  # stops a prefetching thread
        progress.close()
        writer.close()
        checkpoints.close()
        if config.logging.plot and primary and not finished:  # the curves so far
            _plot_curves(config, workdir)


def _plot_curves(config, workdir: Path) -> None:
    bookkeeping = ("epoch", "examples", "skipped_steps")
    records = [{k: v for k, v in r.items() if k not in bookkeeping}
               for r in writers.read_metrics(workdir / writers.METRICS_FILENAME)]
    writers.plot_curves(records, workdir / runs.CURVES_FILENAME,
                        title=f"{config.model.name} on {config.data.name}")


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


def _test_at_best(trainer, checkpoints, best_step, step, final, message) -> dict[str, Any]:
    """The test split's metrics at the checkpoint chosen on validation (`best_step`), as
    `{"test": {..., "step": best_step}}`; empty without a test split or when that
    checkpoint was not kept (`checkpoint.keep_best=0`): then only the end is reported."""
    if TEST not in trainer.eval_splits or best_step is None:
        return {}
    if best_step == step:
        return {TEST: {**final[TEST], "step": step}}
    if best_step not in checkpoints.steps():
        return {}
    host_state, _, _ = checkpoints.restore(trainer.abstract_state, step=best_step)
    # The task's host metrics too (NSE, Frechet distance...); no files: they show the end.
    result = trainer.evaluate_all(trainer.backend.put_state(host_state), step=best_step,
                                  final=False, workdir=Path(checkpoints.directory).parent,
                                  write_files=False, splits=[TEST])[TEST]
    message(f"test at the best {trainer.config.checkpoint.monitor} checkpoint (step "
            f"{best_step}): " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()
                                          if k != "examples"))
    return {TEST: {**result, "step": best_step}}


def _stop_early(trainer, checkpoints, step, stopping, final, best, eval_splits, message,
                summarize):
    """Restores the best checkpoint, evaluates it on every eval split, says which won."""
    config, plan = trainer.config, trainer.plan
    best_step = stopping["best_step"]
    host_state, _, _ = checkpoints.restore(trainer.abstract_state, step=best_step)
    state = trainer.backend.put_state(host_state)
    final.update(trainer.evaluate_all(state, step=best_step, final=True,
                                      workdir=Path(checkpoints.directory).parent,
                                      write_files=jax.process_index() == 0))
    if TEST in final:
        best[TEST] = {**final[TEST], "step": best_step}
    message(f"early stopping at step {step} (epoch {step / plan.steps_per_epoch:g}): "
            f"{config.checkpoint.monitor} did not improve by more than "
            f"{config.early_stopping.min_delta} for {stopping['bad_evals']} evaluations; "
            f"the best, {stopping['best']:.4f} at step {best_step} (epoch "
            f"{best_step / plan.steps_per_epoch:g}), is restored: " + "  ".join(
                f"{name} {k} {v:.4f}" for name in eval_splits for k, v in final[name].items()
                if k != "examples"))
    return summarize(step, {"early_stopping": {
        "stopped_at_step": step, "best_step": best_step,
        "best_epoch": best_step / plan.steps_per_epoch,
        "monitor": config.checkpoint.monitor, "best_value": stopping["best"],
        "final_is_best_checkpoint": True}})


def train_and_evaluate(config, workdir: Path, *, stream=sys.stderr,
                       should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Runs (or resumes) the whole training; returns the summary, also in summary.json."""
    report = {}
    for report in run(config, workdir, stream=stream, should_stop=should_stop):
        pass
    return report["summary"]
