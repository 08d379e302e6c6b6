"""A trained run, loaded back: its validated config, the model as the run built it (in the
run's precision), the variables of one checkpoint, its task, its data splits and the
eval-time preprocessing, so a notebook, the predict/evaluate tools and the analysis tools
all use a run the same way:

    run = load_run("runs/digits_cnn")                # the best checkpoint
    logits = run.apply(run.dataset("test").inputs)   # eval mode, batched over the devices

"best" is the checkpoint `checkpoint.monitor` chose on validation (the loop's record in
every checkpoint keeps its step; `checkpoint.keep_best` keeps it on disk), the one whose
test metrics summary.json reports under "best". Nothing here writes to the workdir.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdl import config as config_lib, runs
from jaxdl.data import augment
from jaxdl.schema import ConfigError
from jaxdl.training import build as build_lib
from jaxdl.training.state import TrainState
from jaxdl import tasks

BEST, LATEST = "best", "latest"
_ROLE = "run"  # how errors name the workdir given


@dataclasses.dataclass(eq=False)
class TrainedRun:
    """One checkpoint of a run, ready to evaluate and predict with."""

    workdir: Path
    config: ml_collections.ConfigDict  # validated
    task: Any  # jaxdl.tasks.Task, built without a device axis (for use outside a step)
    variables: dict[str, Any]  # {"params": ..., **state collections (batch_stats)}: numpy
    step: int  # the checkpoint's step
    checkpoint: str  # what was asked for: "best", "latest" or the step as text
    ema: bool  # the variables hold the EMA of the weights (optimizer.ema_decay)
    rng: Any  # the checkpoint's run key: what the eval step hands the task
    _data: tuple[Any, dict[str, Any]]  # (dataset, splits) as the run cut them

    @property
    def model(self):
        """The flax module as the run built it (`dtype` = the run's precision)."""
        return self.task.model

    @property
    def splits(self) -> dict[str, Any]:
        """Split name -> `jaxdl.data.ArraySplit` (or a streamed split): the run's own cut."""
        return self._data[1]

    @property
    def source(self):
        """The `jaxdl.data.Dataset` the splits were cut from."""
        return self._data[0]

    def dataset(self, split: str):
        """The run's split `split` ('train', 'validation', 'test'): `.inputs`, `.targets`."""
        if split not in self.splits:
            raise ConfigError(f"split {split!r}: the run in {self.workdir} has "
                              f"{', '.join(sorted(self.splits))}")
        return self.splits[split]

    @functools.cached_property
    def _eval_ops(self) -> tuple:
        return augment.eval_ops(augment.parse(self.config.data.augmentation))

    def preprocess(self, inputs):
        """What the eval step does to inputs before the model (the deterministic ops of
        `data.augmentation`, such as normalize); traceable. Identity when there are none."""
        if not self._eval_ops:
            return inputs
        return augment.apply(self._eval_ops, jax.random.PRNGKey(self.config.seed), inputs)

    @functools.cached_property
    def input_spec(self) -> dict[str, Any]:
        """The shape of one example, its dtype and the value range of the train split's
        first examples: what `apply` expects (raw inputs, before `preprocess`)."""
        train = self.splits[build_lib.TRAIN]
        first = np.asarray(train.take(np.arange(min(len(train), _SCALE_EXAMPLES)))["inputs"])
        return {"shape": tuple(first.shape[1:]), "dtype": str(first.dtype),
                "range": (float(first.min()), float(first.max()))}

    def check_inputs(self, inputs) -> np.ndarray:
        """`inputs` as an array of examples, or ConfigError naming the expected shape and
        scale."""
        inputs = np.asarray(inputs)
        spec = self.input_spec
        if inputs.shape[1:] != spec["shape"] or inputs.ndim < 1:
            low, high = spec["range"]
            raise ConfigError(
                f"inputs of shape {inputs.shape}: the run in {self.workdir} takes "
                f"[N, {', '.join(map(str, spec['shape']))}] {spec['dtype']} examples, "
                f"scaled like its train split ({low:g} to {high:g})")
        return inputs.astype(spec["dtype"], copy=False)

    @functools.cached_property
    def _forward(self):
        def forward(variables, x):
            out, _ = self.task.run_model(variables, self.preprocess(x), train=False,
                                         rng=self.rng)
            return out
        return jax.jit(forward)

    def apply(self, inputs, *, batch_size: int | None = None) -> np.ndarray:
        """The model's outputs (logits for a classifier) for raw `inputs` [N, ...], in eval
        mode, in fixed-size batches (`data.eval_batch_size` by default, the last padded)
        split over the local devices; floats come back as float32 numpy."""
        inputs = self.check_inputs(inputs)
        batch_size = batch_size or self.config.data.eval_batch_size
        devices = _devices_for(batch_size)
        mesh = Mesh(np.array(devices), ("data",))
        variables = jax.device_put(self.variables, NamedSharding(mesh, P()))
        rows = NamedSharding(mesh, P("data"))
        outputs = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), 0)])
            outputs.append(jax.tree.map(lambda y, n=len(chunk): _host(y)[:n],
                                        self._forward(variables, jax.device_put(padded, rows))))
        if not outputs:
            raise ConfigError("no inputs given: pass at least one example")
        return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)

    @functools.cached_property
    def _evaluator(self):
        host_state = TrainState(step=np.asarray(self.step, np.int32),
                                params=self.variables["params"],
                                model_state={k: v for k, v in self.variables.items()
                                             if k != "params"},
                                opt_state=None, rng=np.asarray(self.rng))
        return build_lib.build_evaluator(self.config, self.source, self.splits, self.task,
                                         host_state,
                                         _devices_for(self.config.data.eval_batch_size))

    def evaluate(self, split: str = build_lib.TEST) -> dict[str, float]:
        """The metrics of every example of `split`, as the run's evaluations compute them
        (its compiled eval step, padded batches masked, the task's extra metrics): for the
        best checkpoint and the test split, what summary.json reports under best/test."""
        self.dataset(split)  # refuses a split the run lacks
        evaluator = self._evaluator
        return evaluator.evaluate_all(evaluator.state, step=self.step, final=False,
                                      workdir=self.workdir, write_files=False,
                                      splits=[split])[split]


