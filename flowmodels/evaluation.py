"""Evaluation of a trained flow on a test split: numbers and pictures (PNG bytes), pure PyTorch + matplotlib.

- test bits/dim in both conventions (``flowmodels.bits``: standard and the BPLF paper's equation 4-1), with
  dequantisation noise fixed by a seed (so two models, or two evaluations, are scored on the same noise);
- a grid of samples per temperature: one row per emotion for a class-conditional model (the same latent noise
  in every grid, so the temperatures compare like for like), one square grid for an unconditional one;
- the likelihood classifier (Bayes' rule with the class-conditional flow, ``flowmodels.bayes_posterior``):
  confusion matrix, accuracy, balanced accuracy and per-class recall;
- a t-SNE of test latents coloured by emotion (paper 002, Fig. 2): every latent level concatenated, PCA to 50
  dimensions, then t-SNE; a conditional model encodes each image with its true label;
- an expression-transfer strip (paper 002, Fig. 4 and section IV-D): neutral test faces moved by
  z_avg^target - z_avg^other towards each other emotion (``flowmodels.transfer_expression``);
- the bits/dim curve of training (and validation) when the training history is given.

matplotlib is used through ``matplotlib.figure.Figure`` and the Agg canvas only: no pyplot, no global backend
state, safe inside a Dagster process.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from flowmodels.classifier import bayes_log_posterior
from flowmodels.data import ImageSet
from flowmodels.latent import ClassLatentMeans, transfer_expression
from flowmodels.model import FlowModel

NOISE_CHUNK = 256  # evaluation noise is drawn per chunk of this many images: independent of the batch size


@dataclass
class EvaluationReport:
    """``metrics``: test_bpd, test_bpd_bplf, n_bits, test_images, and for a class-conditional model
    test_bpd_marginal (-log of the label-marginal likelihood under a uniform prior), and with labels accuracy,
    balanced_accuracy and recall_<class> for every class present in the test set. ``confusion``: (C, C) counts,
    rows = true class, columns = predicted. ``figures``: name -> PNG bytes."""

    metrics: dict[str, float]
    confusion: np.ndarray | None
    figures: dict[str, bytes] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None


# --- numbers ---------------------------------------------------------------------------------------------------
def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Run a block with the global RNG seeded, restoring it afterwards (model.sample draws from it)."""
    from flowmodels.training import _rng_devices

    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        yield


def _noise_chunk(seed: int, chunk: int, shape: tuple[int, ...]) -> Tensor:
    from flowmodels.training import derive_seed

    return torch.rand(shape, generator=torch.Generator().manual_seed(derive_seed(seed, "eval-noise", chunk)))


