"""Deep Dream and activation maximisation (Mordvintsev et al. 2015; Olah et al. 2017):
gradient ascent on the input image to raise the mean square activation of a named layer
(or the mean of one of its channels), or one class logit.

`objective_fn(x [1, H, W, C]) -> scalar` is built by `layer_objective` (from Flax's
`capture_intermediates`, which records every submodule's output under its path, e.g.
`Conv_1` or `ResNetStage_0/BottleneckBlock_1`) or `logit_objective`. `dream` runs the
ascent over octaves, coarse to fine, as the original Deep Dream does: the image at octave
o is the start image at that size plus the detail found at the octaves before (upsampled);
each step rolls the image by a random jitter, follows the gradient of the objective minus
a total-variation penalty, normalised by its mean magnitude, and clips to the pixel range.
Models with a fixed input size (a CNN whose head flattens) see each octave's image resized
to their input size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl import plots
from jaxdl.analysis import common
from jaxdl.schema import ConfigError

_TINY = 1e-8
# The method whose output capture_intermediates records for each module.
_CALL = "__call__"


def layer_names(apply_fn: Callable, variables, x: jax.Array) -> list[str]:
    """Every submodule path of the model, '/'-joined, in the order Flax records them."""
    _, state = apply_fn(variables, x, capture_intermediates=True, mutable=["intermediates"])
    names = []

    def walk(tree, path):
        for key, value in tree.items():
            if key == _CALL:
                if path:
                    names.append("/".join(path))
            elif isinstance(value, dict) or hasattr(value, "items"):
                walk(value, path + (key,))

    walk(state["intermediates"], ())
    return names


def layer_output(apply_fn: Callable, variables, x: jax.Array, layer: str) -> jax.Array:
    """The output of module `layer` ('/'-joined path) on input x."""
    def wanted(module, method_name):
        return method_name == _CALL and "/".join(module.path) == layer

    _, state = apply_fn(variables, x, capture_intermediates=wanted, mutable=["intermediates"])
    node = state["intermediates"]
    for part in layer.split("/"):
        node = node[part]
    (out,) = node[_CALL]
    return out


def layer_objective(apply_fn, variables, layer: str, *, channel: int | None = None,
                    preprocess: Callable = lambda x: x) -> Callable[[jax.Array], jax.Array]:
    """Deep Dream's objective, the mean square of `layer`'s output (the original's L2
    objective: it amplifies whatever the layer already responds to, of either sign), or
    with `channel` the mean of that channel (the last axis): activation maximisation of
    one feature."""
    def objective(x):
        out = layer_output(apply_fn, variables, preprocess(x), layer).astype(jnp.float32)
        return jnp.mean(out * out) if channel is None else jnp.mean(out[..., channel])
    return objective


def logit_objective(logits_fn: Callable, class_index: int) -> Callable[[jax.Array], jax.Array]:
    """The logit of `class_index` (activation maximisation of a class)."""
    return lambda x: logits_fn(x)[0, class_index].astype(jnp.float32)


def total_variation(image: jax.Array) -> jax.Array:
    """Mean absolute difference of neighbouring pixels (across rows and columns)."""
    return (jnp.mean(jnp.abs(image[:, 1:] - image[:, :-1]))
            + jnp.mean(jnp.abs(image[:, :, 1:] - image[:, :, :-1])))


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """(H, W) of each octave, smallest first, the last the full size."""
    return [(max(1, round(height / scale ** k)), max(1, round(width / scale ** k)))
            for k in reversed(range(octaves))]


def _resize(image, size):
    return jax.image.resize(image, image.shape[:1] + tuple(size) + image.shape[3:], "linear")


def ascend(objective_fn: Callable, image: jax.Array, rng: jax.Array, *, input_size,
           steps: int, step_size: float, jitter: int, tv_weight: float,
           pixel_range: tuple[float, float]) -> jax.Array:
    """`steps` normalised gradient-ascent steps on `image` [1, h, w, C] at its own size
    (the objective sees it resized to `input_size`)."""
    low, high = pixel_range

    def score(img, shift):
        seen = jnp.roll(img, shift, axis=(1, 2))
        return objective_fn(_resize(seen, input_size)) - tv_weight * total_variation(img)

    def step(i, img):
        shift = jax.random.randint(jax.random.fold_in(rng, i), (2,), -jitter, jitter + 1)
        grad = jax.grad(score)(img, (shift[0], shift[1]))
        grad = grad / (jnp.mean(jnp.abs(grad)) + _TINY)
        return jnp.clip(img + step_size * grad, low, high)

    return lax.fori_loop(0, steps, step, image)


def dream(objective_fn: Callable, start: jax.Array, rng: jax.Array, *, octaves: int,
          octave_scale: float, steps: int, step_size: float, jitter: int, tv_weight: float,
          pixel_range: tuple[float, float]) -> jax.Array:
    """The dreamed image [1, H, W, C] from `start` (a test image or noise), see module doc."""
    height, width = start.shape[1:3]
    sizes: Sequence[tuple[int, int]] = octave_sizes(height, width, octaves, octave_scale)
    detail = jnp.zeros(start.shape[:1] + sizes[0] + start.shape[3:], start.dtype)
    image = start
    for index, size in enumerate(sizes):
        base = _resize(start, size)
        image = base + _resize(detail, size)
        image = jax.jit(ascend, static_argnames=("input_size", "steps", "jitter"),
                        static_argnums=0)(
            objective_fn, image, jax.random.fold_in(rng, index), input_size=(height, width),
            steps=steps, step_size=step_size, jitter=jitter, tv_weight=tv_weight,
            pixel_range=pixel_range)
        detail = image - base
    return image


# --- over a trained run ---------------------------------------------------------------------

REPORT, FIGURE = "dream.json", "dream.png"
STARTS = ("test", "noise")


def model_apply(run) -> Callable:
    """(variables, raw-or-preprocessed x, **apply kwargs) -> the model in eval mode."""
    return lambda variables, x, **kwargs: run.model.apply(variables, x, train=False, **kwargs)


def analyse(run, *, layer: str | None, class_index: int | None, channel: int | None,
            start: str, split: str, indices: Sequence[int], octaves: int, octave_scale: float,
            steps: int, step_size: float, jitter: int, tv_weight: float, seed: int,
            pixel_range: tuple[float, float] | None = None) -> dict:
    """Deep Dream of `layer` (its mean square activation, or one `channel`'s mean) or
    activation maximisation of logit `class_index` (exactly one of the two), from rows `indices` of
    `split` (`start`='test') or from as many noise images ('noise'). Writes dream.json
    (the objective before and after) and a grid of starts and dreams into
    WORKDIR/analysis/dream/; returns the report."""
    shape = common.require_images(run, "dream")
    low, high = common.pixel_range(run, pixel_range)
    if (layer is None) == (class_index is None):
        raise ConfigError("dream: give exactly one of a layer name and a class index")
    if start not in STARTS:
        raise ConfigError(f"start {start!r}: choose one of {', '.join(STARTS)}")
    if octaves < 1 or octave_scale < 1.0:
        raise ConfigError(f"octaves={octaves}, octave_scale={octave_scale}: need octaves >= 1 "
                          "and octave_scale >= 1")
    split_data = run.dataset(split)
    bad = [i for i in indices if not 0 <= i < len(split_data)]
    if bad or not indices:
        raise ConfigError(f"examples {bad or list(indices)}: give row numbers of the {split} "
                          f"split, 0..{len(split_data) - 1}")
    variables = jax.device_put(run.variables)
    apply_fn = model_apply(run)
    probe = jnp.zeros((1, *shape), jnp.float32)
    if layer is not None:
        names = layer_names(apply_fn, variables, run.preprocess(probe))
        if layer not in names:
            raise ConfigError(f"layer {layer!r} is not in model {run.config.model.name!r}; its "
                              f"layers: {', '.join(names)}")
        width = layer_output(apply_fn, variables, run.preprocess(probe), layer).shape[-1]
        if channel is not None and not 0 <= channel < width:
            raise ConfigError(f"channel {channel}: layer {layer!r} has channels 0..{width - 1}")
        objective = layer_objective(apply_fn, variables, layer, channel=channel,
                                    preprocess=run.preprocess)
        what = layer + ("" if channel is None else f" channel {channel}")
    else:
        common.require_classifier(run, "dream of a class logit")
        num_classes = int(run.config.model.num_classes)
        if not 0 <= class_index < num_classes:
            raise ConfigError(f"class {class_index}: the run has classes 0..{num_classes - 1}")
        objective = logit_objective(lambda x: common.logits_fn(run)(variables, x), class_index)
        what = f"logit of class {class_index}"
    key = jax.random.PRNGKey(seed)
    if start == "test":
        starts = np.asarray(split_data.take(np.asarray(indices))["inputs"], np.float32)
    else:  # mid-grey plus a little noise, as Olah et al. start
        noise = jax.random.normal(key, (len(indices), *shape))
        starts = np.asarray(jnp.clip(low + (high - low) * (0.5 + 0.1 * noise), low, high))
    started = time.perf_counter()
    dreams, rows = [], []
    score = jax.jit(objective)
    for k in common.progress(range(len(starts)), desc="dream"):
        image = jnp.asarray(starts[k:k + 1])
        dreamed = dream(objective, image, jax.random.fold_in(key, k), octaves=octaves,
                        octave_scale=octave_scale, steps=steps, step_size=step_size,
                        jitter=jitter, tv_weight=tv_weight, pixel_range=(low, high))
        dreams.append(np.asarray(dreamed[0]))
        rows.append({"index": int(indices[k]) if start == "test" else None,
                     "objective_before": float(score(image)),
                     "objective_after": float(score(dreamed))})
    report = {**common.describe(run), "objective": what, "start": start, "split": split,
              "octaves": octaves, "octave_scale": octave_scale, "steps": steps,
              "step_size": step_size, "jitter": jitter, "tv_weight": tv_weight,
              "pixel_range": [low, high], "images": rows,
              "seconds": time.perf_counter() - started}
    out = common.out_dir(run, "dream")
    common.write_json(out / REPORT, report)
    titles = ([f"start {r['objective_before']:.2f}" for r in rows]
              + [f"dream {r['objective_after']:.2f}" for r in rows])
    plots.image_grid_png(np.concatenate([starts, np.stack(dreams)]), titles, out / FIGURE,
                         columns=len(rows),
                         title=f"{what}: starts (upper) and dreams (lower), objective value")
    return report
