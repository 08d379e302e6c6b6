"""The analysis tools' own figures: curves, a saliency overlay, a contour and a 3-D
surface (image grids come from `jaxdl.plots`). Matplotlib's Agg canvas directly, no
pyplot, as in `jaxdl.plots`; host numpy in, a PNG out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxdl import plots


def _figure(width: float, height: float, **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def curves_png(x: Sequence[float], series: Mapping[str, Sequence[float]], path, *,
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
            shown = plots.displayable(image)
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
