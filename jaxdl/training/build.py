"""Building a run from its config: the data splits, the plan of every duration in steps,
and the Trainer (backend, task, optimizer, state and the compiled steps) that the loop,
the benchmarks and the tests share."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import data as data_lib
from jaxdl.data import augment
from jaxdl import tasks
from jaxdl.models import layers
from jaxdl.schema import Clock, ConfigError, parse_interval
from jaxdl.training import (feeding, finetune as finetune_lib, optim, parallel,
                            prune as prune_lib, step as step_lib)
from jaxdl.training.errors import OutOfMemoryError, explain_out_of_memory
from jaxdl.training.state import create_state
from jaxdl.training.window import mean_metrics

TRAIN = "train"
TEST = "test"  # reported, never used to choose anything
EVAL_SPLITS = ("validation", TEST)
# The eval splits of the EMA weights are '<split>_ema' (validation_ema, test_ema).
EMA_SUFFIX = "_ema"


def is_test(split: str) -> bool:
    """The test split, of the raw or of the EMA weights: it never chooses anything."""
    return split in (TEST, TEST + EMA_SUFFIX)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every duration of the run, converted to steps once."""

    steps_per_epoch: int
    total_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int  # 0 when checkpoint.every is wall time
    total_updates: int
    checkpoint_seconds: float = 0.0  # checkpoint.every as wall time ('10 minutes'); 0 = by steps

    @classmethod
    def from_config(cls, config, epoch_examples: int) -> "Plan":
        """`epoch_examples`: examples one epoch visits (`data.epoch_length` of the train split
        under `config.data.sampling`: its size, or more when classes are oversampled)."""
        steps_per_epoch = data_lib.steps_per_epoch(epoch_examples, config.data.batch_size)
        clock = Clock(steps_per_epoch=steps_per_epoch, batch_size=config.data.batch_size)
        total = clock.steps(config.train.duration)
        if total <= 0:
            raise ConfigError(f"config.train.duration={config.train.duration!r} is zero steps")
        amount, unit = parse_interval(config.checkpoint.every)
        timed = unit == "seconds"
        return cls(steps_per_epoch=steps_per_epoch, total_steps=total,
                   log_every=clock.steps(config.train.log_every),
                   eval_every=clock.steps(config.train.eval_every),
                   checkpoint_every=0 if timed else clock.steps(config.checkpoint.every),
                   total_updates=max(1, total // config.optimizer.grad_accum_steps),
                   **({"checkpoint_seconds": amount} if timed else {}))

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
    if config.data.classes:
        dataset = data_lib.keep_classes(dataset, config.data.classes)
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
    if config.data.examples_per_class:
        if dataset.num_classes is None:
            raise ConfigError(f"config.data.examples_per_class needs classes; "
                              f"{config.data.name!r} is a regression dataset")
        indices[TRAIN] = indices[TRAIN][data_lib.per_class_subsample(
            dataset.targets[indices[TRAIN]], config.data.examples_per_class,
            config.data.split_seed)]
    splits = {name: data_lib.ArraySplit(dataset.features[idx], dataset.targets[idx])
              for name, idx in indices.items() if len(idx)}
    splits.update(predefined)
    return dataset, splits



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
    finetune: Any = None  # `finetune.Finetune` when config.finetune freezes or scales
    prune: Any = None  # `prune.Prune` when config.prune prunes
    notes: tuple[str, ...] = ()  # lines for the start log (the finetune groups)
    train_step_hlo: Any = None  # () -> the compiled train step's optimized HLO text

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """The host batch of global step `step` (0-based), mask included."""
        batch = data_lib.train_batch(self.splits[TRAIN], self.config.data.batch_size,
                                     self.config.seed, step, self.config.data.sampling)
        return with_mask(batch)

    def eval_limit(self, final: bool) -> int:
        """Eval batches per split for an evaluation (`data.eval_limit`; 0 = all): during
        training, and at the end only with `data.eval_limit_at_end`."""
        data = self.config.data
        return data.eval_limit if (not final or data.eval_limit_at_end) else 0

    def evaluate(self, state, split_name: str, limit: int = 0) -> dict[str, float]:
        """Metrics over every example of the split (the first `limit` batches when > 0):
        the last batch is padded and masked."""
        totals = self.backend.put_state(self.eval_totals)
        batches = self.feed.eval(split_name)
        for batch in itertools.islice(batches, limit or None):
            totals = self.eval_step(state, batch, totals)
        if hasattr(batches, "close"):
            batches.close()  # a prefetching thread stops when the limit cut it short
        sums = {k: float(v) for k, v in self.backend.get_metrics(totals).items()}
        return {**mean_metrics(sums), "examples": sums["count"]}


    def evaluate_all(self, state, *, step: int, final: bool, workdir: Path,
                     write_files: bool, splits=None, limit: int = 0
                     ) -> dict[str, dict[str, float]]:
        """The metrics of `splits` (default: every eval split; the first `limit` batches of
        each when > 0), plus what the task adds on the host after them (`Task.on_eval`:
        samples, plots, metrics over a whole split)."""
        splits = self.eval_splits if splits is None else list(splits)
        results = {name: self.evaluate(state, name, limit) for name in splits}
        self.backend.wait_all()  # nothing of ours queued beside what on_eval dispatches
        rng = jax.random.PRNGKey(self.config.seed)
        context = tasks.EvalContext(
            step=step, final=final, workdir=workdir, write_files=write_files,
            splits=self.splits, eval_splits=tuple(splits), rng=rng,
            variables_fn=lambda: host_variables(self.backend.get_state(state)),
            eval_inputs=functools.partial(augment.apply, augment.eval_ops(
                augment.parse(self.config.data.augmentation)), rng))
        for name, extra in self.task.on_eval(context).items():
            if name not in results:
                raise ValueError(f"task {type(self.task).__name__} reported metrics for "
                                 f"{name!r}, which is not an eval split")
            results[name].update(extra)
        return results


def host_variables(host_state) -> dict[str, Any]:
    return {"params": host_state.params, **host_state.model_state}


def with_mask(batch):
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
            preview_images(config, splits[TRAIN])  # refuses non-images before compiling
        eval_splits = [name for name in EVAL_SPLITS if name in splits]
        monitor_split, _, monitor_name = config.checkpoint.monitor.partition("/")
        monitor_split = monitor_split.removesuffix(EMA_SUFFIX)  # validate() allowed it
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
        example = with_mask(data_lib.train_batch(splits[TRAIN], config.data.batch_size,
                                                  config.seed, 0))
        make_tx = functools.partial(optim.make_optimizer, config.optimizer, config.schedule,
                                    total_updates=plan.total_updates,
                                    to_updates=plan.to_updates(config))
        finetune = _finetune_plan(config, task, example, plan)
        prune = _prune_plan(config, task, example, plan)
        tx, _ = make_tx(finetune=finetune, prune=prune)
    except ValueError as e:
        raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None

    ema = config.optimizer.ema_decay > 0
    abstract_state = jax.eval_shape(lambda x: create_state(task, tx, config.seed, x, ema=ema),
                                    example["inputs"][:1])
    notes = ()
    if finetune is not None:
        unfrozen = jax.eval_shape(make_tx()[0].init, abstract_state.params)
        notes = tuple(finetune.report(abstract_state.params,
                                      finetune_lib.state_bytes(abstract_state.opt_state),
                                      finetune_lib.state_bytes(unfrozen)))
    tasks.check_model_state(config, abstract_state.model_state, axis_name=backend.axis_name,
                            num_devices=backend.num_devices)
    with explain_out_of_memory(config, abstract_state, backend.num_devices):
        try:
            trainer = _place_and_compile(config, dataset, splits, plan, backend, task, tx,
                                         example, abstract_state, eval_splits, finetune)
            return dataclasses.replace(trainer, finetune=finetune, prune=prune, notes=notes)
        except layers.BatchAxisError as e:  # found while tracing the step: the model's fault
            raise ConfigError(f"model {config.model.name!r}: {e}") from None


def _finetune_plan(config, task, example, plan):
    """The `config.finetune` plan over the model's parameter paths; None when it leaves
    every parameter training at one rate (the plain optimizer)."""
    params = jax.eval_shape(lambda x: task.init(jax.random.PRNGKey(config.seed), x),
                            example["inputs"][:1])["params"]
    finetune = finetune_lib.plan(config.finetune, params, to_updates=plan.to_updates(config),
                                 grad_accum_steps=config.optimizer.grad_accum_steps)
    if not finetune.active:
        return None
    if type(task).init_optimizer is not tasks.Task.init_optimizer:
        # Its optimizer sees parts of the tree (a GAN's generator), not these paths.
        raise ConfigError(f"config.finetune: task {config.task.name!r} keeps an optimizer per "
                          "part of the model; freezing and lr_multipliers need one optimizer "
                          "over all parameters")
    return finetune


def _prune_plan(config, task, example, plan):
    """The `config.prune` plan over the model's parameter paths; None when it is off."""
    if config.prune.final_sparsity == 0:
        return None
    if type(task).init_optimizer is not tasks.Task.init_optimizer:
        raise ConfigError(f"config.prune: task {config.task.name!r} keeps an optimizer per "
                          "part of the model; pruning needs one optimizer over all parameters")
    if config.optimizer.ema_decay > 0:
        raise ConfigError("config.prune with optimizer.ema_decay > 0: the moving average of "
                          "pruned weights is not sparse; set ema_decay=0")
    params = jax.eval_shape(lambda x: task.init(jax.random.PRNGKey(config.seed), x),
                            example["inputs"][:1])["params"]
    clock = Clock(steps_per_epoch=plan.steps_per_epoch, batch_size=config.data.batch_size)
    return prune_lib.plan(config.prune, params, to_steps=clock.steps,
                          total_steps=plan.total_steps)


def _place_and_compile(config, dataset, splits, plan, backend, task, tx, example,
                       abstract_state, eval_splits, finetune=None) -> Trainer:
    state = backend.put_state(create_state(task, tx, config.seed, example["inputs"][:1],
                                           ema=config.optimizer.ema_decay > 0))
    augmentation = augment.parse(config.data.augmentation)
    train_step, train_seconds = backend.compile(
        step_lib.make_train_step(task, tx, axis_name=backend.axis_name,
                                 skip_nonfinite=config.guard.skip_nonfinite,
                                 augmentation=augmentation,
                                 ema_decay=config.optimizer.ema_decay, finetune=finetune),
        state,
        backend.put_batch(example), donate_state=True)
    eval_step, eval_totals, eval_seconds = _compile_eval(config, backend, task, state,
                                                         abstract_state, splits)
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
                   train_step_cost=train_step.cost(), feed=feed,
                   train_step_hlo=train_step.hlo_text)


