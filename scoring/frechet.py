"""The Frechet distance between two feature sets, each summarised as a Gaussian (FID's formula, Heusel et al. 2017):

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).

Tr((S_a S_b)^{1/2}) is computed from symmetric eigendecompositions: S_a S_b is similar to the symmetric PSD matrix
M = S_a^{1/2} S_b S_a^{1/2}, so the trace is the sum of the square roots of M's eigenvalues (clipped at 0). Unlike
``scipy.linalg.sqrtm`` of the non-symmetric product (pytorch-fid's route), this needs no eps * I when a covariance
is singular (fewer samples than dimensions: the usual case for 100 samples of a 256-dimensional feature) and has no
complex round-off to discard.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D), the covariance unbiased (N - 1) as in FID."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """d^2 between N(mu_a, sigma_a) and N(mu_b, sigma_b) (see the module docstring)."""
    mu_a, mu_b = np.asarray(mu_a, dtype=np.float64), np.asarray(mu_b, dtype=np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, dtype=np.float64), np.asarray(sigma_b, dtype=np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(
            f"mismatched statistics: means {mu_a.shape}, {mu_b.shape}; covariances {sigma_a.shape}, {sigma_b.shape}"
        )
    root_a = _psd_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    cross_trace = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff) + float(np.trace(sigma_a)) + float(np.trace(sigma_b)) - 2.0 * cross_trace
    return max(value, 0.0)  # round-off can take a distance of identical sets a hair below 0


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """d^2 between the Gaussians fitted to two feature sets (N_a, D) and (N_b, D)."""
    return frechet_distance_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))
