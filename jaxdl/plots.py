"""Figures any task can write as PNG: a grid of images and an annotated matrix.

Drawn on matplotlib's Agg canvas directly (no pyplot: it would switch the process-wide
backend and keep figures alive); host numpy in, a file out. Imports nothing from jaxdl.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["Curve", "attention_png", "contour_png", "curves_png", "curve_png", "displayable", "image_grid_png",
           "matrix_png", "panels_png", "parallel_coordinates_png", "scatter_panels_png",
           "series_png", "small_multiples_png", "surface_png", "words_png"]

# Inches per image panel and per matrix cell, and around them for labels and titles: a
# 10x10 matrix or a 4x4 grid fits a screen with room for the annotations. Both figures are
# laid out by hand: matplotlib's layout engines cost more than the drawing itself.
_PANEL_INCHES = 1.4
_CELL_INCHES = 0.5
_MARGIN_INCHES = 0.75
_TITLE_INCHES = 0.45
_COLORBAR_INCHES = 0.9
_TITLE_CHAR_INCHES = 0.075  # a character of a 9-point title, about
# Beyond this many rows or columns the per-cell numbers would be unreadable, and the
# matrix is squeezed into a fixed size.
_MAX_ANNOTATED = 30
_MAX_PLOT_INCHES = 12.0


def _figure(width: float, height: float, **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def displayable(image: np.ndarray) -> np.ndarray:
    """`image` in [0, 1]; one with values outside (normalized, noisy) is stretched to its
    own range, since it has no fixed display range."""
    image = np.asarray(image, np.float32)
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.clip(image, 0, 1)


def image_grid_png(images, titles: Sequence[str], path, *, title: str = "",
                   columns: int | None = None) -> Path:
    """Writes `images` ([N, H, W, 1 or 3]) as a near-square grid (or `columns` a row) on a
    white page, each panel stretched to its own range (`displayable`) and captioned by
    `titles[i]`. An empty `images` gives a page saying so."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"image_grid_png needs NHWC images with 1 or 3 channels, got "
                         f"{images.shape}")
    if len(titles) != len(images):
        raise ValueError(f"image_grid_png: {len(images)} images but {len(titles)} titles")
    n, height, width = images.shape[:3]
    columns = max(1, columns or math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    # One mosaic in one axes: a caption band above each image, a gutter between columns.
    band, gutter = max(2, round(0.3 * height)), max(1, round(0.08 * width))
    cell_h, cell_w = band + height, width + gutter
    mosaic = np.ones((rows * cell_h, columns * cell_w - gutter, 3), np.float32)
    for i, image in enumerate(images):
        row, col = divmod(i, columns)
        top, left = row * cell_h + band, col * cell_w
        mosaic[top:top + height, left:left + width] = displayable(image)  # gray -> RGB
    inches_w = max(_PANEL_INCHES * columns, 3.0)
    inches_h = _PANEL_INCHES * rows * cell_h / height * width / cell_w + _TITLE_INCHES
    fig = _figure(inches_w, inches_h)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - _TITLE_INCHES / inches_h))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.1 * _TITLE_INCHES / inches_h, va="top")
    if not n:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
    for i, caption in enumerate(titles):
        row, col = divmod(i, columns)
        ax.text(col * cell_w + (width - 1) / 2, row * cell_h + band / 2 - 0.5, caption,
                ha="center", va="center", fontsize=7)
    return _save(fig, path)


