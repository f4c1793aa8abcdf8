"""The numbers a flow is scored by over a whole set: bits/dim with fixed-seed noise, Bayes-rule classification.

Both are batched and run under ``torch.inference_mode``; the dequantisation noise of image i depends on
(seed, i // NOISE_CHUNK) only, so two models (or two evaluations, or two batch sizes) are scored on the same
noise. In a distributed run rank r scores every world-th chunk and the sums are all-reduced.

Evaluation's fused passes (``density_scores``, ``classify_and_encode``) give the same numbers as the
one-figure-per-call functions, with less work:

- one log-density per image gives both bits/dim conventions (the standard and the BPLF dequantised inputs are
  the same floats: x_pm1 / 2 = (q + u) / 2^n - 0.5 exactly, scaling by 2 commutes with rounding);
- a class-conditional model's c per-class log-likelihoods come from one call of the flow on the N * c rows
  (image i under label j at row i * c + j), ``batch_size`` rows a call, and serve the conditional bits/dim
  (the true label's column), the label-marginal bits/dim (their logsumexp) and, at the bin centres, Bayes'
  rule and the latents of the t-SNE, all from that one pass.

``progress(done, total)`` hears (0, total) first, then after each call of the flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowmodels.bits import bits_per_dim, bits_per_dim_bplf
from flowmodels.data import ImageSet
from flowmodels.model import BPD_CONVENTIONS, FlowModel
from flowmodels.winograd import WinogradConv3x3
from training.seeds import uniform

NOISE_CHUNK = 256  # evaluation noise is drawn per chunk of this many images: independent of the batch size
# Winograd F(4x4, 3x3) pays off in training (three products share the tile transforms) and at wide layers; in
# inference at the default width it is slower than oneDNN's direct convolution (one 3x3 convolution, 2 cores,
# interleaved: 1.35-1.9x the time at 128 channels, 1.05-1.2x at 256, 0.8x at 512; ``bench/bench_evaluation.py
# --gains`` times whole passes), so inference passes use the direct one below that width.
WINOGRAD_INFERENCE_MIN_CHANNELS = 512

BatchProgress = Callable[[int, int], None]


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def inference_convolutions(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the model's Winograd 3x3 convolutions narrower than WINOGRAD_INFERENCE_MIN_CHANNELS
    run as direct convolutions (the same function; rounding-level differences, ~1e-6 relative); restored
    after."""
    changed = [
        m
        for m in model.modules()
        if isinstance(m, WinogradConv3x3) and m.enabled and m.in_channels < WINOGRAD_INFERENCE_MIN_CHANNELS
    ]
    for m in changed:
        m.enabled = False
    try:
        yield
    finally:
        for m in changed:
            m.enabled = True


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


