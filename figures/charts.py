"""Charts: confusion matrix, 2-D scatter coloured by class (t-SNE), curves over training steps, distributions
by group (box plots)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from figures.canvas import figure, png


def confusion_png(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> bytes:
    """The confusion matrix, cells coloured by row-normalised rate and annotated with counts."""
    c = len(class_names)
    support = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, support, out=np.zeros(confusion.shape, dtype=float), where=support > 0)
    fig = figure(1.2 + 0.75 * c, 1.0 + 0.7 * c)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            ax.text(
                j,
                i,
                str(int(confusion[i, j])),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(c))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c))
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall (row-normalised)")
    fig.tight_layout()
    return png(fig)


def scatter_png(points: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] | None, title: str) -> bytes:
    """(N, 2) points (a t-SNE embedding), coloured by class when ``labels`` are given."""
    from matplotlib import colormaps

    fig = figure(6.4, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
    else:
        cmap = colormaps["tab10"]
        for c in np.unique(labels):
            mask = labels == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=6,
                alpha=0.75,
                color=cmap(int(c) % 10),
                label=f"{name} ({mask.sum()})",
            )
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return png(fig)


def curve_png(
    series: dict[str, list[tuple[float, float]]],
    ylabel: str,
    title: str = "",
    hline: tuple[str, float] | None = None,
    xlabel: str = "step",
) -> bytes | None:
    """Lines of (x, y) points, one per named series (a series with one point or a few draws markers), with an
    optional labelled horizontal reference line. None when there is nothing to draw."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig = figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in series.items():
        style = "o-" if len(points) <= 30 else "-"
        ax.plot(*zip(*sorted(points)), style, ms=3, lw=1.2, label=name)
    if hline is not None and math.isfinite(hline[1]):
        ax.axhline(hline[1], color="gray", ls="--", lw=1, label=hline[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def distributions_png(panels: Sequence[tuple[str, dict[str, np.ndarray]]], xlabel: str, title: str) -> bytes:
    """One horizontal box-plot panel per (panel title, {group name: values}); each group's count in its label."""
    fig = figure(7.0, 0.8 + sum(0.35 * max(len(groups), 1) + 0.6 for _, groups in panels))
    heights = [max(len(groups), 1) for _, groups in panels]
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (name, groups) in zip(axes, panels):
        names = [g for g, v in groups.items() if len(v)]
        ax.boxplot([np.asarray(groups[g]) for g in names], vert=False, showfliers=True, flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(names) + 1))
        ax.set_yticklabels([f"{g} (n={len(groups[g])})" for g in names], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png(fig)


def matrix_png(
    values: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str, label: str, fmt: str = "{:.3f}"
) -> bytes:
    """A heat-map of a (rows x columns) matrix of floats (NaN: no value, left blank), each cell annotated."""
    values = np.asarray(values, dtype=float)
    fig = figure(1.6 + 0.9 * len(columns), 1.2 + 0.7 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=low, vmax=high if high > low else low + 1)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if np.isfinite(values[i, j]):
                bright = (values[i, j] - low) / ((high - low) or 1.0) > 0.6
                ax.text(
                    j,
                    i,
                    fmt.format(values[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if bright else "white",
                )
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    fig.tight_layout()
    return png(fig)