def matrix_png(values, path, *, shading=None, title: str = "", xlabel: str = "",
               ylabel: str = "", tick_labels: Sequence[str] | None = None) -> Path:
    """Writes the 2-D `values` as a heat map with each cell's value written in it (up to
    30 rows and columns) and row and column indices on the axes. `shading` (same shape)
    colours the cells instead of `values`: a confusion matrix shows counts coloured by
    row-normalised rates, so a rare class's errors stand out as much as a common one's.
    `tick_labels`: names of the rows (and columns) instead of their indices."""
    values = np.asarray(values)
    shading = values if shading is None else np.asarray(shading)
    if values.ndim != 2 or shading.shape != values.shape:
        raise ValueError(f"matrix_png needs a 2-D matrix and a shading of its shape, got "
                         f"{values.shape} and {shading.shape}")
    rows, columns = values.shape
    plot_w = min(max(_CELL_INCHES * columns, 2.5), _MAX_PLOT_INCHES)
    plot_h = min(max(_CELL_INCHES * rows, 2.5), _MAX_PLOT_INCHES)
    # A title of several lines (figures under a heading) gets the room it needs.
    lines = title.split("\n")
    title_h = _TITLE_INCHES * (1 + 0.6 * (len(lines) - 1))
    # Named rows push the axis label left: room for the longest name.
    margin_w = _MARGIN_INCHES + _TITLE_CHAR_INCHES * max(map(len, tick_labels or [""]))
    inches_w = max(margin_w + plot_w + _COLORBAR_INCHES,
                   _TITLE_CHAR_INCHES * max(map(len, lines)))
    inches_h = _MARGIN_INCHES + plot_h + title_h
    fig = _figure(inches_w, inches_h)
    left, bottom = margin_w / inches_w, _MARGIN_INCHES / inches_h
    ax = fig.add_axes((left, bottom, plot_w / inches_w, plot_h / inches_h))
    bar = fig.add_axes((left + (plot_w + 0.15) / inches_w, bottom, 0.15 / inches_w,
                        plot_h / inches_h))
    image = ax.imshow(shading, cmap="Blues", interpolation="nearest", aspect="auto")
    fig.colorbar(image, cax=bar)
    if max(rows, columns) <= _MAX_ANNOTATED:
        ax.set_xticks(range(columns), labels=tick_labels)
        ax.set_yticks(range(rows), labels=tick_labels)
    ax.tick_params(labelsize=7 if max(rows, columns) > 12 else 9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.1 * title_h / inches_h, va="top")
    if max(rows, columns) <= _MAX_ANNOTATED and values.size:
        middle = (np.nanmin(shading) + np.nanmax(shading)) / 2
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.3g}" if np.issubdtype(values.dtype, np.floating) else str(value)
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shading[i, j] > middle else "black")
    return _save(fig, path)


_PANEL_PLOT_INCHES = 3.0  # one scatter panel, and the height of a line figure


def scatter_panels_png(panels: Sequence[tuple[str, Sequence, bool]], ys, path, *,
                       ylabel: str, title: str = "") -> Path:
    """One scatter panel per (name, x values, log x) against the same `ys`: an objective
    against each hyperparameter. x values that are not numbers are placed as categories."""
    ys = np.asarray(ys, np.float64)
    n = max(1, len(panels))
    fig = _figure(_PANEL_PLOT_INCHES * n + 0.5, _PANEL_PLOT_INCHES + _TITLE_INCHES)
    for i, (name, xs, log) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        positions, labels = _positions(xs)
        ax.scatter(positions, ys, s=18)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        elif log:
            ax.set_xscale("log")
        ax.set_xlabel(name, fontsize=8)
        if i == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _positions(values) -> tuple[np.ndarray, list[str] | None]:
    """Numbers as they are, or (for any non-number) the index of each distinct value."""
    try:
        return np.asarray([float(v) for v in values], np.float64), None
    except (TypeError, ValueError):
        labels = sorted({str(v) for v in values})
        return np.asarray([labels.index(str(v)) for v in values], np.float64), labels


