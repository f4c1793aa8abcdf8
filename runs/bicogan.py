"""Run functions of BiCoGAN (``adversarial.bicogan``): train, evaluate, promote.

Promotion is by the scoreboard's Fréchet judge distance (lower is better): the distance between the champion
emotion judge's penultimate features of ``scoreboard.samples_per_class`` samples per emotion and of the real test
faces of those emotions. It needs a champion judge (``emoflow run --variant judge``; the Dagster asset
``evaluate_bicogan`` depends on ``evaluate_judge``), and the judge's version is part of the test-split key the
comparison is made on, so a new judge makes the champion be scored again under it.

The model's class set is ``bicogan.classes`` (the paper's six: disgust dropped; or all seven) and its data the
``bicogan.sources`` (null: the enabled ones; ``[fer2013]`` reproduces the paper). Evaluation draws a sample grid
(one row per emotion, one fixed z per column: the same "person" in every emotion), reconstructions x → E → G,
expression editing of real test faces (encode, replace ĉ, decode), and scores the encoder's labels on test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adversarial.bicogan.classes import ClassMap
from adversarial.bicogan.model import bicogan_from_checkpoint
from adversarial.bicogan.training import trainer_from_params
from figures import confusion_png, grid_png
from pipelines.labels import EMOTIONS
from pipelines.params import PROJECT_ROOT
from pipelines.versioning import tree_hash
from runs.context import RunContext
from runs.datasets import DatasetRef, require_emotionset
from runs.lifecycle import TrainingSpec, find_trained, record_evaluation, train_tracked
from runs.outcomes import EvalOutcome, TrainOutcome
from runs.registry import CHAMPION, Score
from runs.scoreboard import ScoreInputs, generation_scores, judge_model_name
from runs.tracking import image_signature
from scoring.classification import classification_metrics, confusion_matrix
from training.loop import LoopConfig
from training.seeds import generator

FAMILY = "bicogan"
VARIANT = "bicogan"
SCORE = Score("frechet_judge_distance", lower_is_better=True)
COLUMN = "pixels"
GRID_COLUMNS = 8  # fixed z per column of the sample grid
EDITED_FACES = 4


def bicogan_code_version() -> str:
    return tree_hash([PROJECT_ROOT / "adversarial" / "bicogan", PROJECT_ROOT / "training"])


def bicogan_data(ctx: RunContext, data: DatasetRef) -> DatasetRef:
    """The EmotionSet narrowed to ``bicogan.sources`` (the enabled ones when null)."""
    sources = ctx.settings.bicogan.sources
    return data.narrowed(tuple(sorted(sources))) if sources else data


def _spec(ctx: RunContext, data: DatasetRef, max_steps: int | None) -> TrainingSpec:
    section = ctx.settings.bicogan
    if max_steps is not None:
        section = section.replace(train=section.train.replace(max_steps=max_steps).model_dump())
    spec = {k: v for k, v in section.model_dump().items() if k != "train"}

    def build():
        trainer = trainer_from_params(section, data.load("train", COLUMN), data.load("val", COLUMN))
        return trainer, trainer.final_model(), LoopConfig.from_settings(section.train)

    return TrainingSpec(
        family=FAMILY,
        variant=VARIANT,
        data=data,
        key_material={
            "spec": spec,
            "train": section.train.model_dump(),
            "data": data.identity(COLUMN),
            "image_shape": list(data.image_shape),
            "code": bicogan_code_version(),
        },
        params={"model": spec, "train": section.train.model_dump(), "data": {"source": data.path, "column": COLUMN}},
        pixel_column=COLUMN,
        build=build,
        signature=image_signature(
            data.image_shape, "class_probabilities", (len(ClassMap.named(section.classes).names),)
        ),
        description=f"train {VARIANT}",
    )


def train_bicogan(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None, resume: bool = True
) -> TrainOutcome:
    require_emotionset(data, "BiCoGAN")
    return train_tracked(ctx, _spec(ctx, bicogan_data(ctx, data), max_steps), resume=resume)


def trained_bicogan(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None
) -> TrainOutcome | None:
    require_emotionset(data, "BiCoGAN")
    return find_trained(ctx, _spec(ctx, bicogan_data(ctx, data), max_steps))


def model_emotions(model) -> list[int]:
    """The model's classes as indices into EMOTIONS."""
    return [EMOTIONS.index(name) for name in model.class_names]


def encoder_accuracy(model, images) -> tuple[float, np.ndarray, int]:
    """(accuracy, confusion over the model's classes, faces excluded) of the encoder's labels on ``images``;
    faces of emotions outside the class set are excluded (and counted)."""
    within, excluded = model.class_map.apply(images)
    predicted = model.classify(within.images).argmax(dim=1).numpy()
    confusion = confusion_matrix(within.labels.numpy(), predicted, len(model.class_names))
    accuracy = float(np.trace(confusion)) / max(int(confusion.sum()), 1)
    return accuracy, confusion, excluded