def _compile_eval(config, backend, task, state, abstract_state, splits):
    """(the compiled eval step, its zero totals on the host, compile seconds)."""
    augmentation = augment.parse(config.data.augmentation)
    eval_example = next(data_lib.eval_batches(splits[TRAIN], config.data.eval_batch_size))
    eval_totals = step_lib.eval_totals_zeros(task, abstract_state, eval_example,
                                             augmentation=augmentation)
    eval_step, seconds = backend.compile(
        step_lib.make_eval_step(task, axis_name=backend.axis_name, augmentation=augmentation),
        state, backend.put_batch(eval_example), backend.put_state(eval_totals),
        donate_state=False)
    return eval_step, eval_totals, seconds


def build_evaluator(config, dataset, splits, task, host_state, devices) -> Trainer:
    """A Trainer that only evaluates (no optimizer, no train step, no plan): the eval step,
    feed and `evaluate_all` a run uses, over `devices` (sharded), for `host_state` (a
    TrainState of host arrays, e.g. a checkpoint's). Its `state` is `host_state` placed."""
    backend = parallel.Backend("sharded", devices,
                               max_in_flight=config.parallel.max_in_flight)
    state = backend.put_state(host_state)
    eval_step, eval_totals, seconds = _compile_eval(config, backend, task, state, host_state,
                                                    splits)
    # The host pipeline: an evaluation reads each batch once, none is worth a device copy.
    feed = feeding.make_feed("host", backend, splits, batch_size=config.data.batch_size,
                             eval_batch_size=config.data.eval_batch_size, seed=config.seed,
                             prefetch=config.data.prefetch, sampling=config.data.sampling)
    return Trainer(config=config, dataset=dataset, splits=splits, plan=None, backend=backend,
                   task=task, tx=None, state=state, abstract_state=host_state,
                   eval_splits=[name for name in EVAL_SPLITS if name in splits],
                   train_step=None, eval_step=eval_step, eval_totals=eval_totals,
                   compile_seconds=seconds, train_step_cost={}, feed=feed)


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


PREVIEW_COLUMNS = 8  # a display layout: two rows of 8 examples, before and after


def preview_images(config, split) -> np.ndarray:
    """The first examples of a split, if they are images a PNG can show."""
    images = split.take(np.arange(min(len(split), 2 * PREVIEW_COLUMNS)))["inputs"]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype.kind != "f":
        raise ConfigError(f"config.data.preview needs float NHWC images with 1 or 3 "
                          f"channels; {config.data.name!r} gives {images.dtype} inputs of "
                          f"shape {images.shape[1:]}")
    return images
