"""Evaluation of a trained flow on a test split: numbers (``flowmodels.scoring``) and pictures (PNG bytes).

- test bits/dim in both conventions (standard and the BPLF paper's equation 4-1) with seeded noise, and for a
  class-conditional model the label-marginal bits/dim, all from one pass (``scoring.density_scores``);
- a grid of samples per temperature: one row per emotion for a class-conditional model (the same latent noise
  in every grid, so the temperatures compare like for like), a square grid for an unconditional one;
- the likelihood classifier (Bayes' rule with the class-conditional flow and a class prior, by default the
  training label frequencies): confusion matrix, accuracy, balanced accuracy, per-class recall;
- a t-SNE of test latents coloured by emotion (paper 002, Fig. 2): every latent level concatenated, the latents
  taken from the classification pass (the same bin-centre inputs and labels ``encode`` would use);
- an expression-transfer strip (paper 002, Fig. 4, section IV-D): neutral test faces moved by
  z_avg^target - z_avg^other, the class means taken over the ``reference`` set (the training split), from at
  most ``transfer_reference_per_class`` images of each class;
- the bits/dim curve of training (and validation) when the training history is given.

Progress: ``progress(stage, done, total)`` hears every stage (``STAGES``, in order; "classification" only for
a conditional model on a labelled set) as it goes, in that stage's own units (batches, sample rows, t-SNE
steps): (stage, 0, total) when it starts, then after each unit, ending at (stage, total, total). A skipped
stage reports (0, 1) and (1, 1). The CLI shows it as a tqdm bar, Dagster as log lines
(``runs.context.StageProgress``).
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
from flowmodels.latent import ClassLatentMeans, transfer_expression
from flowmodels.model import FlowModel
from flowmodels.scoring import (  # noqa: F401  (classify, dataset_bits_per_dim, test_bits_per_dim: re-exported)
    classify,
    classify_and_encode,
    dataset_bits_per_dim,
    density_scores,
    inference_convolutions,
    model_device,
    test_bits_per_dim,
)
from scoring.classification import classification_metrics, confusion_matrix
from scoring.embedding import TSNE_STEPS, tsne_embedding
from training.seeds import derive_seed, generator, seeded

Progress = Callable[[str, int, int], None]
BatchProgress = Callable[[int, int], None]
STAGES = ("bits/dim", "samples", "classification", "t-SNE", "transfer", "curve")


@dataclass
class EvaluationReport:
    """``metrics``: test_bpd, test_bpd_bplf, n_bits, test_images, and for a class-conditional model
    test_bpd_marginal, and with labels accuracy, balanced_accuracy and recall_<class> for every class present.
    ``confusion``: (C, C) counts, rows = true class, columns = predicted. ``figures``: name -> PNG bytes.
    ``predicted``: the Bayes classifier's label of every test image (a conditional model on a labelled set)."""

    metrics: dict[str, float]
    confusion: np.ndarray | None
    figures: dict[str, bytes] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    predicted: np.ndarray | None = None


def _offset(progress: BatchProgress, before: int, total: int) -> BatchProgress:
    """A sub-task's (done, its total) as (before + done, total) of the whole stage."""
    return lambda done, _: progress(before + done, total)


@torch.inference_mode()
def sample_grid(
    model: FlowModel,
    temperature: float,
    samples_per_class: int = 8,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    progress: BatchProgress | None = None,
) -> bytes:
    """PNG: one row of samples per class (conditional model) or a square grid (unconditional), at
    ``temperature``; the latent noise depends on (seed, row) only, so grids at other temperatures match.
    ``progress(rows done, rows)`` hears after each row."""
    device = model_device(model)
    say = progress or (lambda done, total: None)
    rows, labels = [], []
    if model.conditional:
        names = list(class_names or [str(c) for c in range(model.num_classes)])
        for c in range(model.num_classes):
            with seeded(derive_seed(seed, "samples", c), device):
                rows.append(model.to_uint8(model.sample(samples_per_class, y=c, temperature=temperature)).cpu())
            labels.append(names[c] if c < len(names) else str(c))
            say(c + 1, model.num_classes)
    else:
        for r in range(samples_per_class):
            with seeded(derive_seed(seed, "samples", r), device):
                rows.append(model.to_uint8(model.sample(samples_per_class, temperature=temperature)).cpu())
            say(r + 1, samples_per_class)
    images = torch.cat(rows).numpy()
    variant = model.config.get("variant", "flow")
    return grid_png(images, len(rows), samples_per_class, f"{variant} samples, T = {temperature:g}", labels or None)


