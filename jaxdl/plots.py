"""Figures any task can write as PNG: a grid of images and an annotated matrix.

Drawn on matplotlib's Agg canvas directly (no pyplot: it would switch the process-wide
backend and keep figures alive); host numpy in, a file out. Imports nothing from jaxdl.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["displayable", "image_grid_png", "matrix_png"]

# Inches per image panel and per matrix cell, and around them for labels and titles: a
# 10x10 matrix or a 4x4 grid fits a screen with room for the annotations. Both figures are
# laid out by hand: matplotlib's layout engines cost more than the drawing itself.
_PANEL_INCHES = 1.4
_CELL_INCHES = 0.5
_MARGIN_INCHES = 0.75
_TITLE_INCHES = 0.45
_COLORBAR_INCHES = 0.9
# Beyond this many rows or columns the per-cell numbers would be unreadable, and the
# matrix is squeezed into a fixed size.
_MAX_ANNOTATED = 30
_MAX_PLOT_INCHES = 12.0


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
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
               ylabel: str = "") -> Path:
    """Writes the 2-D `values` as a heat map with each cell's value written in it (up to
    30 rows and columns) and row and column indices on the axes. `shading` (same shape)
    colours the cells instead of `values`: a confusion matrix shows counts coloured by
    row-normalised rates, so a rare class's errors stand out as much as a common one's."""
    values = np.asarray(values)
    shading = values if shading is None else np.asarray(shading)
    if values.ndim != 2 or shading.shape != values.shape:
        raise ValueError(f"matrix_png needs a 2-D matrix and a shading of its shape, got "
                         f"{values.shape} and {shading.shape}")
    rows, columns = values.shape
    plot_w = min(max(_CELL_INCHES * columns, 2.5), _MAX_PLOT_INCHES)
    plot_h = min(max(_CELL_INCHES * rows, 2.5), _MAX_PLOT_INCHES)
    inches_w = _MARGIN_INCHES + plot_w + _COLORBAR_INCHES
    inches_h = _MARGIN_INCHES + plot_h + _TITLE_INCHES
    fig = _figure(inches_w, inches_h)
    left, bottom = _MARGIN_INCHES / inches_w, _MARGIN_INCHES / inches_h
    ax = fig.add_axes((left, bottom, plot_w / inches_w, plot_h / inches_h))
    bar = fig.add_axes((left + (plot_w + 0.15) / inches_w, bottom, 0.15 / inches_w,
                        plot_h / inches_h))
    image = ax.imshow(shading, cmap="Blues", interpolation="nearest", aspect="auto")
    fig.colorbar(image, cax=bar)
    if max(rows, columns) <= _MAX_ANNOTATED:
        ax.set_xticks(range(columns))
        ax.set_yticks(range(rows))
    ax.tick_params(labelsize=7 if max(rows, columns) > 12 else 9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.1 * _TITLE_INCHES / inches_h, va="top")
    if max(rows, columns) <= _MAX_ANNOTATED and values.size:
        middle = (np.nanmin(shading) + np.nanmax(shading)) / 2
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.3g}" if np.issubdtype(values.dtype, np.floating) else str(value)
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shading[i, j] > middle else "black")
    return _save(fig, path)
