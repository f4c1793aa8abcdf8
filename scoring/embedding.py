"""2-D embeddings of feature vectors for pictures: PCA to at most 50 dimensions, then t-SNE."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TSNE_STEPS = 2  # the units ``tsne_embedding`` reports progress in: the PCA, then the t-SNE fit


def tsne_embedding(
    features: np.ndarray, seed: int = 0, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """(N, D) -> (N, 2): PCA to at most 50 dimensions, then t-SNE (Barnes-Hut, PCA initialisation,
    perplexity min(30, (N-1)/3)). ``progress(done, TSNE_STEPS)`` hears (0, 2) first, then after the PCA and
    after the fit (scikit-learn reports nothing from inside the fit)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    say = progress or (lambda done, total: None)
    say(0, TSNE_STEPS)
    n = features.shape[0]
    x = features.astype(np.float64)
    x = x - x.mean(axis=0)
    components = min(50, n - 1, x.shape[1])
    if components < x.shape[1]:
        x = PCA(n_components=components, random_state=seed).fit_transform(x)
    say(1, TSNE_STEPS)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    say(2, TSNE_STEPS)
    return embedding
