"""The NFGAN paper's Table 4 protocol: expression recognition trained with and without the normalized faces added.

For each source of ``nfgan.evaluate.table4_sources`` that has pairs in the shard set (CK+ in its original layout,
MMI; the paper: 8 folds of CK+, 10 of MMI), subject-independent cross-validation over the shards' fold column
(``runs.cross_validation``): fold k's people are the test set, the other folds' people the training set. Two emotion
judges (``recognition``, params ``judge`` with ``table4_max_steps`` steps) are trained per fold from the same initial
weights and seed: one on the training faces, one on the training faces plus the normalizer's output for each of
their expressive faces, labelled **neutral** (the paper "supplements the normalized face image to the dataset in the
training phase": a neutral face of the same person for every expressive one). Both are tested on fold k's faces as
they are. Reported per source: both accuracies (mean and std over folds), the per-fold difference (with - without)
and its mean and std: the spread says whether the change is beyond fold-to-fold noise.

What is not the paper's: the judge stands in for its 2B[N+M]Softmax network; the normalizer was trained on the
shard set's training split, which may include some of a fold's test people (it never sees their labels, and only the
training folds' faces are ever normalized); faces are the shards' size, the normalizer's outputs resized to it.
Each fold's judges are trained under a content key in ``$EMOFLOW_HOME/nfgan_table4/`` (resumed, never redone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from figures import distributions_png
from flowmodels.data import ImageSet
from pipelines.labels import EMOTIONS
from pipelines.pairs import NEUTRAL, NeutralPairs
from recognition.network import build_judge
from recognition.scoring import predict_probabilities
from recognition.training import JudgeTrainer
from runs.context import RunContext
from runs.cross_validation import CrossValidation, cross_validate, load_fold_set
from runs.datasets import DatasetRef, key_of
from runs.nfgan_data import COLUMN, normalize_faces, resize_faces
from training.loop import LoopConfig, run_training

ARMS = ("without", "with")


@dataclass
class SourceComparison:
    """One source's folds: the judge without and with the normalized faces, and how many faces each fold added."""

    source: str
    without: CrossValidation
    with_normalized: CrossValidation
    added: list[int]

    @property
    def differences(self) -> np.ndarray:
        return np.asarray(self.with_normalized.accuracies) - np.asarray(self.without.accuracies)

    def metrics(self) -> dict[str, float]:
        prefix = f"table4_{self.source}"
        return {
            f"{prefix}_accuracy_without": self.without.mean,
            f"{prefix}_accuracy_without_std": self.without.std,
            f"{prefix}_accuracy_with": self.with_normalized.mean,
            f"{prefix}_accuracy_with_std": self.with_normalized.std,
            f"{prefix}_difference_mean": float(self.differences.mean()),
            f"{prefix}_difference_std": float(self.differences.std()),
            f"{prefix}_folds": float(len(self.added)),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "without": self.without.as_dict(),
            "with_normalized": self.with_normalized.as_dict(),
            "differences": self.differences.tolist(),
            "normalized_faces_added": self.added,
        }


@dataclass
class Table4:
    results: list[SourceComparison]
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {k: v for r in self.results for k, v in r.metrics().items()}

    def as_dict(self) -> dict[str, Any]:
        return {"results": [r.as_dict() for r in self.results], "notes": self.notes}

    def figure(self) -> bytes:
        panels = [
            (
                f"{r.source}: {len(r.added)} subject-independent folds, mean difference "
                f"{r.differences.mean():+.3f} ± {r.differences.std():.3f}",
                {
                    "without normalized faces": np.asarray(r.without.accuracies),
                    "with normalized faces": np.asarray(r.with_normalized.accuracies),
                    "with - without": r.differences,
                },
            )
            for r in self.results
        ]
        return distributions_png(
            panels, "accuracy on the fold's people (the difference in accuracy points)", "Table 4 protocol"
        )


