"""Matplotlib helpers for the benchmark reports (Agg backend: no display needed).

Every function writes one PNG and returns its path; parents are created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["Curve", "save_bars", "save_curve_panels", "save_curves", "save_image_grid"]

Curve = tuple[Sequence[float], Sequence[float]]
"""(x values, y values) of one line."""


def _finish(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_image_grid(
    rows: Sequence[tuple[str, Tensor]], path: Path, *, per_row: int = 10, title: str = ""
) -> Path:
    """One labelled row of images per entry (e.g. recovered images per teacher).

    Args:
        rows: ``(label, images)`` with images float in [0, 1], shape (N, C, H, W); the
            first ``per_row`` images of each are shown (grey: channel mean).
        path: output PNG.
        per_row: images per row.
        title: figure title.
    """
    n = max(len(rows), 1)
    fig, axes = plt.subplots(n, per_row, figsize=(per_row * 0.8, n * 0.9 + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows):
        pixels = images.detach().float().cpu().mean(dim=1).clamp(0, 1).numpy()
        for c in range(per_row):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < pixels.shape[0]:
                ax.imshow(pixels[c], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _finish(fig, path)


def save_curves(
    series: Mapping[str, Curve],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    hline: float | None = None,
    logx: bool = False,
) -> Path:
    """Line plot of named curves (accuracy curves, quality against steps or time).

    Args:
        series: name -> (x, y).
        path: output PNG.
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: plot title.
        hline: draw a dashed horizontal reference line at this y (e.g. a quality bar).
        logx: logarithmic x axis.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, (x, y) in series.items():
        ax.plot(
            np.asarray(x, dtype=float), np.asarray(y, dtype=float), marker="o", ms=3, label=name
        )
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def save_curve_panels(
    panels: Mapping[str, Mapping[str, Curve]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    columns: int = 2,
    logx: bool = False,
) -> Path:
    """A grid of line plots, one per panel, with one shared legend below them.

    A curve name that appears in several panels keeps its colour in all of them, so the
    legend names each curve once.

    Args:
        panels: panel title -> (curve name -> (x, y)).
        path: output PNG.
        xlabel: x-axis label of every panel.
        ylabel: y-axis label of every panel.
        title: figure title.
        columns: panels per row.
        logx: logarithmic x axes.
    """
    if not panels:
        raise ValueError("save_curve_panels needs at least one panel")
    names = list(dict.fromkeys(name for panel in panels.values() for name in panel))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 2.8 * rows + 0.6), squeeze=False, sharey=True
    )
    for ax, (panel_title, series) in zip(axes.flat, panels.items(), strict=False):
        for name, (x, y) in series.items():
            ax.plot(
                np.asarray(x, dtype=float),
                np.asarray(y, dtype=float),
                marker="o",
                ms=3,
                color=colours[name],
                label=name,
            )
        if logx:
            ax.set_xscale("log")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [Line2D([], [], color=colours[n], marker="o", ms=3) for n in names]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 2), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0.0, 0.06 * -(-len(names) // 2) / rows, 1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_bars(
    values: Mapping[str, float],
    path: Path,
    *,
    ylabel: str,
    title: str = "",
    errors: Mapping[str, float] | None = None,
    logy: bool = False,
) -> Path:
    """Bar chart of named values (speed comparison, accuracies with CI error bars).

    Args:
        values: name -> value.
        path: output PNG.
        ylabel: y-axis label.
        title: plot title.
        errors: optional name -> symmetric error bar half-width.
        logy: logarithmic y axis.
    """
    names = list(values)
    heights = [values[n] for n in names]
    err = [errors.get(n, 0.0) for n in names] if errors else None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 4.0))
    bars = ax.bar(names, heights, yerr=err, capsize=3, color="tab:blue")
    ax.bar_label(bars, fmt="%.3g", fontsize=7)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _finish(fig, path)
