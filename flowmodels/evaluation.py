"""Evaluation of a trained flow on a test split: numbers (``flowmodels.scoring``) and pictures (PNG bytes).

- test bits/dim in both conventions (standard and the BPLF paper's equation 4-1) with seeded noise;
- a grid of samples per temperature: one row per emotion for a class-conditional model (the same latent noise
  in every grid, so the temperatures compare like for like), a square grid for an unconditional one;
- the likelihood classifier (Bayes' rule with the class-conditional flow and a class prior, by default the
  training label frequencies): confusion matrix, accuracy, balanced accuracy, per-class recall;
- a t-SNE of test latents coloured by emotion (paper 002, Fig. 2): every latent level concatenated;
- an expression-transfer strip (paper 002, Fig. 4, section IV-D): neutral test faces moved by
  z_avg^target - z_avg^other, the class means taken over the ``reference`` set (the training split);
- the bits/dim curve of training (and validation) when the training history is given.

``progress(stage, done, total)`` hears about each stage as it goes (the CLI's bars, Dagster's log lines).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from figures import confusion_png, curve_png, grid_png, scatter_png
from flowmodels.data import ImageSet
from flowmodels.latent import class_mean_latents, transfer_expression
from flowmodels.model import FlowModel
from flowmodels.scoring import classify, dataset_bits_per_dim, model_device, test_bits_per_dim
from scoring.classification import classification_metrics, confusion_matrix
from scoring.embedding import tsne_embedding
from training.seeds import derive_seed, generator, seeded

Progress = Callable[[str, int, int], None]


@dataclass
class EvaluationReport:
    """``metrics``: test_bpd, test_bpd_bplf, n_bits, test_images, and for a class-conditional model
    test_bpd_marginal, and with labels accuracy, balanced_accuracy and recall_<class> for every class present.
    ``confusion``: (C, C) counts, rows = true class, columns = predicted. ``figures``: name -> PNG bytes."""

    metrics: dict[str, float]
    confusion: np.ndarray | None
    figures: dict[str, bytes] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None


@torch.no_grad()
def sample_grid(
    model: FlowModel,
    temperature: float,
    samples_per_class: int = 8,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> bytes:
    """PNG: one row of samples per class (conditional model) or a square grid (unconditional), at
    ``temperature``; the latent noise depends on (seed, row) only, so grids at other temperatures match."""
    device = model_device(model)
    rows, labels = [], []
    if model.conditional:
        names = list(class_names or [str(c) for c in range(model.num_classes)])
        for c in range(model.num_classes):
            with seeded(derive_seed(seed, "samples", c), device):
                rows.append(model.to_uint8(model.sample(samples_per_class, y=c, temperature=temperature)).cpu())
            labels.append(names[c] if c < len(names) else str(c))
    else:
        for r in range(samples_per_class):
            with seeded(derive_seed(seed, "samples", r), device):
                rows.append(model.to_uint8(model.sample(samples_per_class, temperature=temperature)).cpu())
    images = torch.cat(rows).numpy()
    variant = model.config.get("variant", "flow")
    return grid_png(images, len(rows), samples_per_class, f"{variant} samples, T = {temperature:g}", labels or None)


@torch.no_grad()
def flat_latents(
    model: FlowModel, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 128
) -> np.ndarray:
    """Every latent level of each image, concatenated: (N, D). A conditional model encodes with ``labels``."""
    device = model_device(model)
    out = []
    for b in range(0, images.shape[0], batch_size):
        y = labels[b : b + batch_size].to(device) if model.conditional else None
        zs = model.encode(images[b : b + batch_size].to(device), y)
        out.append(torch.cat([z.flatten(1) for z in zs], dim=1).float().cpu())
    return torch.cat(out).numpy()


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
    by z_avg^target - z_avg^other (means over ``reference``, the training split; ``images`` when None).
    None when there are no labels or fewer than two classes."""
    reference = reference or images
    if images.labels is None or reference.labels is None or not len(images):
        return None
    names = list(images.class_names or [str(c) for c in range(int(images.labels.max()) + 1)])
    num_classes = model.num_classes or len(names)
    counts = torch.bincount(reference.labels, minlength=num_classes)
    present = [c for c in range(num_classes) if 0 < counts[c] < counts.sum()]
    if len(present) < 2:
        return None
    test_counts = torch.bincount(images.labels, minlength=num_classes)
    neutral = names.index("neutral") if "neutral" in names else None
    source = neutral if neutral is not None and test_counts[neutral] > 0 else int(test_counts.argmax())
    candidates = torch.nonzero(images.labels == source).flatten()
    pick = candidates[torch.randperm(len(candidates), generator=generator(seed, "transfer"))[:sources]]
    means = class_mean_latents(model, reference.images, reference.labels, num_classes, batch_size)
    device = model_device(model)
    x = images.images[pick].to(device)
    source_labels = torch.full((len(pick),), source, dtype=torch.long, device=device)
    targets = [c for c in present if c != source]
    columns = [x.cpu()]
    for target in targets:
        moved = transfer_expression(model, x, target, means, source_labels=source_labels if model.conditional else None)
        columns.append(model.to_uint8(moved).cpu())
    stack = torch.stack(columns, dim=1)  # (sources, 1 + targets, C, H, W)
    col_labels = [f"{names[source]} (input)"] + [names[t] if t < len(names) else str(t) for t in targets]
    title = f"expression transfer from {names[source]}: z + (z_avg[target] - z_avg[other]), means over {reference.name}"
    png = grid_png(stack.flatten(0, 1).numpy(), stack.shape[0], stack.shape[1], title, None, col_labels)
    return png, {"source": names[source], "targets": [names[t] for t in targets], "images": [int(i) for i in pick]}