def _judge_fit(ctx: RunContext, data: DatasetRef, source: str, arm: str, augment: Callable[[ImageSet], ImageSet]):
    """``fit(train_set, fold)`` for ``cross_validate``: an emotion judge on ``augment(train_set)`` (batch size capped
    at the training set's size: a fold of a small source may hold fewer faces than one batch)."""
    judge = ctx.settings.judge
    steps = ctx.settings.nfgan.evaluate.table4_max_steps
    base = judge.train.replace(max_steps=steps, val_every=0, checkpoint_every=0)

    def fit(train_set: ImageSet, fold: int):
        train_set = augment(train_set)
        config = base.replace(batch_size=min(base.batch_size, len(train_set)))
        spec = {
            "image_shape": list(train_set.image_shape),
            "num_classes": len(EMOTIONS),
            "widths": list(judge.widths),
            "dropout": judge.dropout,
        }
        key = key_of({"spec": spec, "train": config.model_dump(), "data": train_set.fingerprint(), "fold": fold})
        folder = ctx.home / "nfgan_table4" / data.version / source / f"{arm}-fold-{fold}-{key}"
        trainer = JudgeTrainer(build_judge(**spec, seed=config.seed), train_set, None, config)
        run_training(
            trainer, LoopConfig.from_settings(config), folder, description=f"Table 4 {source} {arm} fold {fold}"
        )
        return trainer.final_model()

    return fit


def _with_normalized(fold_images: ImageSet, model, batch_size: int) -> Callable[[ImageSet], ImageSet]:
    """``augment(train_set)``: the training faces plus the normalized face of each expressive one, labelled neutral
    (normalized once for the whole source, at the normalizer's size, resized back to the shards')."""
    expressive = torch.nonzero(fold_images.labels != NEUTRAL).flatten()
    normalized = normalize_faces(model, fold_images.images[expressive], batch_size)
    normalized = resize_faces(normalized, fold_images.images.shape[-2:])
    by_id = {fold_images.ids[int(i)]: k for k, i in enumerate(expressive)}

    def augment(train_set: ImageSet) -> ImageSet:
        picked = [i for i in train_set.ids if i in by_id]
        faces = normalized[[by_id[i] for i in picked]]
        return ImageSet(
            torch.cat([train_set.images, faces]),
            torch.cat([train_set.labels, torch.full((len(picked),), NEUTRAL, dtype=torch.int64)]),
            f"{train_set.name}+nfgan",
            train_set.class_names,
            [*train_set.ids, *(f"{i}#nfgan" for i in picked)],
        )

    return augment


def table4(ctx: RunContext, data: DatasetRef, model, pairs: NeutralPairs) -> Table4:
    """The protocol on every eligible source (module docstring); why any listed source was left out, in ``notes``."""
    evaluate, batch = ctx.settings.nfgan.evaluate, ctx.settings.evaluate.batch_size
    flip = ctx.settings.judge.test_time_flip
    counts = pairs.counts()
    results, notes = [], []
    progress = ctx.stage_progress("NFGAN Table 4")
    try:
        for source in evaluate.table4_sources:
            if source not in counts:
                notes.append(f"{source}: not in the shard set")
                continue
            if not sum(counts[source].values()):
                notes.append(f"{source}: no neutral pairs (CK+48 crops have none: Table 4 needs CK+'s original layout)")
                continue
            try:
                fold_set = load_fold_set(data, source, COLUMN)
            except ValueError as error:
                notes.append(f"{source}: {error}")
                continue
            if len(np.unique(fold_set.folds)) < 2:
                notes.append(f"{source}: its people fill fewer than two folds")
                continue

            def predict(judge, test_set: ImageSet) -> np.ndarray:
                return predict_probabilities(judge, test_set, batch, flip).argmax(axis=1)

            augment = _with_normalized(fold_set.images, model, batch)
            arms = {}
            for arm, extra in zip(ARMS, (lambda s: s, augment)):
                arms[arm] = cross_validate(
                    fold_set,
                    _judge_fit(ctx, data, source, arm, extra),
                    predict,
                    len(EMOTIONS),
                    source,
                    progress=lambda stage, done, total, arm=arm: progress(f"{stage} ({arm})", done, total),
                )
            added = []
            for k in sorted(int(f) for f in np.unique(fold_set.folds)):
                train_labels = fold_set.images.labels[torch.from_numpy(fold_set.folds != k)]
                added.append(int((train_labels != NEUTRAL).sum()))
            results.append(SourceComparison(source, arms["without"], arms["with"], added))
    finally:
        progress.close()
    return Table4(results, notes)
