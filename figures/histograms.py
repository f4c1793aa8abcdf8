"""Overlaid histograms of distance distributions with a decision threshold (the NFGAN paper's Fig. 4)."""

from __future__ import annotations

import numpy as np

from figures.canvas import figure, png

BINS = 30


def histograms_png(
    groups: dict[str, np.ndarray],
    xlabel: str,
    title: str,
    threshold: float | None = None,
    threshold_label: str = "",
) -> bytes:
    """One density histogram per named group (shared bins; densities, as the groups' sizes differ by orders of
    magnitude), each labelled with its count and median, and a dashed vertical line at ``threshold``."""
    fig = figure(7.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    filled = {name: np.asarray(v, dtype=np.float64) for name, v in groups.items() if len(v)}
    if filled:
        values = np.concatenate(list(filled.values()))
        if threshold is not None:
            values = np.append(values, threshold)
        edges = np.histogram_bin_edges(values, bins=BINS)
        for name, v in filled.items():
            ax.hist(v, bins=edges, density=True, alpha=0.45, label=f"{name} (n={len(v)}, median {np.median(v):.3f})")
    else:
        ax.text(0.5, 0.5, "no distances", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=threshold_label or f"{threshold:g}")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)
