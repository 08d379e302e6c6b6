"""Robustness of a trained classifier to adversarial examples: accuracy against epsilon
under FGSM or PGD (L-infinity or L2, untargeted or targeted; the attacks themselves are in
`jaxdl.tasks.adversarial`, where adversarial training uses them too).

The model the attack sees is the run's eval-time preprocessing (e.g. normalisation)
followed by its model, so the perturbation lives in the raw pixel space the data comes in,
and every adversarial input is clipped back to the pixel range.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import plots
from jaxdl.analysis import common
from jaxdl.data import pipeline
from jaxdl.schema import ConfigError
from jaxdl.tasks.adversarial import NORMS, fgsm, pgd

# --- over a trained run ---------------------------------------------------------------------

ATTACKS = ("fgsm", "pgd")
FIGURE, REPORT, GRID = "accuracy_vs_epsilon.png", "adversarial.json", "examples.png"


def _check_epsilons(epsilons, norm: str, low: float, high: float, dims: int) -> None:
    # The largest distance two valid inputs can be apart, in this norm.
    bound = (high - low) * (math.sqrt(dims) if norm == "l2" else 1.0)
    for eps in epsilons:
        if not 0.0 <= eps <= bound:
            raise ConfigError(f"epsilon {eps:g} is outside the pixel range: an {norm} "
                              f"perturbation of inputs in [{low:g}, {high:g}] is between 0 "
                              f"and {bound:g}")


def _targets_of(target: str | int | None, labels, num_classes: int):
    if target is None:
        return None
    if target == "next":
        return (labels + 1) % num_classes
    return jnp.full_like(labels, int(target))


def analyse(run, *, attack: str, norm: str, epsilons: Sequence[float], steps: int,
            step_size: float, random_start: bool, target: str | int | None, split: str,
            examples: int | None, batch_size: int, shown: int, seed: int,
            pixel_range: tuple[float, float] | None = None) -> dict:
    """Accuracy under `attack` at each epsilon on `examples` rows of `split` (all when
    None; a seeded fixed subset otherwise) of the run; writes adversarial.json, the
    accuracy-vs-epsilon curve and a grid of clean / perturbation / adversarial images at
    the largest epsilon into WORKDIR/analysis/adversarial/, and returns the report.

    PGD takes `steps` steps of `step_size` times epsilon each (Madry et al. use 2.5 eps /
    steps), from a random point of the ball when `random_start`. `target`: None
    (untargeted: away from the label), 'next' (towards label + 1 mod C) or a class index.
    Epsilon 0 is always evaluated: its accuracy is the clean accuracy, exactly.
    """
    common.require_classifier(run, "adversarial")
    shape = common.require_images(run, "adversarial")
    if attack not in ATTACKS:
        raise ConfigError(f"attack {attack!r}: choose one of {', '.join(ATTACKS)}")
    if norm not in NORMS:
        raise ConfigError(f"norm {norm!r}: choose one of {', '.join(NORMS)}")
    low, high = common.pixel_range(run, pixel_range)
    _check_epsilons(epsilons, norm, low, high, int(np.prod(shape)))
    num_classes = int(run.config.model.num_classes)
    if target not in (None, "next") and not 0 <= int(target) < num_classes:
        raise ConfigError(f"target class {target}: the run has classes 0..{num_classes - 1}")
    data = common.subset(run.dataset(split), examples, seed)
    epsilons = sorted({0.0, *map(float, epsilons)})
    forward = common.logits_fn(run)
    pgd_steps = 1 if attack == "fgsm" else steps

    def attacked(variables, x, y, eps, rng):
        targets = _targets_of(target, y, num_classes)
        fn = lambda z: forward(variables, z)  # noqa: E731
        if attack == "fgsm":
            return fgsm(fn, x, y, eps=eps, norm=norm, pixel_range=(low, high), targets=targets)
        return pgd(fn, x, y, eps=eps, step_size=step_size * eps, steps=pgd_steps, norm=norm,
                   pixel_range=(low, high), rng=rng if random_start else None,
                   targets=targets)

    @jax.jit
    def batch_counts(variables, x, y, mask, eps, rng):
        adv = attacked(variables, x, y, eps, rng)
        predicted = jnp.argmax(forward(variables, adv), axis=-1)
        delta = (adv - x).reshape(x.shape[0], -1)
        size = (jnp.max(jnp.abs(delta), axis=1) if norm == "linf"
                else jnp.sqrt(jnp.sum(delta * delta, axis=1)))
        goal = _targets_of(target, y, num_classes)
        return {"correct": jnp.sum((predicted == y) * mask),
                "hit": jnp.sum((predicted == goal) * mask) if goal is not None else 0.0,
                "largest": jnp.max(size * mask), "low": jnp.min(adv), "high": jnp.max(adv)}

    variables = jax.device_put(run.variables)
    clean = jax.jit(lambda v, x: jnp.argmax(forward(v, x), axis=-1))
    clean_correct = sum(float(np.sum((np.asarray(clean(variables, b["inputs"])) == b["targets"])
                                     * b["mask"]))
                        for b in pipeline.eval_batches(data, batch_size))
    key = jax.random.PRNGKey(seed)
    started = time.perf_counter()
    rows = []
    batches = list(pipeline.eval_batches(data, batch_size))
    bar = common.progress(range(len(epsilons) * len(batches)), desc=f"{attack} {norm}")
    for eps in epsilons:
        totals = {"correct": 0.0, "hit": 0.0, "largest": 0.0, "low": high, "high": low}
        for index, batch in enumerate(batches):
            next(bar, None)
            counts = jax.device_get(batch_counts(
                variables, batch["inputs"], batch["targets"], batch["mask"], jnp.float32(eps),
                jax.random.fold_in(key, index)))
            totals = {"correct": totals["correct"] + float(counts["correct"]),
                      "hit": totals["hit"] + float(counts["hit"]),
                      "largest": max(totals["largest"], float(counts["largest"])),
                      "low": min(totals["low"], float(counts["low"])),
                      "high": max(totals["high"], float(counts["high"]))}
        row = {"epsilon": eps, "accuracy": totals["correct"] / len(data),
               "largest_perturbation": totals["largest"],
               "adversarial_range": [totals["low"], totals["high"]]}
        if target is not None:
            row["target_success_rate"] = totals["hit"] / len(data)
        rows.append(row)
    seconds = time.perf_counter() - started
    report = {**common.describe(run), "attack": attack, "norm": norm,
              "steps": pgd_steps, "step_size_per_epsilon": 1.0 if attack == "fgsm" else step_size,
              "random_start": bool(random_start and attack == "pgd"),
              "target": target, "split": split, "examples": len(data), "subset_seed": seed,
              "pixel_range": [low, high], "clean_accuracy": clean_correct / len(data),
              "results": rows, "seconds": seconds}
    out = common.out_dir(run, "adversarial")
    common.write_json(out / REPORT, report)
    series = {"accuracy": [r["accuracy"] for r in rows]}
    if target is not None:
        series["target success rate"] = [r["target_success_rate"] for r in rows]
    plots.series_png(epsilons, series, out / FIGURE, xlabel=f"epsilon ({norm})",
                       ylabel="fraction of examples",
                       title=f"{attack.upper()} {norm} on {len(data)} {split} examples, "
                             f"step {run.step}")
    _grid(run, forward, attacked, variables, data, shown, epsilons[-1], key, out / GRID)
    return report


def _grid(run, forward, attacked, variables, data, shown: int, eps: float, key, path) -> None:
    """Clean, perturbation and adversarial rows of the first `shown` examples."""
    x = jnp.asarray(data.inputs[:shown])
    y = jnp.asarray(data.targets[:shown])
    adv = jax.jit(attacked)(variables, x, y, jnp.float32(eps), key)
    clean_p = jax.nn.softmax(forward(variables, x))
    adv_p = jax.nn.softmax(forward(variables, adv))
    titles = ([f"{int(t)}: {int(p.argmax())} ({float(p.max()):.2f})" for t, p in zip(y, clean_p)]
              + ["perturbation"] * len(x)
              + [f"-> {int(p.argmax())} ({float(p.max()):.2f})" for p in adv_p])
    images = np.concatenate([np.asarray(x), np.asarray(adv - x), np.asarray(adv)])
    plots.image_grid_png(images, titles, path, columns=max(1, len(x)),
                         title=f"rows: clean (label: prediction), perturbation (stretched), "
                               f"adversarial at epsilon {eps:g}")