_SCALE_EXAMPLES = 1024  # examples whose value range `input_spec` reports


def _host(x) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x


def _devices_for(batch_size: int) -> list[jax.Device]:
    """The most local devices (first ones) that split `batch_size` evenly."""
    devices = jax.local_devices()
    n = max(k for k in range(1, len(devices) + 1) if batch_size % k == 0)
    return devices[:n]


class ToolParser(argparse.ArgumentParser):
    """The command line of a tool over a trained run (jaxdl.evaluate, jaxdl.predict):
    `--run`, `--checkpoint`, `--import` (`imports`: module names), and a bad argument as a
    ConfigError (one line) instead of argparse's usage text and exit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_argument("--run", required=True, help="the workdir of a jaxdl run")
        self.add_argument("--checkpoint", default=BEST, help="best, latest or a step number")
        self.add_argument("--import", dest="imports", action="append", default=[],
                          metavar="MODULE", help="import a module first: the one that "
                          "registers the run's model (task, source) by name; repeatable, "
                          "or comma-separated")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        parsed.imports = [m for names in parsed.imports for m in names.split(",") if m]
        return parsed

    def error(self, message):
        raise ConfigError(message)


def read_run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The validated config the run in `workdir` saved; ConfigError when it is no run."""
    run_dir = runs.RunDir(Path(workdir).expanduser())
    if not run_dir.config.is_file():
        raise ConfigError(f"{workdir} is not a jaxdl run: it holds no {runs.CONFIG_FILENAME} "
                          "(give the --workdir a run trained in)")
    try:
        saved = json.loads(run_dir.config.read_text())["config"]
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{run_dir.config} is not a jaxdl run config ({e})") from None
    try:
        return config_lib.validate(ml_collections.ConfigDict(saved))
    except ConfigError as e:  # a model registered by a module not imported here, say
        raise ConfigError(f"{run_dir.config}: {e}") from None


def resolve_step(workdir: str | Path, checkpoint: str | int = BEST) -> tuple[int, dict]:
    """(step, the loop's progress record of the latest checkpoint) for `checkpoint`:
    'best', 'latest' or a step number (int or digits)."""
    try:
        steps = runs.checkpoint_steps(workdir, role=_ROLE)
        _, progress, latest = runs.read_checkpoint(workdir, role=_ROLE, state=False)
    except runs.CheckpointError as e:
        raise ConfigError(str(e)) from None
    if checkpoint == LATEST:
        return latest, progress
    if checkpoint == BEST:
        try:
            return runs.best_step(workdir, role=_ROLE), progress
        except runs.CheckpointError as e:
            raise ConfigError(f"{e}; use checkpoint='latest'") from None
    text = str(checkpoint)
    if not text.isdigit():
        raise ConfigError(f"checkpoint={checkpoint!r}: give 'best', 'latest' or a step number")
    if int(text) not in steps:
        raise ConfigError(f"the run in {workdir} has no checkpoint at step {text}; saved "
                          f"steps: {', '.join(map(str, steps))}")
    return int(text), progress


def load_run(workdir: str | Path, checkpoint: str | int = BEST, *,
             ema: bool | None = None) -> TrainedRun:
    """The run in `workdir` at `checkpoint` ('best', 'latest' or a step). `ema`: use the
    EMA of the weights (runs with optimizer.ema_decay > 0); None = when the run's
    checkpoint.monitor names an EMA split. Raises ConfigError (one line) for a workdir that
    is not a run or a checkpoint it does not have; reads its data as the run did."""
    workdir = Path(workdir).expanduser()
    config = read_run_config(workdir)
    step, _ = resolve_step(workdir, checkpoint)
    state, _, _ = runs.read_checkpoint(workdir, step, role=_ROLE)
    if ema is None:
        ema = config.checkpoint.monitor.partition("/")[0].endswith(build_lib.EMA_SUFFIX)
    if ema and state.get("ema_params") is None:
        raise ConfigError(f"the run in {workdir} kept no EMA of its weights "
                          "(optimizer.ema_decay=0); load it with ema=False")
    dataset, splits = build_lib.load_splits(config)
    try:
        task = tasks.build_task(config, dataset, axis_name=None,
                                train_split=splits.get(build_lib.TRAIN))
    except ValueError as e:
        raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None
    variables = {"params": state["ema_params" if ema else "params"],
                 **(state.get("model_state") or {})}
    return TrainedRun(workdir=workdir, config=config, task=task, variables=variables,
                      step=step, checkpoint=str(checkpoint), ema=bool(ema),
                      rng=state["rng"], _data=(dataset, splits))
