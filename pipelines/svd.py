"""The BPLF paper's SVD step: keep each image's largest singular values and reconstruct it.

Section 3.2: "The data X is the operation of truncating the singular value of the image before the Squeeze
operation, that is, the largest part of the singular value is retained for reconstruction." The paper gives no
rank; emoflow takes either a fixed rank or the smallest rank keeping a fraction of the spectral energy
(sum of squared singular values), from params.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits


def kept_ranks(singular_values: np.ndarray, rank: int | None, energy: float | None) -> np.ndarray:
    """How many singular values each image keeps. ``singular_values``: (N, K), descending per row."""
    n, k = singular_values.shape
    if rank is not None:
        return np.full(n, min(rank, k), dtype=np.int64)
    if energy is None:
        raise ValueError("give rank or energy")
    power = singular_values.astype(np.float64) ** 2
    total = power.sum(axis=1, keepdims=True)
    # A blank image has no energy at all: keep one value (reconstructs the blank exactly).
    fraction = np.divide(np.cumsum(power, axis=1), total, out=np.ones_like(power), where=total > 0)
    # Smallest r with fraction[r-1] >= energy; the tolerance absorbs float rounding at energy == 1.
    return np.minimum((fraction < energy - 1e-12).sum(axis=1) + 1, k)


def truncate_singular_values(images: np.ndarray, rank: int | None = None, energy: float | None = None) -> np.ndarray:
    """Rank-truncated reconstruction of uint8 images, (H, W) or (N, H, W), rounded and clipped back to uint8."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank or energy")
    single = images.ndim == 2
    batch = images[None] if single else images
    if batch.ndim != 3:
        raise ValueError(f"expected (H, W) or (N, H, W) images, got shape {images.shape}")
    # Many tiny matrices: BLAS threads only contend (measured ~90x slower at 2 threads than at 1 on 48x48).
    with threadpool_limits(limits=1):
        u, s, vt = np.linalg.svd(batch.astype(np.float64), full_matrices=False)  # batched over N
    keep = kept_ranks(s, rank, energy)
    s = np.where(np.arange(s.shape[1])[None, :] < keep[:, None], s, 0.0)
    recon = np.matmul(u * s[:, None, :], vt)
    out = np.clip(np.rint(recon), 0, 255).astype(np.uint8)
    return out[0] if single else out
