"""The Python API, for notebooks and scripts: the same loop, checkpoints and workdir as
`python -m experiments.NAME`, without a command line.

    from jaxdl import api
    summary = api.train("digits_cnn", {"train.duration": "10 epochs"}, workdir="runs/d")
    run = api.load("runs/d")                      # the best checkpoint ("latest", a step)
    api.evaluate(run, "test")                     # == summary["best"]["test"]
    logits = api.predict(run, images)             # raw inputs [N, ...], batched on devices

Every refusal (an unknown key or value, a workdir holding another run, a checkpoint the
run lacks, inputs of the wrong shape) is a ConfigError with one line, raised before
anything is written.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxdl import app, config as config_lib, trained
from jaxdl.schema import ConfigError
from jaxdl.trained import TrainedRun

__all__ = ["ConfigError", "TrainedRun", "evaluate", "fit", "load", "load_config", "predict",
           "train"]


def load_config(experiment: str | Mapping[str, Any] | ml_collections.ConfigDict,
                overrides: Mapping[str, Any] | None = None, *,
                variant: str | None = None) -> ml_collections.ConfigDict:
    """The validated config of `experiment` with `overrides` ({"data.batch_size": 32},
    dotted keys, Python values). `experiment`: a name ('digits_cnn'), a dotted module, a
    .py file with get_config(), or a config (dict or ConfigDict) built in the notebook."""
    if isinstance(experiment, str):
        module = app.experiment_module(experiment)
        try:
            base = module.get_config() if variant is None else module.get_config(variant)
        except (TypeError, ValueError) as e:  # no variants, or not this one
            raise ConfigError(f"experiment {experiment!r}, variant {variant!r}: {e}") from None
    else:
        if variant is not None:
            raise ConfigError("variant applies to an experiment module, not to a config")
        base = experiment
    return config_lib.validate(config_lib.apply_overrides(base, dict(overrides or {})))


def train(experiment, overrides: Mapping[str, Any] | None = None, *, workdir: str | Path,
          variant: str | None = None, overwrite: bool = False, stream=None,
          compilation_cache_dir: str | None = None) -> dict[str, Any]:
    """Trains `experiment` (see `load_config`) in `workdir` and returns the run's summary
    (also in summary.json). As on the command line, a workdir holding this run resumes it
    (a complete one returns its summary at once), one holding another run is refused
    unless `overwrite` (which removes only a run's files). `stream`: where the progress
    goes (default stderr)."""
    from jaxdl.training import loop, parallel

    config = load_config(experiment, overrides, variant=variant)
    path, done = app.check_workdir(str(workdir), config, overwrite)
    if done is not None:
        return done
    app.prepare_process(config, compilation_cache_dir=compilation_cache_dir)
    try:
        devices = parallel.select_devices(config.parallel.num_devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config_lib.check_devices(config, len(devices))
    return loop.train_and_evaluate(config, path, stream=sys.stderr if stream is None else stream)


fit = train  # the Keras name


def load(workdir: str | Path, checkpoint: str | int = "best", *,
         ema: bool | None = None) -> TrainedRun:
    """The run in `workdir` at its 'best' (chosen by checkpoint.monitor on validation),
    'latest' or a step's checkpoint: see `jaxdl.trained.load_run`."""
    return trained.load_run(workdir, checkpoint, ema=ema)


def _run(run: TrainedRun | str | Path, checkpoint: str | int) -> TrainedRun:
    return run if isinstance(run, TrainedRun) else load(run, checkpoint)


def predict(run: TrainedRun | str | Path, inputs, *, checkpoint: str | int = "best",
            batch_size: int | None = None) -> np.ndarray:
    """The model's outputs (logits for a classifier) for raw `inputs` [N, ...] scaled like
    the run's data: the run's eval-time preprocessing applies, in eval mode, in the run's
    precision, in batches split over the local devices. `run`: a loaded run or a workdir."""
    return _run(run, checkpoint).apply(inputs, batch_size=batch_size)


def evaluate(run: TrainedRun | str | Path, split: str = "test", *,
             checkpoint: str | int = "best") -> dict[str, float]:
    """The metrics of every example of `split` ('train', 'validation', 'test') through the
    run's compiled eval step, as its evaluations report them."""
    return _run(run, checkpoint).evaluate(split)