@torch.inference_mode()
def flat_latents(
    model: FlowModel,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int = 128,
    progress: BatchProgress | None = None,
) -> np.ndarray:
    """Every latent level of each image, concatenated: (N, D). A conditional model encodes with ``labels``.
    ``progress(batches done, batches)`` hears after each batch."""
    device = model_device(model)
    out = []
    total = -(-images.shape[0] // batch_size)
    for k, b in enumerate(range(0, images.shape[0], batch_size), start=1):
        y = labels[b : b + batch_size].to(device) if model.conditional else None
        zs = model.encode(images[b : b + batch_size].to(device), y)
        out.append(torch.cat([z.flatten(1) for z in zs], dim=1).float().cpu())
        if progress is not None:
            progress(k, total)
    return torch.cat(out).numpy()


def reference_pick(labels: torch.Tensor, num_classes: int, per_class: int | None, seed: int = 0) -> torch.Tensor:
    """Indices (sorted) of at most ``per_class`` images of each class, a fixed-seed draw; every index when
    ``per_class`` is None or 0."""
    if not per_class:
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=generator(seed, "transfer-reference"))
    ordered = labels[order]
    return torch.cat([order[ordered == c][:per_class] for c in range(num_classes)]).sort().values


@torch.inference_mode()
def reference_latent_means(
    model: FlowModel,
    reference: ImageSet,
    num_classes: int,
    per_class: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    progress: BatchProgress | None = None,
) -> ClassLatentMeans:
    """``flowmodels.latent.class_mean_latents`` over at most ``per_class`` images of each class of
    ``reference`` (all when None): each class mean from its drawn images; each complement mean z_avg^other
    weighted by the classes' full counts in ``reference``, as over the whole set (with every image drawn the
    two coincide). ``counts`` are the full counts. ``progress(batches done, batches)`` after each batch."""
    labels = reference.labels.long()
    pick = reference_pick(labels, num_classes, per_class, seed)
    device = model_device(model)
    sums: list[torch.Tensor] | None = None
    total = -(-len(pick) // batch_size)
    for k, b in enumerate(range(0, len(pick), batch_size), start=1):
        index = pick[b : b + batch_size]
        x, y = reference.images[index].to(device), labels[index].to(device)
        latents = model.encode(x, y if model.conditional else None)
        one_hot = torch.nn.functional.one_hot(y, num_classes).to(latents[0].dtype)
        batch_sums = [torch.einsum("nc,n...->c...", one_hot, z) for z in latents]
        sums = batch_sums if sums is None else [s + t for s, t in zip(sums, batch_sums)]
        if progress is not None:
            progress(k, total)
    if sums is None:
        raise ValueError(f"{reference.name}: no images")
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    drawn = torch.bincount(labels[pick], minlength=num_classes).tolist()
    weight = [counts[c] / drawn[c] if drawn[c] else 0.0 for c in range(num_classes)]  # 1.0 when all are drawn
    class_means, other_means = [], []
    for c in range(num_classes):
        class_means.append([s[c] / max(drawn[c], 1) for s in sums])
        others = [o for o in range(num_classes) if o != c]
        n_other = max(sum(counts[o] for o in others), 1)
        other_means.append([sum(s[o] * weight[o] for o in others) / n_other for s in sums])
    return ClassLatentMeans(class_means, other_means, counts)


@torch.inference_mode()
def transfer_strip(
    model: FlowModel,
    images: ImageSet,
    sources: int = 4,
    seed: int = 0,
    batch_size: int = 128,
    reference: ImageSet | None = None,
    reference_per_class: int | None = None,
    progress: BatchProgress | None = None,
) -> tuple[bytes, dict[str, Any]] | None:
    """PNG: ``sources`` faces of the source expression (neutral when the set has neutral faces, else its most
    frequent class: CK+48 has no neutral) and, per column, the same faces moved towards each other expression
    by z_avg^target - z_avg^other (means over ``reference``, the training split, ``images`` when None; at most
    ``reference_per_class`` images of each class, see ``reference_latent_means``). None when there are no
    labels or fewer than two classes. ``progress(done, total)``: the reference batches, then one per target."""
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
    targets = [c for c in present if c != source]
    drawn = len(reference_pick(reference.labels, num_classes, reference_per_class, seed))
    batches = -(-drawn // batch_size)
    say = progress or (lambda done, total: None)
    total = batches + len(targets)
    say(0, total)
    means = reference_latent_means(
        model, reference, num_classes, reference_per_class, seed, batch_size, _offset(say, 0, total)
    )
    device = model_device(model)
    x = images.images[pick].to(device)
    source_labels = torch.full((len(pick),), source, dtype=torch.long, device=device)
    columns = [x.cpu()]
    for k, target in enumerate(targets, start=1):
        moved = transfer_expression(model, x, target, means, source_labels=source_labels if model.conditional else None)
        columns.append(model.to_uint8(moved).cpu())
        say(batches + k, total)
    stack = torch.stack(columns, dim=1)  # (sources, 1 + targets, C, H, W)
    col_labels = [f"{names[source]} (input)"] + [names[t] if t < len(names) else str(t) for t in targets]
    how = "" if drawn == len(reference) else f" ({drawn} of {len(reference)} images)"
    title = (
        f"expression transfer from {names[source]}: z + (z_avg[target] - z_avg[other]), means over "
        f"{reference.name}{how}"
    )
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


def _tsne_figure(
    model: FlowModel,
    test_set: ImageSet,
    pick: torch.Tensor,
    latents: np.ndarray | None,
    names: tuple[str, ...],
    seed: int,
    batch_size: int,
    log_prior: torch.Tensor | None,
    progress: BatchProgress,
) -> bytes:
    """The t-SNE scatter of the ``pick`` test images' latents: ``latents`` when the classification pass kept
    them (coloured by the true labels), else encoded here (then the stage's units are the encoding batches
    and the t-SNE steps)."""
    labelled = test_set.labels is not None
    n = len(pick)
    colour = test_set.labels[pick] if labelled else None
    fit_progress = progress
    if latents is None:
        picked = test_set.subset(pick)
        by_prediction = model.conditional and not labelled  # a conditional model needs a label to encode
        per_call = max(1, batch_size // model.num_classes) if by_prediction else batch_size
        before = -(-n // per_call)
        total = before + TSNE_STEPS
        progress(0, total)
        if by_prediction:  # its own prediction
            found = classify_and_encode(
                model, picked, batch_size, log_prior, torch.arange(n), _offset(progress, 0, total)
            )
            latents, colour = found.latents, torch.from_numpy(found.latent_labels)
        else:
            latents = flat_latents(model, picked.images, colour, batch_size, _offset(progress, 0, total))
        fit_progress = _offset(progress, before, total)
    how = "" if colour is None else (", coloured by emotion" if labelled else ", coloured by predicted class")
    embedding = tsne_embedding(latents, seed, fit_progress)
    return scatter_png(
        embedding,
        None if colour is None else colour.numpy(),
        names or None,
        f"{model.config.get('variant', 'flow')}: t-SNE of {n} test latents ({test_set.name}{how})",
    )


@torch.inference_mode()
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
    transfer_reference_per_class: int | None = None,
    log_prior: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Score ``model`` on ``test_set`` and draw the pictures (see the module docstring).

    figures: "samples_t<T>" per temperature; with labels and a conditional model "confusion_matrix" (Bayes'
    rule with ``log_prior``, uniform when None); with labels "tsne" (up to ``tsne_points`` test images, at least
    10) and "transfer" (class means over ``reference_set``, at most ``transfer_reference_per_class`` images of
    each class, all when 0 or None); "bpd_curve" when ``history`` is given. ``batch_size``: rows per call of the flow
    (a conditional model's classes share a call). The narrow Winograd convolutions run direct meanwhile
    (``scoring.inference_convolutions``).
    """
    if not isinstance(model, FlowModel):
        raise TypeError(f"evaluate() takes a FlowModel, got {type(model).__name__}")
    if test_set.image_shape != tuple(model.image_shape):
        raise ValueError(f"model expects images {tuple(model.image_shape)}, {test_set.name} has {test_set.image_shape}")
    if not len(test_set):
        raise ValueError(f"{test_set.name} is empty")
    labelled = test_set.labels is not None
    if model.conditional and labelled and int(test_set.labels.max()) >= model.num_classes:
        raise ValueError(f"{test_set.name} has labels beyond the model's {model.num_classes} classes")
    model.eval()
    say = progress or (lambda stage, done, total: None)

    def stage(name: str) -> BatchProgress:
        return lambda done, total: say(name, done, total)

    def skipped(name: str) -> None:
        say(name, 0, 1)
        say(name, 1, 1)

    names: tuple[str, ...] = tuple(test_set.class_names or ()) or tuple(str(c) for c in range(model.num_classes or 0))
    variant = model.config.get("variant", "flow")
    figures: dict[str, bytes] = {}
    confusion, predicted, tsne_latents = None, None, None
    with inference_convolutions(model):
        scores = density_scores(model, test_set, batch_size, seed, stage("bits/dim"))
        metrics: dict[str, float] = {
            "test_bpd": scores["standard"],
            "test_bpd_bplf": scores["bplf"],
            "n_bits": float(model.n_bits),
            "test_images": float(len(test_set)),
        }
        if "marginal" in scores:
            metrics["test_bpd_marginal"] = scores["marginal"]

        rows = model.num_classes if model.conditional else samples_per_class
        all_rows = len(temperatures) * rows
        if temperatures:
            say("samples", 0, all_rows)
        else:
            skipped("samples")
        for i, t in enumerate(temperatures):
            grid_progress = _offset(stage("samples"), i * rows, all_rows)
            figures[f"samples_t{float(t)}"] = sample_grid(
                model, float(t), samples_per_class, names, seed, grid_progress
            )

        n = min(tsne_points, len(test_set))
        pick = torch.randperm(len(test_set), generator=generator(seed, "tsne"))[:n].sort().values if n >= 10 else None
        if model.conditional and labelled:
            classified = classify_and_encode(model, test_set, batch_size, log_prior, pick, stage("classification"))
            predicted, tsne_latents = classified.predicted, classified.latents
            confusion = confusion_matrix(test_set.labels.numpy(), predicted, model.num_classes)
            metrics.update(classification_metrics(confusion, names))
            prior = "uniform prior" if log_prior is None else "training-frequency prior"
            figures["confusion_matrix"] = confusion_png(
                confusion,
                names,
                f"{variant}: Bayes classifier ({prior}) on {test_set.name}, accuracy {metrics['accuracy']:.3f}",
            )

        if pick is None:
            skipped("t-SNE")
        else:
            figures["tsne"] = _tsne_figure(
                model, test_set, pick, tsne_latents, names, seed, batch_size, log_prior, stage("t-SNE")
            )

        strip = None
        if labelled:
            strip = transfer_strip(
                model,
                test_set,
                transfer_sources,
                seed,
                batch_size,
                reference_set,
                transfer_reference_per_class,
                stage("transfer"),
            )
        if strip is None:
            skipped("transfer")
        else:
            figures["transfer"] = strip[0]

    say("curve", 0, 1)
    curve = bpd_curve_png(history, metrics["test_bpd"], model.n_bits, f"{variant}: bits/dim during training")
    if curve is not None:
        figures["bpd_curve"] = curve
    say("curve", 1, 1)
    return EvaluationReport(metrics, confusion, figures, names or None, predicted)