def _batch_count(n: int, batch_size: int) -> int:
    """How many batches ``noisy_batches`` yields for n images (batches never straddle a noise chunk)."""
    full, rest = divmod(n, NOISE_CHUNK)
    return full * -(-NOISE_CHUNK // batch_size) + -(-rest // batch_size)


def _to_bits(model: FlowModel, log_px: Tensor, convention: str) -> Tensor:
    """Bits/dim from the log-density of the standard dequantised input (what ``model.bits_per_dim`` computes,
    the BPLF convention moved to [-1, 1] by the same float32 log-determinant D ln 1/2)."""
    if convention == "standard":
        return bits_per_dim(log_px, model.num_dims, model.n_bits)
    if convention == "bplf":
        to_model = log_px.new_full(log_px.shape, model.num_dims * math.log(0.5))
        return bits_per_dim_bplf(log_px + to_model, model.num_dims, model.n_bits)
    raise ValueError(f"convention must be one of {BPD_CONVENTIONS}, got {convention!r}")


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
    """Mean bits/dim over a set, per convention, with the noise of image i fixed by (seed, i // 256); one pass
    of the flow per batch whatever the number of conventions.

    A class-conditional model scores log p(x | true label) when the set has labels (the label-marginal when it
    has none, or with ``marginal=True``).
    """
    device = device or model_device(model)
    n = len(images)
    use_labels = model.conditional and images.labels is not None and not marginal
    sums = torch.zeros(len(conventions), dtype=torch.float64, device=device)
    for _, x, y, u in noisy_batches(images, batch_size, seed, device, use_labels, rank, world):
        log_px = model.log_prob(model.dequantize(x, u), y)
        for i, convention in enumerate(conventions):
            sums[i] += _to_bits(model, log_px, convention).double().sum()
    if world > 1:
        torch.distributed.all_reduce(sums)
    return {c: float(s) / max(n, 1) for c, s in zip(conventions, sums.tolist())}


def class_log_likelihoods(model: FlowModel, x: Tensor, keep: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """log p(x | y = c) for every class c, (N, C), from one call of the flow on N * C rows (the numbers of
    ``model.class_log_probs``, which makes one call per class); x continuous. With ``keep`` (bool (N,)) also
    the latents of the kept images under every class, per level (K, C, ...); else an empty list."""
    n, c = x.shape[0], model.num_classes
    labels = torch.arange(c, device=x.device).repeat(n)
    latents, log_px = model.flow(x.repeat_interleave(c, dim=0), model.condition(labels, n * c))
    kept = [] if keep is None else [z.view(n, c, *z.shape[1:])[keep] for z in latents]
    return log_px.view(n, c), kept


def _images_per_call(model: FlowModel, batch_size: int) -> int:
    return max(1, batch_size // model.num_classes) if model.conditional else batch_size


@torch.inference_mode()
def density_scores(
    model: FlowModel, images: ImageSet, batch_size: int = 128, seed: int = 0, progress: BatchProgress | None = None
) -> dict[str, float]:
    """Evaluation's bits/dim in one pass: {"standard", "bplf"} (the figures of ``dataset_bits_per_dim``) and,
    for a class-conditional model on a labelled set, "marginal" (its ``marginal=True`` figure: the label
    marginal under a uniform prior, log p(x) = logsumexp_y log p(x | y) - log C, same noise). A conditional
    model's c classes run as one batched call of ``batch_size`` rows."""
    device = model_device(model)
    labelled = images.labels is not None
    per_call = _images_per_call(model, batch_size)
    keys = ["standard", "bplf"] + (["marginal"] if model.conditional and labelled else [])
    sums = dict.fromkeys(keys, 0.0)
    total = _batch_count(len(images), per_call)
    if progress is not None:
        progress(0, total)
    for done, (_, x, y, u) in enumerate(noisy_batches(images, per_call, seed, device, labelled), start=1):
        x = model.dequantize(x, u)
        if model.conditional:
            log_lik, _ = class_log_likelihoods(model, x)
            log_marginal = log_lik.logsumexp(dim=1) - math.log(model.num_classes)
            log_px = log_marginal if y is None else log_lik.gather(1, y[:, None]).squeeze(1)
            if "marginal" in sums:
                sums["marginal"] += float(bits_per_dim(log_marginal, model.num_dims, model.n_bits).double().sum())
        else:
            log_px = model.log_prob(x)
        for convention in ("standard", "bplf"):
            sums[convention] += float(_to_bits(model, log_px, convention).double().sum())
        if progress is not None:
            progress(done, total)
    return {k: s / max(len(images), 1) for k, s in sums.items()}


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


@dataclass
class Classified:
    """Bayes' rule over a set: ``predicted`` (N,), ``posteriors`` (N, C); ``latents`` (K, D): every latent level
    of the ``keep`` images concatenated, under the label they were encoded with (``latent_labels``, (K,): the
    true label when the set has labels, else the prediction), in index order; None when nothing was kept."""

    predicted: np.ndarray
    posteriors: np.ndarray
    latents: np.ndarray | None = None
    latent_labels: np.ndarray | None = None


def _log_prior(model: FlowModel, log_prior: Tensor | None, like: Tensor) -> Tensor:
    if log_prior is None:  # what bayes_log_posterior takes when given none
        return torch.full((model.num_classes,), -math.log(model.num_classes), device=like.device)
    return log_prior.to(like)


@torch.inference_mode()
def classify_and_encode(
    model: FlowModel,
    images: ImageSet,
    batch_size: int = 128,
    log_prior: Tensor | None = None,
    keep: Tensor | None = None,
    progress: BatchProgress | None = None,
) -> Classified:
    """Bayes' rule with a class-conditional model (bin-centre dequantisation; prior ``log_prior``, uniform when
    None), the c classes as one batched call of ``batch_size`` rows; the same numbers as ``bayes_log_posterior``.
    ``keep``: indices of images whose latents to return as well (what ``model.encode`` gives at the bin centres
    under the true label, or under the predicted one for an unlabelled set), from the same pass."""
    if not model.conditional:
        raise ValueError("Bayes-rule classification needs a class-conditional model (num_classes set)")
    device = model_device(model)
    n, per_call = len(images), _images_per_call(model, batch_size)
    kept_mask = torch.zeros(n, dtype=torch.bool)
    if keep is not None:
        kept_mask[keep] = True
    preds, posts, latents, latent_labels = [], [], [], []
    total = -(-n // per_call)
    if progress is not None:
        progress(0, total)
    for done, b in enumerate(range(0, n, per_call), start=1):
        x = model._continuous(images.images[b : b + per_call].to(device))
        mask = kept_mask[b : b + per_call].to(device)
        log_lik, kept = class_log_likelihoods(model, x, mask if keep is not None else None)
        log_post = torch.log_softmax(log_lik + _log_prior(model, log_prior, log_lik), dim=1)
        predicted = log_post.argmax(dim=1)
        posts.append(log_post.exp().cpu())
        preds.append(predicted.cpu())
        if kept and bool(mask.any()):
            label = images.labels[b : b + per_call].to(device) if images.labels is not None else predicted
            label = label[mask]
            rows = torch.arange(len(label), device=device)
            latents.append(torch.cat([z[rows, label].flatten(1) for z in kept], dim=1).float().cpu())
            latent_labels.append(label.cpu())
        if progress is not None:
            progress(done, total)
    if not preds:
        return Classified(np.zeros(0, dtype=np.int64), np.zeros((0, model.num_classes)))
    result = Classified(torch.cat(preds).numpy(), torch.cat(posts).double().numpy())
    if latents:
        result.latents = torch.cat(latents).numpy()
        result.latent_labels = torch.cat(latent_labels).numpy()
    return result


@torch.inference_mode()
def classify(
    model: FlowModel, images: ImageSet, batch_size: int = 128, log_prior: Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels (N,), posteriors (N, C)) by Bayes' rule with a class-conditional model (bin-centre
    dequantisation; class prior ``log_prior``, uniform when None): ``bayes_log_posterior`` over the set."""
    result = classify_and_encode(model, images, batch_size, log_prior)
    return result.predicted, result.posteriors