@torch.no_grad()
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
    has none, or with ``marginal=True``). In a distributed run (``world`` > 1, torch.distributed initialised)
    rank r scores every world-th chunk and the sums are all-reduced: every rank returns the same mean.
    """
    device = device or _model_device(model)
    n = len(images)
    use_labels = model.conditional and images.labels is not None and not marginal
    sums = torch.zeros(len(conventions), dtype=torch.float64, device=device)
    for chunk, start in enumerate(range(0, n, NOISE_CHUNK)):
        if chunk % world != rank:
            continue
        stop = min(start + NOISE_CHUNK, n)
        noise = _noise_chunk(seed, chunk, (stop - start, *images.image_shape))
        for b in range(start, stop, batch_size):
            e = min(b + batch_size, stop)
            x = images.images[b:e].to(device)
            y = images.labels[b:e].to(device) if use_labels else None
            u = noise[b - start : e - start].to(device)
            for i, convention in enumerate(conventions):
                sums[i] += model.bits_per_dim(x, y, noise=u, convention=convention).double().sum()
    if world > 1:
        torch.distributed.all_reduce(sums)
    return {c: float(s) / max(n, 1) for c, s in zip(conventions, sums.tolist())}


def test_bits_per_dim(model: FlowModel, images: ImageSet, batch_size: int = 128, seed: int = 0) -> tuple[float, float]:
    """(standard, bplf) mean test bits/dim at ``model.n_bits``, with fixed-seed dequantisation noise (the same
    noise for both conventions, and for any batch size)."""
    model.eval()
    result = dataset_bits_per_dim(model, images, batch_size, seed)
    return result["standard"], result["bplf"]


test_bits_per_dim.__test__ = False  # not a pytest test, though its name says so


@torch.no_grad()
def classify(model: FlowModel, images: ImageSet, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels (N,), posteriors (N, C)) by Bayes' rule with a class-conditional model (bin-centre
    dequantisation, uniform class prior)."""
    device = _model_device(model)
    preds, posts = [], []
    for b in range(0, len(images), batch_size):
        log_post = bayes_log_posterior(model, images.images[b : b + batch_size].to(device))
        posts.append(log_post.exp().cpu())
        preds.append(log_post.argmax(dim=1).cpu())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros((0, model.num_classes))
    return torch.cat(preds).numpy(), torch.cat(posts).double().numpy()


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    flat = np.asarray(true, dtype=np.int64) * num_classes + np.asarray(pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """accuracy, balanced_accuracy (mean recall over the classes present) and recall_<class> for every class
    with at least one test image (a class absent from the test set has no recall: CK+48 has no neutral)."""
    support = confusion.sum(axis=1)
    total = int(support.sum())
    metrics = {"accuracy": float(np.trace(confusion)) / total if total else float("nan")}
    recalls = []
    for c, name in enumerate(class_names):
        if support[c]:
            recall = float(confusion[c, c]) / float(support[c])
            metrics[f"recall_{name}"] = recall
            recalls.append(recall)
    metrics["balanced_accuracy"] = float(np.mean(recalls)) if recalls else float("nan")
    return metrics


# --- pictures --------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
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


def _grid_png(
    canvas: np.ndarray,
    cell: tuple[int, int],
    pad: int,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> bytes:
    """PNG of a tiled canvas with optional row labels (left) and column labels (top)."""
    h, w = canvas.shape[:2]
    ch, cw = cell
    scale = max(1.0, 72 / max(ch, cw))  # small images (16x16 tests, 32x32 MNIST) drawn at a readable size
    height = h * scale / 100 + (1.3 if col_labels else 0.6)
    fig = _figure(w * scale / 100 + (1.2 if row_labels else 0.3), height)
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
    return _png(fig)


@torch.no_grad()
def sample_grid(
    model: FlowModel, temperature: float, samples_per_class: int = 8, class_names: Sequence[str] | None = None, seed: int = 0
) -> bytes:
    """PNG: one row of samples per class (conditional model) or a square grid (unconditional), at
    ``temperature``; the latent noise depends on (seed, row) only, so grids at other temperatures match."""
    from flowmodels.training import derive_seed

    device = _model_device(model)
    rows, labels = [], []
    if model.conditional:
        names = list(class_names or [str(c) for c in range(model.num_classes)])
        for c in range(model.num_classes):
            with _seeded(derive_seed(seed, "samples", c), device):
                rows.append(model.to_uint8(model.sample(samples_per_class, y=c, temperature=temperature)).cpu())
            labels.append(names[c] if c < len(names) else str(c))
    else:
        for r in range(samples_per_class):
            with _seeded(derive_seed(seed, "samples", r), device):
                rows.append(model.to_uint8(model.sample(samples_per_class, temperature=temperature)).cpu())
    images = torch.cat(rows).numpy()
    pad = 2
    canvas = tile(images, len(rows), samples_per_class, pad)
    variant = model.config.get("variant", "flow")
    return _grid_png(canvas, images.shape[2:], pad, f"{variant} samples, T = {temperature:g}", labels or None)


def confusion_png(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> bytes:
    """PNG: the confusion matrix, cells coloured by row-normalised rate and annotated with counts."""
    c = len(class_names)
    support = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, support, out=np.zeros(confusion.shape, dtype=float), where=support > 0)
    fig = _figure(1.2 + 0.75 * c, 1.0 + 0.7 * c)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(c))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c))
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall (row-normalised)")
    fig.tight_layout()
    return _png(fig)


@torch.no_grad()
def flat_latents(model: FlowModel, images: Tensor, labels: Tensor | None, batch_size: int = 128) -> np.ndarray:
    """Every latent level of each image, concatenated: (N, D). A conditional model encodes with ``labels``."""
    device = _model_device(model)
    out = []
    for b in range(0, images.shape[0], batch_size):
        y = labels[b : b + batch_size].to(device) if model.conditional else None
        zs = model.encode(images[b : b + batch_size].to(device), y)
        out.append(torch.cat([z.flatten(1) for z in zs], dim=1).float().cpu())
    return torch.cat(out).numpy()


