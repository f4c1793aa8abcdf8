"""Run functions of paper 002's flow-latent classifier (``flowmodels.classifier``): train, evaluate, promote by
test accuracy (higher is better, same test split).

Evaluation reports, on the subject-independent test split: accuracy, balanced accuracy and per-class recall
(eq. 4 with the class prior of the training label frequencies, or uniform: ``evaluate.class_prior``), the
confusion matrix, bits/dim of log p(x | true label) and of the label marginal (8 bits, standard convention,
fixed-seed noise); a t-SNE of z'_1 = h(z_L, y) (paper 002 Fig. 2; y the model's own prediction: a test label
is never an input), and expression transfer with class means over the TRAIN split. Then paper 002's protocol:
k-fold subject-independent cross-validation on ``flow_latent_classifier.cv_source`` (mean ± std over folds),
each fold's model trained from scratch for ``cv_max_steps`` on the other folds' subjects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from figures import confusion_png, scatter_png
from flowmodels.classifier_training import (
    FlowLatentTrainer,
    build_seeded_classifier,
    class_log_posteriors,
    classifier_from_checkpoint,
    predict_labels,
)
from flowmodels.data import ImageSet
from flowmodels.evaluation import transfer_strip
from flowmodels.scoring import dataset_bits_per_dim
from pipelines.labels import EMOTIONS
from pipelines.params import PROJECT_ROOT
from pipelines.versioning import tree_hash
from runs.context import RunContext
from runs.cross_validation import cross_validate, load_fold_set
from runs.datasets import DatasetRef, key_of, require_emotionset
from runs.lifecycle import TrainingSpec, find_trained, record_evaluation, train_tracked
from runs.outcomes import EvalOutcome, TrainOutcome
from runs.registry import Score
from runs.tracking import image_signature
from scoring.classification import class_log_prior, classification_metrics, confusion_matrix
from scoring.embedding import tsne_embedding
from training.loop import LoopConfig, run_training
from training.seeds import generator

FAMILY = "flow_latent_classifier"
VARIANT = "flow_latent_classifier"
SCORE = Score("accuracy", lower_is_better=False)
COLUMN = "pixels"  # paper 002 trains on the faces as they are (no SVD truncation)


def flow_latent_code_version() -> str:
    return tree_hash([PROJECT_ROOT / "flowmodels", PROJECT_ROOT / "training"])


def class_prior(ctx: RunContext, train_labels: np.ndarray) -> list[float]:
    """p(y) of every Bayes classifier here: the training label frequencies (or uniform), never test counts."""
    return np.exp(class_log_prior(train_labels, len(EMOTIONS), ctx.settings.evaluate.class_prior)).tolist()


def model_spec(ctx: RunContext, data: DatasetRef, train_labels: np.ndarray) -> dict[str, Any]:
    section = ctx.settings.flow_latent_classifier
    return {
        "image_shape": list(data.image_shape),
        "num_classes": len(EMOTIONS),
        "h_steps": section.h_steps,
        "h_hidden": section.h_hidden,
        "lam": section.lam,
        "variant": section.f_variant,
        **ctx.settings.model.hparams.model_dump(),
        "class_prior": class_prior(ctx, train_labels),
    }


def _spec(ctx: RunContext, data: DatasetRef, max_steps: int | None) -> TrainingSpec:
    section = ctx.settings.flow_latent_classifier
    config = section.train if max_steps is None else section.train.replace(max_steps=max_steps)
    train_set = data.load("train", COLUMN)
    spec = model_spec(ctx, data, train_set.labels.numpy())

    def build():
        model = build_seeded_classifier(config.seed, **spec)
        trainer = FlowLatentTrainer(model, train_set, data.load("val", COLUMN), config)
        return trainer, model, LoopConfig.from_settings(config)

    return TrainingSpec(
        family=FAMILY,
        variant=VARIANT,
        data=data,
        key_material={
            "spec": spec,
            "train": config.model_dump(),
            "data": data.identity(COLUMN),
            "code": flow_latent_code_version(),
        },
        params={"model": spec, "train": config.model_dump(), "data": {"source": data.path, "column": COLUMN}},
        pixel_column=COLUMN,
        build=build,
        signature=image_signature(data.image_shape, "class_probabilities", (len(EMOTIONS),)),
        description=f"train {VARIANT}",
    )


def train_flow_latent(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None, resume: bool = True
) -> TrainOutcome:
    require_emotionset(data, VARIANT)
    return train_tracked(ctx, _spec(ctx, data, max_steps), resume=resume)


def trained_flow_latent(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None
) -> TrainOutcome | None:
    require_emotionset(data, VARIANT)
    return find_trained(ctx, _spec(ctx, data, max_steps))


@torch.no_grad()
def z_prime_tsne(model, test_set: ImageSet, points: int, seed: int, batch_size: int) -> bytes | None:
    """Paper 002 Fig. 2: t-SNE of z'_1 = h(z_L, y) of up to ``points`` test faces, y the predicted label,
    coloured by the true emotion. None with fewer than 10 faces."""
    n = min(points, len(test_set))
    if n < 10:
        return None
    pick = torch.randperm(len(test_set), generator=generator(seed, "tsne"))[:n].sort().values
    subset = test_set.subset(pick)
    predicted = torch.from_numpy(predict_labels(model, subset, batch_size))
    device = next(model.parameters()).device
    tops = [
        model.encode(subset.images[b : b + batch_size].to(device), predicted[b : b + batch_size].to(device))[-1]
        .flatten(1)
        .double()
        .cpu()
        for b in range(0, n, batch_size)
    ]
    embedding = tsne_embedding(torch.cat(tops).numpy(), seed)
    return scatter_png(
        embedding,
        subset.labels.numpy(),
        EMOTIONS,
        f"{VARIANT}: t-SNE of z'_1 = h(z_L, predicted y), {n} test faces ({test_set.name}), coloured by emotion",
    )


def cv_fit(ctx: RunContext, data: DatasetRef, source: str):
    """``fit(train_set, fold)`` for ``cross_validate``: a fresh classifier per fold, trained for cv_max_steps under
    a content key (resumable, never redone)."""
    section = ctx.settings.flow_latent_classifier
    config = section.train.replace(max_steps=section.cv_max_steps, val_every=0, checkpoint_every=0)

    def fit(train_set: ImageSet, fold: int):
        spec = model_spec(ctx, data, train_set.labels.numpy())
        key = key_of({"spec": spec, "train": config.model_dump(), "data": train_set.fingerprint(), "fold": fold})
        model = build_seeded_classifier(config.seed, **spec)
        trainer = FlowLatentTrainer(model, train_set, None, config)
        folder = ctx.home / "cross_validation" / VARIANT / data.version / source / f"fold-{fold}-{key}"
        run_training(trainer, LoopConfig.from_settings(config), folder, description=f"{VARIANT} CV fold {fold}")
        return model.eval()

    return fit


def evaluate_flow_latent(ctx: RunContext, trained: TrainOutcome, data: DatasetRef) -> EvalOutcome:
    if data.version != trained.data.version:
        raise RuntimeError(
            f"{VARIANT} was trained on {trained.data.version}, the data is now {data.version}: train again"
        )
    settings, section = ctx.settings.evaluate, ctx.settings.flow_latent_classifier
    model = classifier_from_checkpoint(trained.checkpoint)
    test_set, train_set = data.load("test", COLUMN), data.load("train", COLUMN)
    progress = ctx.stage_progress(f"evaluate {VARIANT}")
    stages = 5
    try:
        log_post = class_log_posteriors(model, test_set, settings.batch_size)
        predicted = log_post.argmax(axis=1)
        confusion = confusion_matrix(test_set.labels.numpy(), predicted, len(EMOTIONS))
        metrics = classification_metrics(confusion, EMOTIONS)
        prior = "uniform prior" if settings.class_prior == "uniform" else "training-frequency prior"
        figures = {
            "confusion_matrix": confusion_png(
                confusion, EMOTIONS, f"{VARIANT} ({prior}) on {test_set.name}, accuracy {metrics['accuracy']:.3f}"
            )
        }
        progress("classification", 1, stages)
        bpd = dataset_bits_per_dim(model, test_set, settings.batch_size, settings.seed, ("standard",))["standard"]
        marginal = dataset_bits_per_dim(
            model, test_set, settings.batch_size, settings.seed, ("standard",), marginal=True
        )["standard"]
        metrics.update(
            {
                "test_bpd": bpd,
                "test_bpd_marginal": marginal,
                "n_bits": float(model.n_bits),
                "test_images": float(len(test_set)),
            }
        )
        progress("bits/dim", 2, stages)
        tsne = z_prime_tsne(model, test_set, section.tsne_points, settings.seed, settings.batch_size)
        if tsne is not None:
            figures["tsne_z_prime"] = tsne
        progress("t-SNE", 3, stages)
        strip = transfer_strip(model, test_set, 4, settings.seed, settings.batch_size, reference=train_set)
        if strip is not None:
            figures["transfer"] = strip[0]
        progress("transfer", 4, stages)
        cv = None
        if section.cv_source:
            fold_set = load_fold_set(data, section.cv_source, COLUMN)
            cv = cross_validate(
                fold_set,
                cv_fit(ctx, data, section.cv_source),
                lambda m, s: predict_labels(m, s, settings.batch_size),
                len(EMOTIONS),
                section.cv_source,
                progress=lambda stage, done, total: progress(f"cross-validation: {stage}", 4, stages),
            )
            metrics.update(cv.metrics())
            figures["cv_confusion_matrix"] = confusion_png(
                cv.confusion,
                EMOTIONS,
                f"{VARIANT}: {len(cv.accuracies)}-fold subject-independent CV on {section.cv_source}, "
                f"accuracy {cv.mean:.3f} ± {cv.std:.3f}",
            )
        progress("cross-validation", 5, stages)
    finally:
        progress.close()

    def champion_accuracy(champion) -> float:
        return float((predict_labels(champion, test_set, settings.batch_size) == test_set.labels.numpy()).mean())

    outcome = record_evaluation(
        ctx,
        trained,
        metrics,
        figures,
        SCORE,
        champion_accuracy,
        {"classes": list(EMOTIONS), "confusion": confusion.tolist()},
    )
    if cv is not None:
        ctx.tracking.client().log_dict(trained.run_id, cv.as_dict(), "evaluation/cross_validation.json")
    return outcome


def scoreboard_scores(model, inputs) -> dict[str, Any]:
    """The classifier's scoreboard columns: bits/dim of log p(x | true emotion) (raw pixels are its input),
    accuracy (eq. 4 with its training-frequency prior) and the generation scores of its samples."""
    from runs.scoreboard import generation_scores, seeded_flow_samples

    board, seed = inputs.settings, inputs.ctx.settings.evaluate.seed
    bpd = dataset_bits_per_dim(model, inputs.test_raw, board.batch_size, seed, ("standard",))["standard"]
    predicted = predict_labels(model, inputs.test_raw, board.batch_size)
    scores: dict[str, Any] = {
        "bpd_raw": bpd,
        "bpd_input": bpd,
        "accuracy": float((predicted == inputs.test_raw.labels.numpy()).mean()),
    }
    inputs.progress(f"{VARIANT}: bits/dim and classification")
    scores.update(
        generation_scores(inputs, lambda emotion, n, s: seeded_flow_samples(model, emotion, n, s, board.temperature))
    )
    return scores
