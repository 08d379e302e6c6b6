"""What every analysis tool shares: the model of a loaded run as pure functions of
(variables, raw inputs), its pixel range, fixed subsets of a split, batched compiled
evaluation with a progress bar, and where and how results are written."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxdl import runs
from jaxdl.data import pipeline
from jaxdl.schema import ConfigError


def logits_fn(run) -> Callable[[Any, jax.Array], jax.Array]:
    """(variables, raw inputs) -> logits in eval mode: the run's eval-time preprocessing
    (`data.augmentation`'s deterministic ops) and its model, traceable and differentiable
    in both arguments."""
    def forward(variables, x):
        out, _ = run.task.run_model(variables, run.preprocess(x), train=False,
                                    rng=run.rng)
        return out.astype(jnp.float32)
    return forward


def values_fn(run) -> Callable[[Any, jax.Array, jax.Array], dict[str, jax.Array]]:
    """(variables, raw inputs, targets) -> the task's per-example eval values (`loss`,
    `accuracy`...): the numbers the run's eval step averages."""
    def values(variables, x, y):
        out, _ = run.task.apply(variables, {"inputs": run.preprocess(x), "targets": y},
                                train=False, rng=run.rng)
        return out
    return values


def require_classifier(run, tool: str) -> None:
    if run.config.task.name != "classification":
        raise ConfigError(f"{tool} needs a classification run; the run in {run.workdir} is a "
                          f"{run.config.task.name!r} run")


def require_images(run, tool: str) -> tuple[int, ...]:
    shape = tuple(run.input_spec["shape"])
    if len(shape) != 3 or shape[-1] not in (1, 3) or not run.input_spec["dtype"].startswith(
            "float"):
        raise ConfigError(f"{tool} needs float images [H, W, 1 or 3]; the run in "
                          f"{run.workdir} takes {run.input_spec['dtype']} inputs of shape "
                          f"{list(shape)}")
    return shape


def pixel_range(run, given: tuple[float, float] | None = None) -> tuple[float, float]:
    """The valid range of a raw input value: `given`, else the range of the run's train
    split (what `input_spec` reports: [0, 1] for every image source of jaxdl)."""
    low, high = given if given is not None else run.input_spec["range"]
    if not high > low:
        raise ConfigError(f"pixel range [{low:g}, {high:g}] is empty; give --pixel_range=LOW,HIGH")
    return float(low), float(high)


def subset(split, count: int | None, seed: int) -> pipeline.ArraySplit:
    """The first `count` examples (all when None or larger) of a seeded permutation of
    `split`, in their split order: the same rows for the same seed, every run."""
    n = len(split)
    if count is None or count >= n:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(seed).permutation(n)[:count])
    taken = split.take(rows)
    return pipeline.ArraySplit(np.asarray(taken["inputs"]), np.asarray(taken["targets"]))


def progress(items: Iterable, *, desc: str, total: int | None = None) -> Iterator:
    """A tqdm bar on stderr when it is a terminal; the items unchanged otherwise."""
    return iter(tqdm.tqdm(items, desc=desc, total=total, disable=None, leave=False,
                          file=sys.stderr))


def batches(split, batch_size: int, *, desc: str) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches of every example (the last padded, `mask` 0 on padding), with a
    progress bar."""
    total = pipeline.num_eval_batches(len(split), batch_size)
    return progress(pipeline.eval_batches(split, batch_size), desc=desc, total=total)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def out_dir(run, tool: str) -> Path:
    """WORKDIR/analysis/TOOL, created (call it after every input check)."""
    path = Path(run.workdir) / runs.ANALYSIS_DIRNAME / tool
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(runs.finite_or_null(payload), indent=2, allow_nan=False) + "\n")
    return path


def describe(run) -> dict[str, Any]:
    """Which weights were analysed."""
    return {"workdir": str(run.workdir), "checkpoint": run.checkpoint, "step": int(run.step),
            "ema": bool(run.ema)}
