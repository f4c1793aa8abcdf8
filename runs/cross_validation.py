"""Subject-independent k-fold cross-validation on one source (paper 002's protocol: 10 folds, mean ± std).

The shards already assign every subject of a source to one fold (``data.folds``, ``pipelines.splits``), across
the train/val/test splits; a fold's test set is every image of its subjects, its training set every image of the
other folds' subjects, so no subject is ever on both sides. A family supplies ``fit(train_set, fold) -> model``
and ``predict(model, test_set) -> labels``; the folds' models are trained under their own content key in
``$EMOFLOW_HOME/cross_validation/`` (an interrupted evaluation resumes, a finished one is not redone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from flowmodels.data import ImageSet
from pipelines.shards import shard_files
from runs.datasets import DatasetRef
from scoring.classification import confusion_matrix


@dataclass
class FoldSet:
    """Every image of one source (all splits) with its subject and fold."""

    images: ImageSet
    subjects: list[str]
    folds: np.ndarray  # int (N,): the shards' fold column


def load_fold_set(data: DatasetRef, source: str, column: str = "pixels") -> FoldSet:
    """All rows of ``source`` in the shard set, in shard-file order, with their subjects and folds."""
    narrowed = DatasetRef(data.dataset, data.version, data.path, data.image_shape, (source,), None)
    parts = [narrowed.load(split, column) for split in ("train", "val", "test")]
    ids = [i for p in parts for i in (p.ids or [])]
    meta: dict[str, tuple[str, int | None]] = {}
    for f in shard_files(narrowed.path, ["train", "val", "test"], [source]):
        table = pq.read_table(f, columns=["id", "subject", "fold"]).to_pydict()
        meta.update(zip(table["id"], zip(table["subject"], table["fold"])))
    folds = [meta[i][1] for i in ids]
    if any(f is None for f in folds):
        raise ValueError(f"shard set {data.version} has no fold column for {source}: set data.folds (e.g. 10)")
    images = ImageSet(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        f"emotionset/{data.version}/{source}/all",
        parts[0].class_names,
        ids,
    )
    return FoldSet(images, [meta[i][0] for i in ids], np.asarray(folds, dtype=np.int64))


@dataclass
class CrossValidation:
    """Per-fold accuracies (folds with at least one image), their mean and std, the summed confusion."""

    source: str
    accuracies: list[float]
    fold_sizes: list[int]
    confusion: np.ndarray
    subjects_per_fold: list[list[str]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def metrics(self, prefix: str = "cv") -> dict[str, float]:
        return {
            f"{prefix}_accuracy_mean": self.mean,
            f"{prefix}_accuracy_std": self.std,
            f"{prefix}_folds": float(len(self.accuracies)),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "accuracies": self.accuracies,
            "fold_sizes": self.fold_sizes,
            "mean": self.mean,
            "std": self.std,
            "confusion": self.confusion.tolist(),
            "subjects_per_fold": self.subjects_per_fold,
        }


def cross_validate(
    fold_set: FoldSet,
    fit: Callable[[ImageSet, int], Any],
    predict: Callable[[Any, ImageSet], np.ndarray],
    num_classes: int,
    source: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> CrossValidation:
    """Train on all folds but k, test on fold k, for every fold that has images (see the module docstring)."""
    present = sorted(int(f) for f in np.unique(fold_set.folds))
    accuracies, sizes, groups = [], [], []
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for done, k in enumerate(present, start=1):
        test_index = np.flatnonzero(fold_set.folds == k)
        train_index = np.flatnonzero(fold_set.folds != k)
        test_subjects = sorted({fold_set.subjects[i] for i in test_index})
        if set(test_subjects) & {fold_set.subjects[i] for i in train_index}:  # the shards promise it; check it
            raise RuntimeError(f"fold {k}: subjects {test_subjects} also appear in the other folds")
        images = fold_set.images
        model = fit(images.subset(torch.from_numpy(train_index), f"{images.name}/not-fold-{k}"), k)
        test = images.subset(torch.from_numpy(test_index), f"{images.name}/fold-{k}")
        predicted = predict(model, test)
        fold_confusion = confusion_matrix(test.labels.numpy(), predicted, num_classes)
        confusion += fold_confusion
        accuracies.append(float(np.trace(fold_confusion)) / len(test))
        sizes.append(len(test))
        groups.append(test_subjects)
        if progress is not None:
            progress(f"{source} fold {k}", done, len(present))
    return CrossValidation(source, accuracies, sizes, confusion, groups)
