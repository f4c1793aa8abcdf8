"""The numbers a flow is scored by over a whole set: bits/dim with fixed-seed noise, Bayes-rule classification.

Both are batched and run under ``torch.inference_mode``; the dequantisation noise of image i depends on
(seed, i // NOISE_CHUNK) only, so two models (or two evaluations, or two batch sizes) are scored on the same
noise. In a distributed run rank r scores every world-th chunk and the sums are all-reduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from flowmodels.classifier import bayes_log_posterior
from flowmodels.data import ImageSet
from flowmodels.model import FlowModel
from training.seeds import uniform

NOISE_CHUNK = 256  # evaluation noise is drawn per chunk of this many images: independent of the batch size


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def noisy_batches(
    images: ImageSet, batch_size: int, seed: int, device, use_labels: bool, rank: int = 0, world: int = 1
):
    """(first index, images, labels or None, dequantisation noise) per batch, on ``device``; the noise of image i
    depends on (seed, i // NOISE_CHUNK) only. Rank r of a distributed run gets every world-th chunk."""
    n = len(images)
    for chunk, start in enumerate(range(0, n, NOISE_CHUNK)):
        if chunk % world != rank:
            continue
        stop = min(start + NOISE_CHUNK, n)
        noise = uniform(seed, "eval-noise", chunk, (stop - start, *images.image_shape))
        for b in range(start, stop, batch_size):
            e = min(b + batch_size, stop)
            y = images.labels[b:e].to(device) if use_labels else None
            yield b, images.images[b:e].to(device), y, noise[b - start : e - start].to(device)


@torch.inference_mode()
def dataset_bits_per_dim(
    model: FlowModel,
    images: ImageSet,
    batch_size: int = 128,
    seed: int = 0,
    conventions: Sequence[str] = ("standard", "bplf"),
    device: torch.device | None = None,
    rank: int = 0,
    world: int = 1,
    marginal: bool = False,
) -> dict[str, float]:
    """Mean bits/dim over a set, per convention, with the noise of image i fixed by (seed, i // 256).

    A class-conditional model scores log p(x | true label) when the set has labels (the label-marginal when it
    has none, or with ``marginal=True``).
    """
    device = device or model_device(model)
    n = len(images)
    use_labels = model.conditional and images.labels is not None and not marginal
    sums = torch.zeros(len(conventions), dtype=torch.float64, device=device)
    for _, x, y, u in noisy_batches(images, batch_size, seed, device, use_labels, rank, world):
        for i, convention in enumerate(conventions):
            sums[i] += model.bits_per_dim(x, y, noise=u, convention=convention).double().sum()
    if world > 1:
        torch.distributed.all_reduce(sums)
    return {c: float(s) / max(n, 1) for c, s in zip(conventions, sums.tolist())}


@torch.inference_mode()
def per_image_bits_per_dim(
    model: FlowModel, images: ImageSet, batch_size: int = 128, seed: int = 0, progress=None
) -> np.ndarray:
    """Bits/dim of every image (standard convention, at ``model.n_bits``), with the same fixed-seed noise as
    ``dataset_bits_per_dim`` (so their mean is its "standard" figure); a conditional model scores
    log p(x | the image's label). ``progress(done, total)`` hears after each batch."""
    model.eval()
    out = np.empty(len(images), dtype=np.float64)
    use_labels = model.conditional and images.labels is not None
    for b, x, y, u in noisy_batches(images, batch_size, seed, model_device(model), use_labels):
        out[b : b + len(x)] = model.bits_per_dim(x, y, noise=u, convention="standard").double().cpu().numpy()
        if progress is not None:
            progress(b + len(x), len(images))
    return out


def test_bits_per_dim(model: FlowModel, images: ImageSet, batch_size: int = 128, seed: int = 0) -> tuple[float, float]:
    """(standard, bplf) mean test bits/dim at ``model.n_bits`` with fixed-seed dequantisation noise."""
    model.eval()
    result = dataset_bits_per_dim(model, images, batch_size, seed)
    return result["standard"], result["bplf"]


test_bits_per_dim.__test__ = False  # not a pytest test, though its name says so


@torch.inference_mode()
def classify(
    model: FlowModel, images: ImageSet, batch_size: int = 128, log_prior: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels (N,), posteriors (N, C)) by Bayes' rule with a class-conditional model (bin-centre
    dequantisation; class prior ``log_prior``, uniform when None)."""
    device = model_device(model)
    preds, posts = [], []
    for b in range(0, len(images), batch_size):
        log_post = bayes_log_posterior(model, images.images[b : b + batch_size].to(device), log_prior)
        posts.append(log_post.exp().cpu())
        preds.append(log_post.argmax(dim=1).cpu())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros((0, model.num_classes))
    return torch.cat(preds).numpy(), torch.cat(posts).double().numpy()
