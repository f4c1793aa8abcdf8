"""Run functions of the emotion judge (``recognition``): a discriminative expression CNN trained on the train
split, early-stopped on validation accuracy, scored on the test split, promoted by test accuracy (higher is
better, same test split). The scoreboard's referee: its champion classifies every generator's samples (label
agreement) and its penultimate features play Inception's part in the Fréchet distance.

Evaluation: accuracy and balanced accuracy with test-time flip (``judge.test_time_flip``) and without it
(``accuracy_no_flip``: what the flip gives), per-class recall, the confusion matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from figures import confusion_png
from pipelines.labels import EMOTIONS
from pipelines.params import PROJECT_ROOT
from pipelines.versioning import tree_hash
from recognition.network import build_judge
from recognition.scoring import predict_probabilities
from recognition.training import JudgeTrainer, judge_from_checkpoint
from runs.context import RunContext
from runs.datasets import DatasetRef, require_emotionset
from runs.lifecycle import TrainingSpec, find_trained, record_evaluation, train_tracked
from runs.outcomes import EvalOutcome, TrainOutcome
from runs.registry import Score
from runs.tracking import image_signature
from scoring.classification import classification_metrics, confusion_matrix
from training.loop import LoopConfig

FAMILY = "judge"
VARIANT = "judge"
SCORE = Score("accuracy", lower_is_better=False)
COLUMN = "pixels"


def judge_code_version() -> str:
    return tree_hash([PROJECT_ROOT / "recognition", PROJECT_ROOT / "training"])


def judge_spec(ctx: RunContext, data: DatasetRef) -> dict[str, Any]:
    section = ctx.settings.judge
    return {
        "image_shape": list(data.image_shape),
        "num_classes": len(EMOTIONS),
        "widths": list(section.widths),
        "dropout": section.dropout,
    }


def _spec(ctx: RunContext, data: DatasetRef, max_steps: int | None) -> TrainingSpec:
    section = ctx.settings.judge
    config = section.train if max_steps is None else section.train.replace(max_steps=max_steps)
    spec = judge_spec(ctx, data)

    def build():
        model = build_judge(**spec, seed=config.seed)
        trainer = JudgeTrainer(model, data.load("train", COLUMN), data.load("val", COLUMN), config)
        return trainer, model, LoopConfig.from_settings(config)

    return TrainingSpec(
        family=FAMILY,
        variant=VARIANT,
        data=data,
        key_material={
            "spec": spec,
            "train": config.model_dump(),
            "data": data.identity(COLUMN),
            "code": judge_code_version(),
        },
        params={"model": spec, "train": config.model_dump(), "data": {"source": data.path, "column": COLUMN}},
        pixel_column=COLUMN,
        build=build,
        signature=image_signature(data.image_shape, "logits", (len(EMOTIONS),)),
        description=f"train {VARIANT}",
    )


def train_judge(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None, resume: bool = True
) -> TrainOutcome:
    require_emotionset(data, "the judge")
    return train_tracked(ctx, _spec(ctx, data, max_steps), resume=resume)


def trained_judge(ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None) -> TrainOutcome | None:
    require_emotionset(data, "the judge")
    return find_trained(ctx, _spec(ctx, data, max_steps))


def judge_accuracy(model, images, batch_size: int, test_time_flip: bool) -> float:
    probabilities = predict_probabilities(model, images, batch_size, test_time_flip)
    return float((probabilities.argmax(axis=1) == images.labels.numpy()).mean()) if len(images) else float("nan")


def evaluate_judge(ctx: RunContext, trained: TrainOutcome, data: DatasetRef) -> EvalOutcome:
    if data.version != trained.data.version:
        raise RuntimeError(
            f"the judge was trained on {trained.data.version}, the data is now {data.version}: train again"
        )
    section, batch = ctx.settings.judge, ctx.settings.evaluate.batch_size
    model = judge_from_checkpoint(trained.checkpoint)
    test_set = data.load("test", COLUMN)
    progress = ctx.stage_progress(f"evaluate {VARIANT}")
    try:
        probabilities = predict_probabilities(model, test_set, batch, section.test_time_flip)
        predicted = probabilities.argmax(axis=1)
        confusion = confusion_matrix(test_set.labels.numpy(), predicted, len(EMOTIONS))
        metrics = classification_metrics(confusion, EMOTIONS)
        progress("classification", 1, 2)
        plain = predict_probabilities(model, test_set, batch, False).argmax(axis=1)
        metrics["accuracy_no_flip"] = float((plain == test_set.labels.numpy()).mean())
        counts = np.bincount(test_set.labels.numpy(), minlength=len(EMOTIONS))
        metrics["majority_class_accuracy"] = float(counts.max() / counts.sum())
        metrics["test_images"] = float(len(test_set))
        progress("without test-time flip", 2, 2)
    finally:
        progress.close()
    flip = "with test-time flip" if section.test_time_flip else "no test-time flip"
    figures = {
        "confusion_matrix": confusion_png(
            confusion, EMOTIONS, f"emotion judge ({flip}) on {test_set.name}, accuracy {metrics['accuracy']:.3f}"
        )
    }
    return record_evaluation(
        ctx,
        trained,
        metrics,
        figures,
        SCORE,
        lambda champion: judge_accuracy(champion, test_set, batch, section.test_time_flip),
        {"classes": list(EMOTIONS), "confusion": confusion.tolist()},
    )


def scoreboard_scores(model, inputs) -> dict[str, Any]:
    """The judge's scoreboard column: its test accuracy (test-time flip as ``judge.test_time_flip``)."""
    flip = inputs.ctx.settings.judge.test_time_flip
    return {"accuracy": judge_accuracy(model, inputs.test_raw, inputs.settings.batch_size, flip)}
