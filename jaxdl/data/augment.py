"""On-device image augmentation for NHWC float batches, jit- and pmap-safe.

A spec is a string a config can hold: ops joined by `+`, each with every parameter named,
e.g. `"random_crop(pad=4,pad_mode=reflect)+horizontal_flip(p=0.5)"`, or `"none"`.
`parse` validates it on the host; `apply(ops, rng, images, rows=...)` runs the ops in order
inside the compiled step, op i with `fold_in(rng, i)` and every example with its own key
folded from that with its row in the global batch (so a draw does not depend on how the
batch is split over devices). Mixup/cutmix are not here: they change the labels, and an
op here sees images only.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl import plots

__all__ = ["AUGMENTATIONS", "DETERMINISTIC", "NONE", "Op", "apply", "eval_ops", "format_spec",
           "make_op", "parse", "preview_png"]

NONE = "none"


@dataclasses.dataclass(frozen=True)
class Op:
    """One validated op: its name and its parameters in declaration order (hashable, so a
    tuple of ops can be closed over by, or passed static to, `jax.jit`)."""

    name: str
    params: tuple[tuple[str, Any], ...]

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def __str__(self) -> str:
        return f"{self.name}({','.join(f'{k}={_format_value(v)}' for k, v in self.params)})"


class _Bad(ValueError):
    """A parameter value that fails its check; the message says what it must be."""


@dataclasses.dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # what the value must be, shown in error messages
    convert: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class _OpSpec:
    params: tuple[_Param, ...]
    fn: Callable[..., jax.Array]  # fn(keys, images, **params) -> images; keys: one per image
    check: Callable[[dict[str, Any]], str | None] = lambda _: None

    def describe(self) -> str:
        return ", ".join(f"{p.name} ({p.kind})" for p in self.params)


# --- parameter checks -----------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_at_least(low: int) -> Callable[[Any], int]:
    def convert(value):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise _Bad
        return value
    return convert


def _float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], float]:
    def convert(value):
        if not _is_number(value) or not math.isfinite(value):
            raise _Bad
        value = float(value)
        if value < low or value > high or (low_open and value == low):
            raise _Bad
        return value
    return convert


def _choice(*names: str) -> Callable[[Any], str]:
    def convert(value):
        if value not in names:
            raise _Bad
        return value
    return convert


def _floats(*, positive: bool) -> Callable[[Any], tuple[float, ...]]:
    def convert(value):
        # A bare number is one channel's value: "(0.5)" reads as 0.5, not as a tuple.
        values = (value,) if _is_number(value) else value
        if not isinstance(values, (tuple, list)) or not values:
            raise _Bad
        if not all(_is_number(v) and math.isfinite(v) and (v > 0 or not positive)
                   for v in values):
            raise _Bad
        return tuple(float(v) for v in values)
    return convert


# --- the ops ----------------------------------------------------------------------------------

def _compute_dtype(dtype) -> jnp.dtype:
    # Interpolation and noise in at least float32: bfloat16 coordinates would misplace pixels.
    return jnp.promote_types(dtype, jnp.float32)


def _per_example(keys: jax.Array, draw: Callable[[jax.Array], Any]):
    """draw(key) for each image's key."""
    return jax.vmap(draw)(keys)