def parallel_coordinates_png(axes: Sequence[tuple[str, Sequence, bool]], colors, path, *,
                             color_label: str, title: str = "") -> Path:
    """One vertical axis per (name, values, log), one line per row through them, coloured
    by `colors` (an objective): which settings the good trials share."""
    colors = np.asarray(colors, np.float64)
    fig = _figure(max(4.0, 1.6 * len(axes) + 1.5), _PANEL_PLOT_INCHES + _TITLE_INCHES)
    ax = fig.add_axes((0.08, 0.12, 0.70, 0.75))
    scaled = []
    for name, values, log in axes:
        positions, labels = _positions(values)
        if labels is None and log:
            positions = np.log10(positions)
        low, high = positions.min(), positions.max()
        scaled.append((positions - low) / (high - low) if high > low else positions * 0 + 0.5)
        low_text = labels[0] if labels else f"{(10 ** low if log else low):.3g}"
        high_text = labels[-1] if labels else f"{(10 ** high if log else high):.3g}"
        ax.text(len(scaled) - 1, -0.08, low_text, ha="center", va="top", fontsize=7)
        ax.text(len(scaled) - 1, 1.04, high_text, ha="center", va="bottom", fontsize=7)
    from matplotlib import cm, colors as mcolors
    norm = mcolors.Normalize(np.nanmin(colors), np.nanmax(colors)) if len(colors) else None
    for row in range(len(colors)):
        ax.plot(range(len(scaled)), [s[row] for s in scaled], alpha=0.8,
                color=cm.viridis(norm(colors[row])))
    ax.set_xticks(range(len(axes)), [name for name, _, _ in axes], fontsize=7)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    for i in range(len(axes)):
        ax.axvline(i, color="gray", linewidth=0.8)
    if norm is not None:
        bar = fig.add_axes((0.81, 0.12, 0.025, 0.75))
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap="viridis"), cax=bar, label=color_label)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def curve_png(xs, ys, path, *, xlabel: str, ylabel: str, log_x: bool = False,
              marks: Sequence[tuple[float, str]] = (), title: str = "") -> Path:
    """A line of `ys` against `xs`, with a labelled vertical line at each (x, label) of
    `marks`: a loss against the learning rate, with the suggested rate."""
    fig = _figure(1.6 * _PANEL_PLOT_INCHES, _PANEL_PLOT_INCHES + _TITLE_INCHES)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    if log_x:
        ax.set_xscale("log")
    for i, (x, label) in enumerate(marks):
        ax.axvline(x, color="red", linestyle="--", linewidth=1)
        ax.text(x, 0.98 - 0.07 * i, f" {label}", transform=ax.get_xaxis_transform(),
                color="red", fontsize=7, va="top")  # stepped down: marks may lie close
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One line of `curves_png`: points (x, y), its legend entry, and optionally one
    point marked on it (an operating point) with its own legend entry."""

    x: Sequence[float]
    y: Sequence[float]
    label: str
    mark: tuple[float, float] | None = None
    mark_label: str = ""
    markers: bool = False  # draw each point (a reliability diagram's bins)


def curves_png(curves: Sequence[Curve], path, *, title: str, xlabel: str, ylabel: str,
               diagonal: bool = False, legend_loc: str = "best") -> Path:
    """Writes lines on a unit square (ROC, precision-recall, reliability diagrams), each
    named in the legend, marked points as crosses; `diagonal` draws y = x dashed (chance
    for ROC, perfect calibration for reliability)."""
    fig = _figure(6.0, 5.0)
    ax = fig.add_axes((0.12, 0.11, 0.84, 0.78))
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="y = x")
    for i, curve in enumerate(curves):
        colour = f"C{i}"
        ax.plot(curve.x, curve.y, color=colour, label=curve.label,
                marker="o" if curve.markers else None, markersize=4)
        if curve.mark is not None:
            ax.plot(*curve.mark, marker="X", markersize=10, color=colour, linestyle="none",
                    markeredgecolor="black", label=curve.mark_label)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc=legend_loc)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


# The analysis tools' figures (jaxdl.analysis): curves against a swept value, small
# multiples, image panels with overlays, a loss contour and surface.

def series_png(x: Sequence[float], series: Mapping[str, Sequence[float]], path, *,
               xlabel: str, ylabel: str, title: str, second: Mapping[str, Sequence[float]]
               | None = None, second_label: str = "") -> Path:
    """One line per entry of `series` against `x` (and of `second` on a right axis)."""
    fig = _figure(6.0, 4.0, layout="constrained")
    ax = fig.add_subplot()
    for name, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if second:
        right = ax.twinx()
        for name, values in second.items():
            right.plot(x, values, linestyle="--", marker="s", markersize=3, label=name,
                       color="tab:red")
        right.set_ylabel(second_label)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def small_multiples_png(panels: Mapping[str, tuple[Sequence[float], Sequence[float]]], path,
                        *, xlabel: str, ylabel: str, title: str) -> Path:
    """One small plot per entry (name -> (x, y)), side by side, y from 0 to 1."""
    fig = _figure(3.2 * len(panels), 3.2, layout="constrained")
    fig.suptitle(title, fontsize=9)
    for i, (name, (x, y)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(x, y, marker="o")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel(ylabel)
    return _save(fig, path)


def panels_png(rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray | None, str]]], path, *,
               title: str) -> Path:
    """A table of panels; each panel is (image [H, W, C], heat map [H, W] or None, caption):
    the image in gray (or colour), the heat map over it in a diverging colour map centred
    on zero (red raises the score, blue lowers it)."""
    columns = max(len(r) for r in rows)
    fig = _figure(1.6 * columns, 1.7 * len(rows) + 0.4, layout="constrained")
    fig.suptitle(title, fontsize=9)
    for r, row in enumerate(rows):
        for c, (image, heat, caption) in enumerate(row):
            ax = fig.add_subplot(len(rows), columns, r * columns + c + 1)
            shown = displayable(image)
            if shown.shape[-1] == 1:
                ax.imshow(shown[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(shown, interpolation="nearest")
            if heat is not None:
                bound = float(np.max(np.abs(heat))) or 1.0
                ax.imshow(heat, cmap="bwr", vmin=-bound, vmax=bound, alpha=0.6,
                          interpolation="nearest")
            ax.set_title(caption, fontsize=7)
            ax.set_axis_off()
    return _save(fig, path)


def contour_png(xs, ys, values: np.ndarray, path, *, title: str, label: str) -> Path:
    """Filled contour of values [len(ys), len(xs)], the centre marked."""
    fig = _figure(5.5, 4.5, layout="constrained")
    ax = fig.add_subplot()
    filled = ax.contourf(xs, ys, values, levels=20, cmap="viridis")
    ax.contour(xs, ys, values, levels=20, colors="k", linewidths=0.3)
    fig.colorbar(filled, ax=ax, label=label)
    ax.plot([0], [0], marker="*", color="red", markersize=10)
    ax.set_xlabel("direction 1 (filter-normalised)")
    ax.set_ylabel("direction 2 (filter-normalised)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def surface_png(xs, ys, values: np.ndarray, path, *, title: str, label: str) -> Path:
    """The 3-D surface of values [len(ys), len(xs)]."""
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot(projection="3d")
    grid_x, grid_y = np.meshgrid(xs, ys)
    ax.plot_surface(grid_x, grid_y, values, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel(label)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def words_png(points: np.ndarray, words: Sequence[str], path, *, title: str) -> Path:
    """Words placed at their 2-D points [N, 2] (a projection of their vectors), each a dot
    with its spelling beside it."""
    points = np.asarray(points, np.float64)
    fig = _figure(9.0, 8.0, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=4, color="tab:blue")
    for (x, y), word in zip(points, words):
        ax.annotate(word, (x, y), xytext=(2, 2), textcoords="offset points", fontsize=6)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def attention_png(panels: Sequence[tuple[np.ndarray, Sequence[str], Sequence[str]]], path, *,
                  title: str) -> Path:
    """One heat map per example, side by side: (weights [T, S], the S source tokens on the
    x axis, the T output tokens on the y axis), each cell the weight of that source token
    when that output token was produced, on one 0..1 scale."""
    if not panels:
        raise ValueError("attention_png needs at least one panel")
    for weights, source, output in panels:
        if np.shape(weights) != (len(output), len(source)):
            raise ValueError(f"attention_png: weights of shape {np.shape(weights)} for "
                             f"{len(output)} output and {len(source)} source tokens")
    widths = [max(1.5, 0.16 * len(source)) for _, source, _ in panels]
    height = max(1.5, 0.2 * max(len(output) for _, _, output in panels))
    fig = _figure(sum(widths) + 0.6 * len(panels) + 0.6, height + 1.4, layout="constrained")
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(1, len(panels), width_ratios=widths, squeeze=False)[0]
    for ax, (weights, source, output) in zip(axes, panels):
        image = ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_xticks(range(len(source)), labels=["␣" if c == " " else c for c in source], fontsize=7)
        ax.set_yticks(range(len(output)), labels=list(output), fontsize=7)
        ax.set_xlabel("source", fontsize=8)
    axes[0].set_ylabel("output", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    return _save(fig, path)