def _history_points(history: Any) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train points, val points) from a TrainResult, its as_dict(), or a list of history entries."""
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
    hline = None if test_bpd is None else (f"test {test_bpd:.3f}", test_bpd)
    return curve_png(
        {"train (window mean)": train_points, "validation": val_points}, f"bits/dim ({n_bits}-bit)", title, hline
    )


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
    log_prior: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Score ``model`` on ``test_set`` and draw the pictures (see the module docstring).

    figures: "samples_t<T>" per temperature; with labels and a conditional model "confusion_matrix" (Bayes'
    rule with ``log_prior``, uniform when None); with labels "tsne" (up to ``tsne_points`` test images, at least
    10) and "transfer" (class means over ``reference_set``); "bpd_curve" when ``history`` is given.
    """
    if not isinstance(model, FlowModel):
        raise TypeError(f"evaluate() takes a FlowModel, got {type(model).__name__}")
    if test_set.image_shape != tuple(model.image_shape):
        raise ValueError(f"model expects images {tuple(model.image_shape)}, {test_set.name} has {test_set.image_shape}")
    if not len(test_set):
        raise ValueError(f"{test_set.name} is empty")
    model.eval()
    say = progress or (lambda stage, done, total: None)
    labelled = test_set.labels is not None
    if model.conditional and labelled and int(test_set.labels.max()) >= model.num_classes:
        raise ValueError(f"{test_set.name} has labels beyond the model's {model.num_classes} classes")
    names: tuple[str, ...] = tuple(test_set.class_names or ()) or tuple(str(c) for c in range(model.num_classes or 0))
    variant = model.config.get("variant", "flow")
    stages = (
        ["bits/dim", "samples"]
        + (["classification"] if model.conditional and labelled else [])
        + ["t-SNE", "transfer", "curve"]
    )
    step = iter(range(1, len(stages) + 1))

    standard, bplf = test_bits_per_dim(model, test_set, batch_size, seed)
    metrics: dict[str, float] = {
        "test_bpd": standard,
        "test_bpd_bplf": bplf,
        "n_bits": float(model.n_bits),
        "test_images": float(len(test_set)),
    }
    if model.conditional and labelled:
        metrics["test_bpd_marginal"] = dataset_bits_per_dim(
            model, test_set, batch_size, seed, ("standard",), marginal=True
        )["standard"]
    say("bits/dim", next(step), len(stages))

    figures: dict[str, bytes] = {}
    for t in temperatures:
        figures[f"samples_t{float(t)}"] = sample_grid(model, float(t), samples_per_class, names, seed)
    say("samples", next(step), len(stages))

    confusion = None
    if model.conditional and labelled:
        predicted, _ = classify(model, test_set, batch_size, log_prior)
        confusion = confusion_matrix(test_set.labels.numpy(), predicted, model.num_classes)
        metrics.update(classification_metrics(confusion, names))
        prior = "uniform prior" if log_prior is None else "training-frequency prior"
        figures["confusion_matrix"] = confusion_png(
            confusion,
            names,
            f"{variant}: Bayes classifier ({prior}) on {test_set.name}, accuracy {metrics['accuracy']:.3f}",
        )
        say("classification", next(step), len(stages))

    n = min(tsne_points, len(test_set))
    if n >= 10:
        pick = torch.randperm(len(test_set), generator=generator(seed, "tsne"))[:n].sort().values
        colour, how = None, ""
        if labelled:
            colour, how = test_set.labels[pick], ", coloured by emotion"
        elif model.conditional:  # a conditional model needs a label to encode: its own prediction
            colour = torch.from_numpy(classify(model, test_set.subset(pick), batch_size, log_prior)[0])
            how = ", coloured by predicted class"
        embedding = tsne_embedding(flat_latents(model, test_set.images[pick], colour, batch_size), seed)
        figures["tsne"] = scatter_png(
            embedding,
            None if colour is None else colour.numpy(),
            names or None,
            f"{variant}: t-SNE of {n} test latents ({test_set.name}{how})",
        )
    say("t-SNE", next(step), len(stages))
    if labelled:
        strip = transfer_strip(model, test_set, transfer_sources, seed, batch_size, reference_set)
        if strip is not None:
            figures["transfer"] = strip[0]
    say("transfer", next(step), len(stages))
    curve = bpd_curve_png(history, standard, model.n_bits, f"{variant}: bits/dim during training")
    if curve is not None:
        figures["bpd_curve"] = curve
    say("curve", next(step), len(stages))
    return EvaluationReport(metrics, confusion, figures, names or None)