def _shifted(keys, images, pad: int, mode: str) -> jax.Array:
    """Pads H and W by `pad` and crops the original size back at a random offset per
    example: pad-and-crop and zero-filled translation are the same map."""
    _, h, w, c = images.shape
    offsets = _per_example(keys, lambda k: jax.random.randint(k, (2,), 0, 2 * pad + 1))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    return jax.vmap(lambda image, o: lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(
        padded, offsets)


def _random_crop(keys, images, *, pad, pad_mode):
    return _shifted(keys, images, pad, "constant" if pad_mode == "zeros" else "reflect")


def _translate(keys, images, *, max_shift):
    return _shifted(keys, images, max_shift, "constant")


def _horizontal_flip(keys, images, *, p):
    flip = _per_example(keys, lambda k: jax.random.bernoulli(k, p))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def _bilinear(image: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
    """image [H, W, C] sampled at source coordinates ys, xs [H, W]; outside is 0."""
    h, w = image.shape[:2]
    y0, x0 = jnp.floor(ys), jnp.floor(xs)
    fy, fx = ys - y0, xs - x0
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    out = jnp.zeros(image.shape, image.dtype)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            weight = jnp.where(inside, wy * wx, 0)
            out = out + weight[..., None] * image[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
    return out


def _warp(images: jax.Array, inverse: jax.Array) -> jax.Array:
    """Per-example linear map about the image centre: output offset d samples the input at
    `inverse[n] @ d` (bilinear, zero fill). inverse: [N, 2, 2] over (y, x)."""
    _, h, w, _ = images.shape
    dtype = _compute_dtype(images.dtype)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy, dx = jnp.meshgrid(jnp.arange(h, dtype=dtype) - cy, jnp.arange(w, dtype=dtype) - cx,
                          indexing="ij")
    a = inverse.astype(dtype)[:, :, :, None, None]
    # Multiply-adds, not a matmul: a GPU would run a float32 matmul in TF32 and shift pixels.
    ys = a[:, 0, 0] * dy + a[:, 0, 1] * dx + cy
    xs = a[:, 1, 0] * dy + a[:, 1, 1] * dx + cx
    return jax.vmap(_bilinear)(images.astype(dtype), ys, xs).astype(images.dtype)


def _rotate_by(images: jax.Array, degrees: jax.Array) -> jax.Array:
    """Rotates example n by degrees[n] counterclockwise as displayed (row 0 at the top)."""
    theta = jnp.deg2rad(degrees.astype(_compute_dtype(images.dtype)))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    return _warp(images, jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2))


def _rotate(keys, images, *, max_degrees):
    degrees = _per_example(keys, lambda k: jax.random.uniform(
        k, (), minval=-max_degrees, maxval=max_degrees))
    return _rotate_by(images, degrees)


def _scale(keys, images, *, min_scale, max_scale):
    zoom = _per_example(keys, lambda k: jax.random.uniform(
        k, (), minval=min_scale, maxval=max_scale))
    # Zoom z > 1 enlarges the content: output offset d samples the input at d / z.
    return _warp(images, jnp.eye(2) / zoom[:, None, None])


def _gaussian_noise(keys, images, *, std):
    dtype = _compute_dtype(images.dtype)
    noise = _per_example(keys, lambda k: jax.random.normal(k, images.shape[1:], dtype))
    return (images.astype(dtype) + std * noise).astype(images.dtype)


def _cutout(keys, images, *, size):
    _, h, w, _ = images.shape
    # The centre may lie anywhere in the image, so the square is clipped near the border.
    centres = _per_example(keys, lambda k: jax.random.randint(
        k, (2,), 0, jnp.array([h, w])))
    top, left = centres[:, 0] - size // 2, centres[:, 1] - size // 2
    rows, cols = jnp.arange(h), jnp.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)
    square = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return jnp.where(square, jnp.zeros((), images.dtype), images)


def _normalize(keys, images, *, mean, std):
    del keys  # deterministic
    if len(mean) != images.shape[-1]:
        raise ValueError(f"augmentation normalize: {len(mean)} mean/std values for images "
                         f"with {images.shape[-1]} channels")
    dtype = _compute_dtype(images.dtype)
    out = (images.astype(dtype) - jnp.asarray(mean, dtype)) / jnp.asarray(std, dtype)
    return out.astype(images.dtype)


def _scale_order(params) -> str | None:
    if params["min_scale"] > params["max_scale"]:
        return f"min_scale={params['min_scale']} must be <= max_scale={params['max_scale']}"
    return None


def _same_length(params) -> str | None:
    if len(params["mean"]) != len(params["std"]):
        return (f"mean has {len(params['mean'])} values but std has {len(params['std'])}; "
                "give one per channel")
    return None


_OPS: types.MappingProxyType[str, _OpSpec] = types.MappingProxyType({
    "random_crop": _OpSpec(
        (_Param("pad", "int >= 0", _int_at_least(0)),
         _Param("pad_mode", "zeros|reflect", _choice("zeros", "reflect"))), _random_crop),
    "horizontal_flip": _OpSpec(
        (_Param("p", "float in [0, 1]", _float_in(0.0, 1.0)),), _horizontal_flip),
    "translate": _OpSpec((_Param("max_shift", "int >= 0", _int_at_least(0)),), _translate),
    "rotate": _OpSpec(
        (_Param("max_degrees", "float in [0, 180]", _float_in(0.0, 180.0)),), _rotate),
    "scale": _OpSpec(
        (_Param("min_scale", "float > 0", _float_in(0.0, math.inf, low_open=True)),
         _Param("max_scale", "float > 0, >= min_scale", _float_in(0.0, math.inf, low_open=True))),
        _scale, _scale_order),
    "gaussian_noise": _OpSpec(
        (_Param("std", "float >= 0", _float_in(0.0, math.inf)),), _gaussian_noise),
    "cutout": _OpSpec((_Param("size", "int >= 0", _int_at_least(0)),), _cutout),
    "normalize": _OpSpec(
        (_Param("mean", "tuple of floats, one per channel", _floats(positive=False)),
         _Param("std", "tuple of floats > 0, one per channel", _floats(positive=True))),
        _normalize, _same_length),
})

AUGMENTATIONS: tuple[str, ...] = tuple(_OPS)
# Ops that draw nothing: they define the input the model expects, so evaluation runs them too.
DETERMINISTIC: frozenset[str] = frozenset({"normalize"})


# --- specs ----------------------------------------------------------------------------------

def _valid_ops() -> str:
    return f"valid: {', '.join(AUGMENTATIONS)}, or {NONE!r} alone"


def make_op(name: str, **params) -> Op:
    """A validated op; every parameter of `name` must be given. ValueError otherwise."""
    if name not in _OPS:
        raise ValueError(f"unknown augmentation op {name!r}; {_valid_ops()}")
    spec = _OPS[name]
    known = [p.name for p in spec.params]
    where = f"augmentation {name}"
    for key in params:
        if key not in known:
            raise ValueError(f"{where}: unknown parameter {key!r}; its parameters: "
                             f"{spec.describe()}")
    converted = {}
    for p in spec.params:
        if p.name not in params:
            raise ValueError(f"{where}: missing parameter {p.name!r}; its parameters: "
                             f"{spec.describe()}")
        try:
            converted[p.name] = p.convert(params[p.name])
        except _Bad:
            raise ValueError(f"{where}: {p.name}={params[p.name]!r} must be {p.kind}; its "
                             f"parameters: {spec.describe()}") from None
    if (problem := spec.check(converted)) is not None:
        raise ValueError(f"{where}: {problem}")
    return Op(name, tuple(converted.items()))


def _split_top(text: str, sep: str) -> list[str]:
    """Splits at `sep` outside brackets, so tuples like (0.5, 0.4) stay whole."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


_TERM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class _Unreadable:
    """A value that is neither a literal nor a bare word: shown as written in the error."""

    text: str

    def __repr__(self) -> str:
        return self.text


def _read_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        # Bare words (pad_mode=reflect) read as strings, so specs need no quotes.
        return text if _IDENTIFIER.fullmatch(text) else _Unreadable(text)


def parse(spec: str) -> tuple[Op, ...]:
    """The ops of `spec`, validated: `"none"` gives `()`. ValueError with one line otherwise."""
    if not isinstance(spec, str):
        # ValueError like every other spec problem, so callers need one except clause.
        raise ValueError(  # noqa: TRY004
            f"augmentation spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if text == NONE:
        return ()
    if not text:
        raise ValueError(f"empty augmentation spec; write {NONE!r} for no augmentation")
    if text.count("(") != text.count(")"):
        raise ValueError(f"augmentation spec {spec!r}: unbalanced parentheses")
    ops = []
    for term in _split_top(text, "+"):
        term = term.strip()
        match = _TERM.fullmatch(term)
        if match is None:
            raise ValueError(f"cannot read augmentation {term!r}; write name(param=value,...) "
                             f"joined by '+'; {_valid_ops()}")
        name, args = match.group(1), (match.group(2) or "").strip()
        if name not in _OPS:
            raise ValueError(f"unknown augmentation op {name!r}; {_valid_ops()}")
        params: dict[str, Any] = {}
        for arg in _split_top(args, ",") if args else []:
            key, eq, value = arg.partition("=")
            key = key.strip()
            if not eq or not _IDENTIFIER.fullmatch(key):
                raise ValueError(f"augmentation {name}: cannot read {arg.strip()!r}; write "
                                 f"param=value; its parameters: {_OPS[name].describe()}")
            if key in params:
                raise ValueError(f"augmentation {name}: parameter {key!r} given twice")
            params[key] = _read_value(value.strip())
        ops.append(make_op(name, **params))
    return tuple(ops)


def _format_value(value) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def eval_ops(ops: Sequence[Op]) -> tuple[Op, ...]:
    """The ops evaluation must run as well (the deterministic ones, in order): a model trained
    on normalized images is evaluated on normalized images, never on random crops."""
    return tuple(op for op in ops if op.name in DETERMINISTIC)


def format_spec(ops: Sequence[Op]) -> str:
    """The spec text of `ops`; `parse(format_spec(ops)) == tuple(ops)`."""
    return "+".join(str(op) for op in ops) or NONE


# --- running them ---------------------------------------------------------------------------

def apply(ops: Sequence[Op], rng: jax.Array, images: jax.Array,
          rows: jax.Array | None = None) -> jax.Array:
    """`images` [N, H, W, C] (float) after each op in order; same shape and dtype.

    Op i draws from `fold_in(rng, i)`, example n from `fold_in(that, rows[n])`: `rows` are
    the examples' rows in the global batch (default 0..N-1; under pmap pass each device's
    own, and the result is the one-device result). Traceable: call it inside jit/pmap with
    `ops` parsed outside.
    """
    if not ops:
        return images
    if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"augmentation needs float NHWC images, got {images.dtype} "
                         f"{tuple(images.shape)}")
    rows = jnp.arange(images.shape[0]) if rows is None else rows
    for index, op in enumerate(ops):
        keys = jax.vmap(lambda row: jax.random.fold_in(jax.random.fold_in(rng, index), row))(
            rows)
        images = _OPS[op.name].fn(keys, images, **op.kwargs)
    return images


def preview_png(ops: Sequence[Op], rng: jax.Array, images, path, *, columns: int) -> Path:
    """Writes a PNG grid, `columns` examples a row: each example before (upper row) and
    after `apply(ops, rng, images)` (lower row). Images need 1 (gray) or 3 channels; a
    panel with values outside [0, 1] (normalized, noisy) is stretched to its own range."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"preview_png needs NHWC images with 1 or 3 channels, got "
                         f"{images.shape}")
    if columns < 1:
        raise ValueError(f"preview_png: columns must be >= 1, got {columns}")
    after = np.asarray(jax.jit(apply, static_argnums=0)(tuple(ops), rng, images))
    n = images.shape[0]
    rows = math.ceil(n / columns)
    title = [str(op) for op in ops] or [NONE]  # one op a line: a long spec stays readable
    panel, line = 1.4, 0.18  # inches per image and per title line
    fig = Figure(figsize=(max(panel * columns, 4.0), panel * 2 * rows + line * len(title)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle("\n".join(title), fontsize=7)
    for i in range(n):
        row, col = divmod(i, columns)
        for half, (label, batch) in enumerate((("before", images), ("after", after))):
            ax = fig.add_subplot(2 * rows, columns, (2 * row + half) * columns + col + 1)
            image = plots.displayable(batch[i])
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(image, interpolation="nearest")
            ax.set_title(f"{i} {label}", fontsize=6)
            ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