def tsne_embedding(latents: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2): PCA to at most 50 dimensions, then t-SNE (perplexity min(30, (N-1)/3))."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = latents.shape[0]
    x = latents.astype(np.float64)
    x = x - x.mean(axis=0)
    components = min(50, n - 1, x.shape[1])
    if components < x.shape[1]:
        x = PCA(n_components=components, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def tsne_png(embedding: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] | None, title: str) -> bytes:
    from matplotlib import colormaps

    fig = _figure(6.4, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(embedding[:, 0], embedding[:, 1], s=6, alpha=0.7)
    else:
        cmap = colormaps["tab10"]
        for c in np.unique(labels):
            mask = labels == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(embedding[mask, 0], embedding[mask, 1], s=6, alpha=0.75, color=cmap(int(c) % 10), label=f"{name} ({mask.sum()})")
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


@torch.no_grad()
def class_latent_means(
    model: FlowModel, images: Tensor, labels: Tensor, num_classes: int, batch_size: int = 128
) -> ClassLatentMeans:
    """``flowmodels.class_mean_latents`` that tolerates classes without images (their means are zeros and must
    not be used as targets): a test split need not hold every emotion."""
    device = _model_device(model)
    labels = labels.long()
    sums: list[Tensor] | None = None
    for b in range(0, images.shape[0], batch_size):
        y = labels[b : b + batch_size].to(device)
        zs = model.encode(images[b : b + batch_size].to(device), y if model.conditional else None)
        one_hot = torch.nn.functional.one_hot(y, num_classes).to(zs[0].dtype)
        batch_sums = [torch.einsum("nc,n...->c...", one_hot, z) for z in zs]
        sums = batch_sums if sums is None else [s + t for s, t in zip(sums, batch_sums)]
    if sums is None:
        raise ValueError("no images")
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    total = [s.sum(dim=0) for s in sums]
    n = sum(counts)
    class_means, other_means = [], []
    for c in range(num_classes):
        class_means.append([s[c] / max(counts[c], 1) for s in sums])
        other_means.append([(t - s[c]) / max(n - counts[c], 1) for s, t in zip(sums, total)])
    return ClassLatentMeans(class_means, other_means, counts)


@torch.no_grad()
def transfer_strip(
    model: FlowModel,
    images: ImageSet,
    sources: int = 4,
    seed: int = 0,
    batch_size: int = 128,
    reference: ImageSet | None = None,
) -> tuple[bytes, dict[str, Any]] | None:
    """PNG: ``sources`` faces of the source expression (neutral when the set has neutral faces, else its most
    frequent class: CK+48 has no neutral) and, per column, the same faces moved towards each other expression
    present by z_avg^target - z_avg^other (means over ``reference``, default ``images``). None when there are
    no labels or fewer than two classes present."""
    from flowmodels.training import derive_seed

    reference = reference or images
    if images.labels is None or reference.labels is None or not len(images):
        return None
    names = list(images.class_names or [str(c) for c in range(int(images.labels.max()) + 1)])
    num_classes = model.num_classes or len(names)
    counts = torch.bincount(reference.labels, minlength=num_classes)
    present = [c for c in range(num_classes) if counts[c] > 0]
    if len(present) < 2:
        return None
    test_counts = torch.bincount(images.labels, minlength=num_classes)
    source = names.index("neutral") if "neutral" in names and test_counts[names.index("neutral")] > 0 else int(test_counts.argmax())
    candidates = torch.nonzero(images.labels == source).flatten()
    pick = candidates[torch.randperm(len(candidates), generator=torch.Generator().manual_seed(derive_seed(seed, "transfer")))[:sources]]
    means = class_latent_means(model, reference.images, reference.labels, num_classes, batch_size)
    device = _model_device(model)
    x = images.images[pick].to(device)
    source_labels = torch.full((len(pick),), source, dtype=torch.long, device=device)
    targets = [c for c in present if c != source]
    columns = [x.cpu()]
    for target in targets:
        moved = transfer_expression(model, x, target, means, source_labels=source_labels if model.conditional else None)
        columns.append(model.to_uint8(moved).cpu())
    stack = torch.stack(columns, dim=1)  # (sources, 1 + targets, C, H, W)
    rows, cols = stack.shape[0], stack.shape[1]
    pad = 2
    canvas = tile(stack.flatten(0, 1).numpy(), rows, cols, pad)
    col_labels = [f"{names[source]} (input)"] + [names[t] if t < len(names) else str(t) for t in targets]
    title = f"expression transfer from {names[source]}: z + (z_avg[target] - z_avg[other])"
    png = _grid_png(canvas, tuple(stack.shape[-2:]), pad, title, None, col_labels)
    return png, {"source": names[source], "targets": [names[t] for t in targets], "images": [int(i) for i in pick]}


def _history_points(history: Any) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train points, val points) from a TrainResult, its as_dict(), or a list of history entries (entries with
    "val_bpd" count as validation points)."""
    if history is None:
        return [], []
    if hasattr(history, "as_dict"):
        history = history.as_dict()
    val_entries: Iterable[Mapping] = []
    if isinstance(history, Mapping):
        val_entries = history.get("val_history") or []
        history = history.get("history") or []
    train_points, val_points = [], []
    for entry in history:
        if entry.get("bpd") is not None and math.isfinite(float(entry["bpd"])):
            train_points.append((int(entry["step"]), float(entry["bpd"])))
        if entry.get("val_bpd") is not None:
            val_points.append((int(entry["step"]), float(entry["val_bpd"])))
    for entry in val_entries:
        if entry.get("val_bpd") is not None:
            val_points.append((int(entry["step"]), float(entry["val_bpd"])))
    return train_points, sorted(set(val_points))


def bpd_curve_png(history: Any, test_bpd: float | None = None, n_bits: int = 8, title: str = "") -> bytes | None:
    train_points, val_points = _history_points(history)
    if not train_points and not val_points:
        return None
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    if train_points:
        ax.plot(*zip(*train_points), lw=1.2, label="train (window mean)")
    if val_points:
        ax.plot(*zip(*val_points), "o-", ms=3, lw=1.2, label="validation")
    if test_bpd is not None and math.isfinite(test_bpd):
        ax.axhline(test_bpd, color="gray", ls="--", lw=1, label=f"test {test_bpd:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"bits/dim ({n_bits}-bit)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


# --- all of it ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: FlowModel,
    test_set: ImageSet,
    *,
    temperatures: Sequence[float] = (0.5, 0.7, 1.0),
    samples_per_class: int = 8,
    history: Any = None,
    seed: int = 0,
    batch_size: int = 128,
    tsne_points: int = 1000,
    transfer_sources: int = 4,
    reference_set: ImageSet | None = None,
) -> EvaluationReport:
    """Score ``model`` on ``test_set`` and draw the pictures (see the module docstring).

    figures: "samples_t<T>" for every temperature (e.g. "samples_t0.7", "samples_t1.0"); with labels and a
    conditional model "confusion_matrix"; with labels "tsne" (up to ``tsne_points`` test images, at least 10)
    and "transfer" (class means over ``reference_set``, default the test set); "bpd_curve" when ``history``
    (a TrainResult, its as_dict(), or its "history" list) is given. The model is scored where it lives (move
    it to the GPU first to evaluate there).
    """
    if not isinstance(model, FlowModel):
        raise TypeError(f"evaluate() takes a FlowModel, got {type(model).__name__}")
    if test_set.image_shape != tuple(model.image_shape):
        raise ValueError(f"model expects images {tuple(model.image_shape)}, {test_set.name} has {test_set.image_shape}")
    if not len(test_set):
        raise ValueError(f"{test_set.name} is empty")
    model.eval()
    labelled = test_set.labels is not None
    if model.conditional and labelled and int(test_set.labels.max()) >= model.num_classes:
        raise ValueError(f"{test_set.name} has labels beyond the model's {model.num_classes} classes")
    names: tuple[str, ...] = tuple(test_set.class_names or ()) or tuple(str(c) for c in range(model.num_classes or 0))
    variant = model.config.get("variant", "flow")

    standard, bplf = test_bits_per_dim(model, test_set, batch_size, seed)
    metrics: dict[str, float] = {
        "test_bpd": standard,
        "test_bpd_bplf": bplf,
        "n_bits": float(model.n_bits),
        "test_images": float(len(test_set)),
    }
    if model.conditional and labelled:
        metrics["test_bpd_marginal"] = dataset_bits_per_dim(model, test_set, batch_size, seed, ("standard",), marginal=True)["standard"]

    figures: dict[str, bytes] = {}
    for t in temperatures:
        figures[f"samples_t{float(t)}"] = sample_grid(model, float(t), samples_per_class, names, seed)

    confusion = None
    predicted = None
    if model.conditional and labelled:
        predicted, _ = classify(model, test_set, batch_size)
        true = test_set.labels.numpy()
        confusion = confusion_matrix(true, predicted, model.num_classes)
        metrics.update(classification_metrics(confusion, names))
        figures["confusion_matrix"] = confusion_png(
            confusion, names, f"{variant}: Bayes classifier on {test_set.name}, accuracy {metrics['accuracy']:.3f}"
        )

    if tsne_points:
        n = min(tsne_points, len(test_set))
        if n >= 10:
            from flowmodels.training import derive_seed

            pick = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(derive_seed(seed, "tsne")))[:n]
            pick = pick.sort().values
            colour, how = None, ""
            if labelled:
                colour, how = test_set.labels[pick], ", coloured by emotion"
            elif model.conditional:  # a conditional model needs a label to encode: its own prediction
                colour = torch.from_numpy(classify(model, test_set.subset(pick), batch_size)[0])
                how = ", coloured by predicted class"
            latents = flat_latents(model, test_set.images[pick], colour, batch_size)
            embedding = tsne_embedding(latents, seed)
            figures["tsne"] = tsne_png(
                embedding, None if colour is None else colour.numpy(), names or None,
                f"{variant}: t-SNE of {n} test latents ({test_set.name}{how})",
            )
    if labelled:
        strip = transfer_strip(model, test_set, transfer_sources, seed, batch_size, reference_set)
        if strip is not None:
            figures["transfer"] = strip[0]

    curve = bpd_curve_png(history, standard, model.n_bits, f"{variant}: bits/dim during training")
    if curve is not None:
        figures["bpd_curve"] = curve
    return EvaluationReport(metrics, confusion, figures, names or None)
