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

# Inches per image panel and per matrix cell: small enough that a 10x10 matrix or a 4x4
# grid fits a screen, large enough for the annotations.
_PANEL_INCHES = 1.6
_CELL_INCHES = 0.55
# Beyond this many rows or columns the per-cell numbers would be unreadable.
_MAX_ANNOTATED = 30


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
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


def image_grid_png(images, titles: Sequence[str], path, *, title: str = "") -> Path:
    """Writes `images` ([N, H, W, 1 or 3]) as a near-square grid, each panel titled by
    `titles[i]`. An empty `images` gives a figure saying so."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"image_grid_png needs NHWC images with 1 or 3 channels, got "
                         f"{images.shape}")
    if len(titles) != len(images):
        raise ValueError(f"image_grid_png: {len(images)} images but {len(titles)} titles")
    n = len(images)
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    fig = _figure(max(_PANEL_INCHES * columns, 3.0), _PANEL_INCHES * rows + 0.4)
    if title:
        fig.suptitle(title, fontsize=9)
    if not n:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for i, (image, caption) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, i + 1)
        image = displayable(image)
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
        ax.set_axis_off()
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
    fig = _figure(max(_CELL_INCHES * columns + 1.5, 4.0), max(_CELL_INCHES * rows + 1.0, 3.5))
    ax = fig.add_subplot()
    image = ax.imshow(shading, cmap="Blues", interpolation="nearest", aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(columns))
    ax.set_yticks(range(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if max(rows, columns) <= _MAX_ANNOTATED:
        middle = (np.nanmin(shading) + np.nanmax(shading)) / 2 if shading.size else 0
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:g}" if np.issubdtype(values.dtype, np.floating) else str(value)
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shading[i, j] > middle else "black")
    return _save(fig, path)
