"""Classification scores: confusion matrix, accuracy, balanced accuracy, per-class recall, class priors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def class_log_prior(train_labels: np.ndarray, num_classes: int, kind: str = "train") -> np.ndarray:
    """log p(y): the training label frequencies ("train"; a class absent from training gets half a count, so
    its prior is small but not zero), or uniform ("uniform"). Never computed from test labels."""
    if kind == "uniform":
        return np.full(num_classes, -np.log(num_classes))
    if kind != "train":
        raise ValueError(f"class prior must be 'train' or 'uniform', got {kind!r}")
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if len(counts) > num_classes:
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    counts = np.where(counts > 0, counts, 0.5)
    return np.log(counts / counts.sum())
