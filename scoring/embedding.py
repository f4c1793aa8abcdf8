"""2-D embeddings of feature vectors for pictures: PCA to at most 50 dimensions, then t-SNE."""

from __future__ import annotations

import numpy as np


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2): PCA to at most 50 dimensions, then t-SNE (perplexity min(30, (N-1)/3))."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = features.shape[0]
    x = features.astype(np.float64)
    x = x - x.mean(axis=0)
    components = min(50, n - 1, x.shape[1])
    if components < x.shape[1]:
        x = PCA(n_components=components, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
