"""The structural similarity index (SSIM) of Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004), in numpy.

For images x and y, at every position of a window w (weights summing to 1; the paper's 11x11 Gaussian of standard
deviation 1.5 by default) the weighted means mu, variances sigma^2 (E_w[x^2] - mu_x^2: the population form of the
paper's reference code) and covariance sigma_xy give

    SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2)),

C1 = (K1 L)^2, C2 = (K2 L)^2 with K1 = 0.01, K2 = 0.03 and L the data range (255 for uint8); an image's SSIM is
the mean over the positions where the window lies wholly inside it (the reference code's "valid" filtering, also
what scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` averages after
cropping its padded borders). 1 for identical images, at most 1, negative for anti-correlated structure.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

K1, K2 = 0.01, 0.03


def gaussian_window(size: int = 11, sigma: float | None = 1.5) -> np.ndarray:
    """The 1-D weights (``size``,) summing to 1 whose outer product is the 2-D window: a sampled Gaussian of
    standard deviation ``sigma`` centred on the middle tap, or uniform weights when ``sigma`` is None."""
    if size < 1:
        raise ValueError(f"window size must be positive, got {size}")
    if sigma is None:
        return np.full(size, 1.0 / size)
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def _filter_valid(images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The separable window applied over the last two axes at every position it fits wholly: (..., H-k+1, W-k+1)."""
    rows = sliding_window_view(images, len(weights), axis=-1) @ weights
    return sliding_window_view(rows, len(weights), axis=-2) @ weights


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = 255.0,
    window_size: int = 11,
    sigma: float | None = 1.5,
) -> np.ndarray:
    """SSIM of each image pair: ``a`` and ``b`` of one shape (..., H, W) (gray images, e.g. (N, H, W) or
    (N, 1, H, W)) -> an array of shape (...) (a 0-d array for two single images). H and W must be at least
    ``window_size``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"SSIM compares images of one shape (..., H, W), got {a.shape} and {b.shape}")
    if min(a.shape[-2:]) < window_size:
        raise ValueError(f"images {a.shape[-2]}x{a.shape[-1]} are smaller than the {window_size}x{window_size} window")
    weights = gaussian_window(window_size, sigma)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, weights), _filter_valid(b, weights)
    var_a = _filter_valid(a * a, weights) - mu_a**2
    var_b = _filter_valid(b * b, weights) - mu_b**2
    cov = _filter_valid(a * b, weights) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(axis=(-2, -1))
