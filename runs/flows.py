"""Run functions of the flow family (Glow and BPLF, the six variants of the BPLF ablation): train, evaluate,
promote by test bits/dim (lower is better, same test split)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flowmodels.evaluation import evaluate
from flowmodels.scoring import classify, dataset_bits_per_dim, test_bits_per_dim
from flowmodels.training import FlowTrainer, build_seeded_model, model_from_checkpoint
from flowmodels.variants import pixel_column
from pipelines.labels import EMOTIONS
from pipelines.params import PROJECT_ROOT
from pipelines.versioning import tree_hash
from runs.context import RunContext
from runs.datasets import DatasetRef
from runs.lifecycle import TrainingSpec, find_trained, record_evaluation, train_tracked
from runs.outcomes import EvalOutcome, TrainOutcome
from runs.registry import Score
from runs.tracking import image_signature
from scoring.classification import class_log_prior
from training.loop import LoopConfig

FAMILY = "flow"
SCORE = Score("test_bpd", lower_is_better=True)


def flow_code_version() -> str:
    """The code that shapes a trained flow: the flow package and the training loop."""
    return tree_hash([PROJECT_ROOT / "flowmodels", PROJECT_ROOT / "training"])


def model_spec(ctx: RunContext, variant: str, data: DatasetRef) -> dict[str, Any]:
    """``build_model``'s arguments: the variant, the image shape, classes (conditional) and the hparams."""
    settings = ctx.settings
    num_classes = (len(EMOTIONS) if data.dataset == "emotionset" else 10) if settings.model.conditional else None
    return {
        "variant": variant,
        "image_shape": list(data.image_shape),
        "num_classes": num_classes,
        **settings.model.hparams.model_dump(),
    }


def _spec(ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None) -> TrainingSpec:
    config = ctx.settings.train if max_steps is None else ctx.settings.train.replace(max_steps=max_steps)
    spec = model_spec(ctx, variant, data)
    column = pixel_column(variant)

    def build():
        model = build_seeded_model(config.seed, **{**spec, "image_shape": tuple(spec["image_shape"])})
        trainer = FlowTrainer(model, data.load("train", column), data.load("val", column), config)
        return trainer, model, LoopConfig.from_settings(config)

    return TrainingSpec(
        family=FAMILY,
        variant=variant,
        data=data,
        key_material={
            "spec": spec,
            "train": config.model_dump(),
            "data": data.identity(column),
            "code": flow_code_version(),
        },
        params={"model": spec, "train": config.model_dump(), "data": {"source": data.path, "column": column}},
        pixel_column=column,
        build=build,
        signature=image_signature(data.image_shape, "bits_per_dim", ()),
        description=f"train {variant}",
    )


def train_flow(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None, resume: bool = True
) -> TrainOutcome:
    """Train (resuming an interrupted run), track and register one flow variant; the earlier outcome when
    nothing that shapes it changed. ``max_steps`` overrides params train.max_steps (quick runs)."""
    return train_tracked(ctx, _spec(ctx, variant, data, max_steps), resume=resume)


def trained_flow(ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None) -> TrainOutcome | None:
    """The finished training run these settings would produce, if there is one (``emoflow evaluate``)."""
    return find_trained(ctx, _spec(ctx, variant, data, max_steps))


def evaluate_flow(ctx: RunContext, trained: TrainOutcome, data: DatasetRef) -> EvalOutcome:
    """Score the candidate on the test split (bits/dim both conventions, samples per emotion, the Bayes
    classifier with the training-frequency prior, t-SNE, expression transfer with train-split class means, the
    bits/dim curve), log it and promote it when it beats the champion on the same test split."""
    if data.version != trained.data.version:
        raise RuntimeError(
            f"the candidate was trained on {trained.dataset} {trained.data.version} but the data is now {data.version}: "
            f"train {trained.variant} again first"
        )
    settings = ctx.settings.evaluate
    model = model_from_checkpoint(trained.checkpoint)
    column = trained.pixel_column
    test_set = data.load("test", column)
    train_set = data.load("train", column)
    log_prior = None
    if model.conditional and train_set.labels is not None:
        log_prior = torch.from_numpy(
            class_log_prior(train_set.labels.numpy(), model.num_classes, settings.class_prior)
        ).float()
    progress = ctx.stage_progress(f"evaluate {trained.variant}")
    try:
        report = evaluate(
            model,
            test_set,
            temperatures=settings.temperatures,
            samples_per_class=settings.samples_per_class,
            history=trained.result,
            seed=settings.seed,
            batch_size=settings.batch_size,
            tsne_points=settings.tsne_points,
            reference_set=train_set,
            transfer_reference_per_class=settings.transfer_reference_per_class,
            log_prior=log_prior,
            progress=progress,
        )
    finally:
        progress.close()
    confusion = None
    if report.confusion is not None:
        confusion = {"classes": list(report.class_names or []), "confusion": np.asarray(report.confusion).tolist()}

    def champion_bpd(champion) -> float:
        return test_bits_per_dim(champion, test_set, settings.batch_size, settings.seed)[0]

    return record_evaluation(ctx, trained, report.metrics, report.figures, SCORE, champion_bpd, confusion)


def scoreboard_scores(model, inputs) -> dict[str, Any]:
    """A flow's scoreboard columns (``runs.scoreboard``): bits/dim on the raw test pixels and on its own input
    pixels; for a class-conditional flow, Bayes-rule accuracy on its input pixels (training-frequency prior)
    and the generation scores of its samples at the scoreboard's temperature."""
    from runs.scoreboard import generation_scores, seeded_flow_samples

    evaluate, board = inputs.ctx.settings.evaluate, inputs.settings
    raw = dataset_bits_per_dim(model, inputs.test_raw, board.batch_size, evaluate.seed, ("standard",))["standard"]
    own = inputs.test_for(model.pixel_column)
    scores: dict[str, Any] = {"bpd_raw": raw, "bpd_input": raw}
    if own is not inputs.test_raw:
        scores["bpd_input"] = dataset_bits_per_dim(model, own, board.batch_size, evaluate.seed, ("standard",))[
            "standard"
        ]
    inputs.progress(f"{model.config.get('variant')}: bits/dim")
    if model.conditional:
        log_prior = torch.from_numpy(
            class_log_prior(inputs.train_labels, model.num_classes, evaluate.class_prior)
        ).float()
        predicted, _ = classify(model, own, board.batch_size, log_prior)
        scores["accuracy"] = float((predicted == own.labels.numpy()).mean())
        inputs.progress(f"{model.config.get('variant')}: Bayes classification")
        scores.update(
            generation_scores(
                inputs, lambda emotion, n, seed: seeded_flow_samples(model, emotion, n, seed, board.temperature)
            )
        )
    return scores
