"""Loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"): the
loss along the straight line between two sets of weights, and on a plane spanned by two
filter-normalised random directions around one set.

Filter normalisation: a random Gaussian direction d has, for every filter of every layer
(the slice of a kernel that makes one output channel: conv kernel [..., in, out] and dense
kernel [in, out] alike), its norm rescaled to that filter's norm in the weights theta:
d_f <- d_f / ||d_f|| * ||theta_f||. Parameters with one axis (biases, BatchNorm scale and
offset) get a zero direction, as the paper's code does for them (`--xignore biasbn`);
BatchNorm's running statistics are not parameters and stay those of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import plots
from jaxdl.analysis import common
from jaxdl.schema import ConfigError
from jaxdl.training.state import create_state

# Never divide by a zero norm (a random filter is zero with probability 0, but a pruned
# weight filter is not).
_TINY = 1e-10


def _normalised_leaf(key: jax.Array, weights: jax.Array) -> jax.Array:
    if weights.ndim <= 1:
        return jnp.zeros_like(weights)
    direction = jax.random.normal(key, weights.shape, weights.dtype)
    # A filter is one output channel: every axis but the last.
    axes = tuple(range(weights.ndim - 1))
    filter_norm = jnp.sqrt(jnp.sum(weights * weights, axis=axes, keepdims=True))
    direction_norm = jnp.sqrt(jnp.sum(direction * direction, axis=axes, keepdims=True))
    return direction / jnp.maximum(direction_norm, _TINY) * filter_norm


def filter_normalised_direction(rng: jax.Array, params):
    """A random direction shaped like `params`, filter-normalised to them (module doc)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(rng, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [_normalised_leaf(k, w) for k, w in zip(keys, leaves)])


def along(start, end, alpha):
    """(1 - alpha) * start + alpha * end, leaf by leaf."""
    return jax.tree_util.tree_map(lambda a, b: a + alpha * (b - a), start, end)


def shifted(params, directions: Sequence, coordinates):
    """params + sum_i coordinates[i] * directions[i]."""
    return jax.tree_util.tree_map(
        lambda p, *ds: p + sum(c * d for c, d in zip(coordinates, ds)), params, *directions)


def line(metrics_fn: Callable, start, end, alphas: Sequence[float], *,
         progress: Callable = iter) -> dict[str, np.ndarray]:
    """`metrics_fn(params) -> {name: scalar}` at each point (1 - a) start + a end; arrays
    over `alphas`. `progress` wraps the iteration (a tqdm bar)."""
    evaluate = jax.jit(lambda a: metrics_fn(along(start, end, a)))
    rows = [jax.device_get(evaluate(jnp.float32(a))) for a in progress(alphas)]
    return {k: np.asarray([r[k] for r in rows], np.float64) for k in rows[0]}


def plane(metrics_fn: Callable, center, directions: Sequence, xs: Sequence[float],
          ys: Sequence[float], *, progress: Callable = iter) -> dict[str, np.ndarray]:
    """`metrics_fn` at center + x d1 + y d2 on the grid; arrays [len(ys), len(xs)]. A row of
    the grid is one vmapped call."""
    row_fn = jax.jit(jax.vmap(lambda x, y: metrics_fn(shifted(center, directions, (x, y))),
                              in_axes=(0, None)))
    xs_device = jnp.asarray(xs, jnp.float32)
    rows = [jax.device_get(row_fn(xs_device, jnp.float32(y))) for y in progress(ys)]
    return {k: np.stack([np.asarray(r[k], np.float64) for r in rows]) for k in rows[0]}


# --- over trained runs ----------------------------------------------------------------------

LINE_REPORT, LINE_FIGURE = "line.json", "line.png"
PLANE_REPORT, CONTOUR, SURFACE = "plane.json", "contour.png", "surface.png"


def initial_variables(run) -> dict:
    """The run's weights before its first step: the init is a pure function of the seed
    (`training.state.create_state`), so it is rebuilt rather than read (the loop keeps no
    step-0 checkpoint)."""
    example = run.dataset("train").take(np.arange(1))["inputs"]
    state = create_state(run.task, optax.identity(), int(run.config.seed), jnp.asarray(example))
    return {"params": state.params, **state.model_state}


def _same_shapes(a, b, where: str) -> None:
    shapes = [jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), v) for v in (a, b)]
    if (jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b)
            or shapes[0] != shapes[1]):
        raise ConfigError(f"{where}: the two sets of weights have different layers or shapes; "
                          "both runs must train the same model")


def _metrics_fn(run, data) -> Callable:
    """variables -> {loss, accuracy...}: the task's eval values averaged over `data`."""
    values = common.values_fn(run)
    x, y = jnp.asarray(data.inputs), jnp.asarray(data.targets)

    def metrics(variables):
        out = values(variables, x, y)
        return {k: jnp.mean(v.astype(jnp.float32)) for k, v in out.items()}
    return metrics


