"""Adversarial examples: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), under
an L-infinity or L2 bound, untargeted or targeted, in pixel space.

`logits_fn(x) -> logits` is the model as evaluation sees it (its eval-time preprocessing,
e.g. normalisation, inside), so the perturbation lives in the raw pixel space the data
comes in, and every adversarial input is clipped back to `pixel_range`. Pure and
traceable: `pgd` runs its steps in a `lax.fori_loop`, so one jit covers a whole attack and
`eps` may be a traced value (a sweep of epsilons compiles once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxdl import plots
from jaxdl.analysis import common, figures
from jaxdl.data import pipeline
from jaxdl.schema import ConfigError

NORMS = ("linf", "l2")
# Guards the L2 normalisations against a zero gradient or a zero perturbation (at eps 0
# the perturbation must come out exactly zero, not NaN).
_TINY = 1e-12


def _per_example_norm(x: jax.Array) -> jax.Array:
    """L2 norm of each example, shaped to broadcast against x."""
    flat = x.reshape(x.shape[0], -1)
    return jnp.sqrt(jnp.sum(flat * flat, axis=1)).reshape((-1,) + (1,) * (x.ndim - 1))


def project(delta: jax.Array, eps, norm: str) -> jax.Array:
    """`delta` moved into the `norm` ball of radius `eps` around 0 (per example)."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    scale = jnp.minimum(1.0, eps / jnp.maximum(_per_example_norm(delta), _TINY))
    return delta * scale


def _ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent step of unit `norm` size: sign(g) for L-inf, g/||g||_2 for L2."""
    if norm == "linf":
        return jnp.sign(grad)
    return grad / jnp.maximum(_per_example_norm(grad), _TINY)


def random_start(rng: jax.Array, shape, eps, norm: str) -> jax.Array:
    """A uniform draw from the `norm` ball of radius `eps` (Madry et al.'s random start)."""
    if norm == "linf":
        return jax.random.uniform(rng, shape, minval=-1.0, maxval=1.0) * eps
    direction_key, radius_key = jax.random.split(rng)
    direction = jax.random.normal(direction_key, shape)
    direction = direction / jnp.maximum(_per_example_norm(direction), _TINY)
    dims = jnp.prod(jnp.asarray(shape[1:]))
    radius = jax.random.uniform(radius_key, (shape[0],) + (1,) * (len(shape) - 1)) ** (1 / dims)
    return direction * radius * eps


def pgd(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, labels: jax.Array, *,
        eps, step_size, steps: int, norm: str, pixel_range: tuple[float, float],
        rng: jax.Array | None = None, targets: jax.Array | None = None) -> jax.Array:
    """Adversarial inputs within `eps` of `x` (in `norm`) and inside `pixel_range`.

    Each of `steps` steps moves by `step_size` along the sign (L-inf) or the normalised
    direction (L2) of the cross-entropy gradient, up the loss of the true `labels`
    (untargeted) or down the loss of `targets` (targeted), then projects back onto the
    ball and the pixel range. With `rng` the attack starts at a uniform point of the ball
    (clipped to the pixel range); without, at `x`. FGSM is one step of size eps from `x`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    low, high = pixel_range
    x = x.astype(jnp.float32)
    goal, sign = (labels, 1.0) if targets is None else (targets, -1.0)

    def loss(x_adv):
        logits = logits_fn(x_adv).astype(jnp.float32)
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, goal))

    def step(_, x_adv):
        grad = jax.grad(loss)(x_adv)
        x_adv = x_adv + sign * step_size * _ascent_direction(grad, norm)
        return jnp.clip(x + project(x_adv - x, eps, norm), low, high)

    start = x if rng is None else jnp.clip(x + random_start(rng, x.shape, eps, norm), low, high)
    return lax.fori_loop(0, steps, step, start)


def fgsm(logits_fn, x, labels, *, eps, norm: str, pixel_range, targets=None) -> jax.Array:
    """The fast gradient (sign) method: one step of size `eps`, no random start. At eps 0 it
    returns `x` itself."""
    return pgd(logits_fn, x, labels, eps=eps, step_size=eps, steps=1, norm=norm,
               pixel_range=pixel_range, targets=targets)


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
    figures.curves_png(epsilons, series, out / FIGURE, xlabel=f"epsilon ({norm})",
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