def champion_judge(ctx: RunContext, data: DatasetRef):
    """(the champion judge of ``data``'s sources, its version); a clear error when there is none."""
    name = judge_model_name(data)
    entry = ctx.tracking.version_by_alias(name, CHAMPION)
    if entry is None:
        raise RuntimeError(
            f"BiCoGAN is scored by the emotion judge of its sources and {name} has no champion: train and evaluate "
            "it first (`emoflow run --variant judge`, or `emoflow train|evaluate --variant judge --sources ...`)"
        )
    return ctx.tracking.load_model(f"models:/{name}@{CHAMPION}").eval(), str(entry.version)


def score_inputs(ctx: RunContext, data: DatasetRef, judge) -> ScoreInputs:
    from recognition.scoring import judge_features

    test_raw = data.load("test", "pixels")
    features = judge_features(judge, test_raw.images, ctx.settings.scoreboard.batch_size)
    train_labels = data.load("train", "pixels").labels.numpy()
    return ScoreInputs(ctx, test_raw, data.load("test", "pixels_svd"), train_labels, judge, features)


def generated(model, inputs: ScoreInputs) -> dict[str, Any]:
    return generation_scores(
        inputs, lambda emotion, n, seed: model.sample(n, EMOTIONS[emotion], seed), model_emotions(model)
    )


def pictures(model, test_set, seed: int) -> dict[str, bytes]:
    names = list(model.class_names)
    z = model.latents(GRID_COLUMNS, seed)
    rows = torch.cat([model.decode(z, name) for name in names])
    figures = {
        "samples": grid_png(
            rows.numpy(),
            len(names),
            GRID_COLUMNS,
            "BiCoGAN samples: one emotion per row, one fixed z per column",
            names,
        )
    }
    within, _ = model.class_map.apply(test_set)
    if len(within):
        pick = torch.randperm(len(within), generator=generator(seed, "bicogan-eval"))[:GRID_COLUMNS]
        faces = within.images[pick]
        pair = torch.cat([faces, model.reconstruct(faces)])
        figures["reconstructions"] = grid_png(
            pair.numpy(), 2, len(pick), "x (top) and G(E(x)) (bottom), test faces", ["x", "G(E(x))"]
        )
        faces = faces[:EDITED_FACES]
        columns = [faces] + [model.edit(faces, name) for name in names]
        stack = torch.stack(columns, dim=1)  # (faces, 1 + classes, C, H, W)
        figures["editing"] = grid_png(
            stack.flatten(0, 1).numpy(),
            stack.shape[0],
            stack.shape[1],
            "expression editing of real test faces: E(x) with ĉ replaced, decoded",
            None,
            ["input", *names],
        )
    return figures


def evaluate_bicogan(ctx: RunContext, trained: TrainOutcome, data: DatasetRef) -> EvalOutcome:
    data = bicogan_data(ctx, data)
    if data.version != trained.data.version:
        raise RuntimeError(
            f"BiCoGAN was trained on {trained.data.version}, the data is now {data.version}: train again"
        )
    model = bicogan_from_checkpoint(trained.checkpoint)
    judge, judge_version = champion_judge(ctx, data)
    progress = ctx.stage_progress(f"evaluate {VARIANT}")
    try:
        inputs = score_inputs(ctx, data, judge)
        accuracy, confusion, excluded = encoder_accuracy(model, inputs.test_raw)
        metrics: dict[str, Any] = classification_metrics(confusion, model.class_names)
        metrics = {f"encoder_{k}": v for k, v in metrics.items()}
        within_labels = inputs.test_raw.labels.numpy()[np.isin(inputs.test_raw.labels.numpy(), model_emotions(model))]
        counts = np.bincount(within_labels, minlength=len(EMOTIONS))
        metrics.update(
            {
                "majority_class_accuracy": float(counts.max() / max(counts.sum(), 1)),
                "test_images": float(len(within_labels)),
                "test_images_excluded": float(excluded),
            }
        )
        progress("encoder labels", 1, 3)
        metrics.update({k: v for k, v in generated(model, inputs).items() if v is not None})
        progress("label agreement and Fréchet judge distance", 2, 3)
        figures = pictures(model, inputs.test_raw, ctx.settings.scoreboard.seed)
        figures["encoder_confusion_matrix"] = confusion_png(
            confusion, model.class_names, f"BiCoGAN encoder on {inputs.test_raw.name}, accuracy {accuracy:.3f}"
        )
        progress("pictures", 3, 3)
    finally:
        progress.close()
    metrics["judge_version"] = float(judge_version)

    def champion_distance(champion) -> float:
        return float(generated(champion, inputs)["frechet_judge_distance"])

    return record_evaluation(
        ctx,
        trained,
        metrics,
        figures,
        SCORE,
        champion_distance,
        {"classes": list(model.class_names), "confusion": confusion.tolist()},
        test_split=f"{data.split_key('test')}@judge-v{judge_version}",
    )


def scoreboard_scores(model, inputs: ScoreInputs) -> dict[str, Any]:
    """BiCoGAN's scoreboard columns: the encoder's accuracy (test faces of its classes) and the generation scores."""
    accuracy, _, excluded = encoder_accuracy(model, inputs.test_raw)
    return {"accuracy": accuracy, "test_images_excluded": excluded, **generated(model, inputs)}
