"""A matplotlib figure to PNG bytes, and image grids (tiles of uint8 images with row and column labels)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches at 100 dpi, detached from pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def png(fig) -> bytes:
    """The figure rendered by the Agg canvas, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 images (rows*cols, C, H, W) -> one (rows*(H+pad)+pad, cols*(W+pad)+pad[, 3]) picture."""
    n, c, h, w = images.shape
    if n != rows * cols:
        raise ValueError(f"{n} images for a {rows}x{cols} grid")
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + k * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = images[i].transpose(1, 2, 0)
    return canvas[..., 0] if c == 1 else canvas


def strip_png(images: np.ndarray, captions: Sequence[str], title: str) -> bytes:
    """uint8 gray images (N, H, W) in one row, each captioned (column labels); an empty strip says so."""
    if len(images) == 0:
        return grid_png(np.full((1, 1, 8, 8), 255, dtype=np.uint8), 1, 1, title + " (none)")
    return grid_png(np.asarray(images)[:, None], 1, len(images), title, col_labels=list(captions))


def grid_png(
    images: np.ndarray,
    rows: int,
    cols: int,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 2,
) -> bytes:
    """PNG of uint8 images (rows*cols, C, H, W) tiled row by row, with optional row labels (left) and column
    labels (top). Small images (16x16 in tests, 32x32 MNIST) are drawn at a readable size."""
    canvas = tile(images, rows, cols, pad)
    ch, cw = images.shape[2:]
    h, w = canvas.shape[:2]
    scale = max(1.0, 72 / max(ch, cw))
    height = h * scale / 100 + (1.3 if col_labels else 0.6)
    # room for the row labels: about 0.065 inch per character of the longest line at font size 8
    longest = max((len(line) for label in row_labels or [] for line in str(label).splitlines()), default=0)
    fig = figure(w * scale / 100 + (max(1.2, 0.3 + 0.065 * longest) if row_labels else 0.3), height)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([pad + r * (ch + pad) + ch / 2 for r in range(len(row_labels or []))])
    ax.set_yticklabels(list(row_labels or []), fontsize=8)
    if col_labels:
        ax.xaxis.tick_top()
        ax.set_xticks([pad + k * (cw + pad) + cw / 2 for k in range(len(col_labels))])
        ax.set_xticklabels(list(col_labels), rotation=30, ha="left", fontsize=8)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 0.3 / height))
    return png(fig)
