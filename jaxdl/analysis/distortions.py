"""Accuracy under jaxdl's own augmentation ops (`jaxdl.data.augment`) at a sweep of
strengths: how robust a model is to small rotations, shifts, zooms, noise and occlusion.

Each op runs as training would draw it, on the raw inputs, before the run's eval-time
preprocessing: `rotate(max_degrees=s)` turns each example by a uniform angle in [-s, s],
`translate(max_shift=s)` shifts by up to s pixels (zero fill), `scale(min_scale=s,
max_scale=s)` zooms by exactly s, `gaussian_noise(std=s)` adds noise of that deviation,
`cutout(size=s)` blanks an s x s square. The draws are a pure function of the seed, so a
table is the same on every rerun and for every model it compares.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxdl import plots
from jaxdl.analysis import common
from jaxdl.data import augment, pipeline
from jaxdl.schema import ConfigError

# The op of each distortion at strength s.
DISTORTIONS: dict[str, Callable[[float], augment.Op]] = {
    "rotate": lambda s: augment.make_op("rotate", max_degrees=float(s)),
    "translate": lambda s: augment.make_op("translate", max_shift=int(s)),
    "scale": lambda s: augment.make_op("scale", min_scale=float(s), max_scale=float(s)),
    "gaussian_noise": lambda s: augment.make_op("gaussian_noise", std=float(s)),
    "cutout": lambda s: augment.make_op("cutout", size=int(s)),
}
REPORT, FIGURE = "distortions.json", "distortions.png"


# Ops whose strength may be a traced value (one compile for the whole sweep); the others'
# strength shapes the computation (translate pads by it) and compiles once per strength.
TRACED = frozenset({"rotate", "scale", "gaussian_noise"})


def _traced(op: augment.Op, strength) -> augment.Op:
    """`op` with every parameter replaced by `strength` (validated on the host already)."""
    return augment.Op(op.name, tuple((name, strength) for name, _ in op.params))


def distorted_correct(forward: Callable, variables, op: augment.Op, strength, rng: jax.Array,
                      x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """How many (masked) examples the model still classifies right after `op` (at
    `strength`, traced, for the ops in TRACED; at its own parameters otherwise)."""
    if op.name in TRACED:
        op = _traced(op, strength)
    distorted = augment.apply((op,), rng, x)
    return jnp.sum((jnp.argmax(forward(variables, distorted), axis=-1) == y) * mask)


def _ops(sweeps: Mapping[str, Sequence[float]]) -> dict[str, list[tuple[float, augment.Op]]]:
    ops = {}
    for name, strengths in sweeps.items():
        if name not in DISTORTIONS:
            raise ConfigError(f"distortion {name!r}: choose from {', '.join(DISTORTIONS)}")
        try:
            ops[name] = [(float(s), DISTORTIONS[name](s)) for s in strengths]
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if not ops:
        raise ConfigError(f"no distortion asked for; choose from {', '.join(DISTORTIONS)}")
    return ops


def analyse(run, *, sweeps: Mapping[str, Sequence[float]], split: str, examples: int | None,
            batch_size: int, seed: int) -> dict:
    """Accuracy of the run on `split` (a seeded subset of `examples`, or all) under each
    distortion of `sweeps` (name -> strengths); writes distortions.json and a plot of
    accuracy against strength, one panel per distortion, into
    WORKDIR/analysis/distortions/, and returns the report."""
    common.require_classifier(run, "distortions")
    common.require_images(run, "distortions")
    ops = _ops(sweeps)
    data = common.subset(run.dataset(split), examples, seed)
    forward = common.logits_fn(run)
    variables = jax.device_put(run.variables)
    count = jax.jit(distorted_correct, static_argnums=(0, 2))
    batches = list(pipeline.eval_batches(data, batch_size))
    total = sum(len(v) for v in ops.values()) * len(batches)
    bar = common.progress(range(total), desc="distortions")
    key = jax.random.PRNGKey(seed)
    started = time.perf_counter()
    table = {}
    for name, points in ops.items():
        rows = []
        for strength, op in points:
            correct = 0.0
            for index, batch in enumerate(batches):
                next(bar, None)
                # Each batch its own draws; example rows keep them apart within a batch.
                static = _traced(op, 0.0) if op.name in TRACED else op
                correct += float(count(forward, variables, static, jnp.float32(strength),
                                       jax.random.fold_in(key, index),
                                       batch["inputs"], batch["targets"], batch["mask"]))
            rows.append({"strength": strength, "op": str(op), "accuracy": correct / len(data)})
        table[name] = rows
    report = {**common.describe(run), "split": split, "examples": len(data),
              "seed": seed, "augmentation_trained_with": run.config.data.augmentation,
              "distortions": table, "seconds": time.perf_counter() - started}
    out = common.out_dir(run, "distortions")
    common.write_json(out / REPORT, report)
    _figure(report, out / FIGURE)
    return report


def _figure(report: dict, path) -> None:
    panels = {name: ([r["strength"] for r in rows], [r["accuracy"] for r in rows])
              for name, rows in report["distortions"].items()}
    plots.small_multiples_png(
        panels, path, xlabel="strength", ylabel="accuracy",
        title=f"accuracy under distortion: {report['examples']} {report['split']} examples, "
              f"step {report['step']}")