def analyse_line(run, *, other=None, points: int, margin: float, split: str,
                 examples: int | None, seed: int) -> dict:
    """Loss and metrics along (1 - a) * start + a * end for `points` values of a from
    -margin to 1 + margin, with `start` the run's initial weights (rebuilt from its seed)
    or, given `other` (a loaded run of the same model), that run's weights. Every variable
    moves along the line, BatchNorm statistics too, so a = 0 and a = 1 are exactly the two
    models as their evaluations saw them. Writes line.json and line.png into
    WORKDIR/analysis/landscape/; returns the report."""
    common.require_classifier(run, "landscape")
    if points < 2:
        raise ConfigError(f"points={points}: need at least 2")
    if other is None:
        start, start_name = initial_variables(run), f"initial weights (seed {run.config.seed})"
    else:
        start, start_name = other.variables, f"{other.workdir} step {other.step}"
    start = jax.tree_util.tree_map(jnp.asarray, dict(start))
    end = jax.tree_util.tree_map(jnp.asarray, dict(run.variables))
    _same_shapes(start, end, "landscape line")
    data = common.subset(run.dataset(split), examples, seed)
    # The endpoints exactly, whatever the spacing (rounding merges 5.6e-17 into 0).
    alphas = np.unique(np.round(np.concatenate(
        [np.linspace(-margin, 1.0 + margin, points), [0.0, 1.0]]), 9))
    started = time.perf_counter()
    values = line(_metrics_fn(run, data), start, end, alphas,
                  progress=lambda items: common.progress(items, desc="landscape line"))
    report = {**common.describe(run), "from": start_name, "to": f"{run.workdir} step {run.step}",
              "split": split, "examples": len(data), "subset_seed": seed,
              "alpha": alphas.tolist(), **{k: v.tolist() for k, v in values.items()},
              "at_start": {k: float(v[alphas == 0.0][0]) for k, v in values.items()},
              "at_end": {k: float(v[alphas == 1.0][0]) for k, v in values.items()},
              "seconds": time.perf_counter() - started}
    out = common.out_dir(run, "landscape")
    common.write_json(out / LINE_REPORT, report)
    second = {"accuracy": values["accuracy"]} if "accuracy" in values else None
    plots.series_png(alphas, {"loss": values["loss"]}, out / LINE_FIGURE,
                       xlabel="alpha (0: start, 1: end)", ylabel="loss", second=second,
                       second_label="accuracy",
                       title=f"from {start_name}\nto step {run.step}: {len(data)} {split} "
                             "examples")
    return report


def analyse_plane(run, *, points: int, span: float, split: str, examples: int | None,
                  seed: int) -> dict:
    """Loss on a points x points grid of [-span, span]^2 around the run's weights along two
    filter-normalised random directions (drawn from `seed`; zero for one-axis
    parameters, BatchNorm statistics those of the run), on a seeded subset of `split`
    (the training split by default, as Li et al.). The grid always holds the centre.
    Writes plane.json, contour.png and surface.png into WORKDIR/analysis/landscape/."""
    common.require_classifier(run, "landscape")
    if points < 3:
        raise ConfigError(f"points={points}: need at least 3 for a surface")
    if span <= 0:
        raise ConfigError(f"span={span}: must be > 0")
    data = common.subset(run.dataset(split), examples, seed)
    variables = jax.tree_util.tree_map(jnp.asarray, dict(run.variables))
    keys = jax.random.split(jax.random.PRNGKey(seed))
    params = variables["params"]
    directions = [{**{k: jax.tree_util.tree_map(jnp.zeros_like, v)
                      for k, v in variables.items() if k != "params"},
                   "params": filter_normalised_direction(key, params)} for key in keys]
    coordinates = np.unique(np.round(np.concatenate(
        [np.linspace(-span, span, points), [0.0]]), 9))
    started = time.perf_counter()
    values = plane(_metrics_fn(run, data), variables, directions, coordinates, coordinates,
                   progress=lambda items: common.progress(items, desc="landscape plane"))
    centre = int(np.flatnonzero(coordinates == 0.0)[0])
    report = {**common.describe(run), "split": split, "examples": len(data),
              "direction_seed": seed, "coordinates": coordinates.tolist(),
              **{k: v.tolist() for k, v in values.items()},
              "at_centre": {k: float(v[centre, centre]) for k, v in values.items()},
              "seconds": time.perf_counter() - started}
    out = common.out_dir(run, "landscape")
    common.write_json(out / PLANE_REPORT, report)
    title = f"loss around step {run.step}: {len(data)} {split} examples"
    plots.contour_png(coordinates, coordinates, values["loss"], out / CONTOUR, title=title,
                        label="loss")
    plots.surface_png(coordinates, coordinates, values["loss"], out / SURFACE, title=title,
                        label="loss")
    return report
