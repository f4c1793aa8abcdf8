"""Run functions of NFGAN (``adversarial.nfgan``, seed paper 004): an expressive face -> the same person's neutral
face. Train, evaluate, promote.

Training (one MLflow run, registered ``emoflow-nfgan``): the pairs of the shard set (``pipelines.pairs``: JAFFE,
original-layout CK+, MMI), resized to the networks' 64x64 when the shards are another size (``runs.nfgan_data``);
first the identity network that stands in for the paper's Light CNN, trained on the training split's subjects in its
own content-keyed folder (``$EMOFLOW_HOME/nfgan_identity/<shard version>/<key>``: resumed when interrupted, reused
when nothing that shapes it changed; its settings are part of NFGAN's key, so changing them retrains both); then
``NFGANTrainer`` through ``train_tracked`` (checkpoints and exact resume from the loop, GPU when there is one). The
identity network's validation (verification AUC on the val split's people) is logged into the same run.

Promotion: by the held-out identity distance ``test_identity_distance``, the **median** dlib embedding distance
between a test input and its normalized output (lower is better, on the same test split); dlib's network is never
trained on here, so it is an independent judge of "still the same person". Measured on up to
``nfgan.evaluate.dlib_faces`` distinct test inputs (chosen to cover every person and emotion first).

Evaluation: pixel L1 (eq. 7, the [-1, 1] scale) and SSIM (``scoring.ssim``) of the output against the true neutral,
beside the same for the input itself (what doing nothing scores); the strip input -> normalized -> true neutral of
held-out people; the dlib distances input <-> output, input <-> true neutral, input <-> other people's neutral faces
and output <-> true neutral as histograms (the paper's Fig. 4) with medians and the fraction under dlib's 0.6
"same person" threshold; and the paper's Table 4 (``runs.nfgan_table4``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import torch

from adversarial.nfgan.dlib_identity import SAME_PERSON_THRESHOLD, embed_faces
from adversarial.nfgan.identity import IdentityTrainer, build_identity_network, load_identity_set
from adversarial.nfgan.networks import build_networks
from adversarial.nfgan.training import NFGANTrainer, build_extractors, nfgan_from_checkpoint
from flowmodels.data import ImageSet
from pipelines.params import PROJECT_ROOT
from pipelines.versioning import file_sha256, tree_hash
from runs.context import RunContext
from runs.datasets import DatasetRef, key_of, require_emotionset
from runs.lifecycle import TrainingSpec, find_trained, record_evaluation, train_tracked
from runs.nfgan_data import (
    COLUMN,
    diverse_inputs,
    normalize_faces,
    require_pairs,
    resize_faces,
    shard_pairs,
    size_text,
    split_pairs,
)
from runs.nfgan_evaluation import identity_distances, identity_scores, pictures, pixel_scores
from runs.outcomes import EvalOutcome, TrainOutcome
from runs.registry import CHAMPION, Score
from runs.tracking import image_signature
from training.checkpoints import load_checkpoint
from training.loop import LoopConfig, run_training

FAMILY = "nfgan"
VARIANT = "nfgan"
SCORE = Score("test_identity_distance", lower_is_better=True)


def nfgan_code_version() -> str:
    """The code that shapes a trained NFGAN: its package, the loop, the pairing rule and the resizing."""
    tree = tree_hash([PROJECT_ROOT / "adversarial" / "nfgan", PROJECT_ROOT / "training"])
    files = [file_sha256(PROJECT_ROOT / p) for p in ("pipelines/pairs.py", "runs/nfgan_data.py")]
    return hashlib.sha256(":".join([tree, *files]).encode()).hexdigest()[:16]


class FaceSizedTrainer(NFGANTrainer):
    """``NFGANTrainer`` whose checkpoints and registered normalizer also hold ``face_size``: the size of the shard
    faces it learnt from before resizing, at which ``emoflow normalize`` crops a photo's faces."""

    def __init__(self, *args, face_size: tuple[int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.face_size = tuple(int(v) for v in face_size)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "face_size": list(self.face_size)}

    def final_model(self):
        model = super().final_model()
        model.face_size = self.face_size
        return model


def normalizer_from_checkpoint(path_or_state, device: str = "cpu"):
    """The normalizer of an NFGAN checkpoint with its ``face_size`` (the networks' size when not recorded)."""
    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state)
    model = nfgan_from_checkpoint(state, device)
    model.face_size = tuple(state["trainer"].get("face_size", model.image_size))
    return model


def _section(ctx: RunContext, max_steps: int | None):
    section = ctx.settings.nfgan
    if max_steps is not None:
        section = section.replace(train=section.train.replace(max_steps=max_steps).model_dump())
    return section


def model_spec(section) -> dict[str, Any]:
    """Everything in ``params.nfgan`` that shapes the model except its own training budget and the evaluation."""
    return {k: v for k, v in section.model_dump().items() if k not in ("train", "evaluate")}


def perceptual_judge(ctx: RunContext, data: DatasetRef) -> list[str] | None:
    """[registered name, version] of the champion judge L_feat compares through (``perceptual_features: judge``)."""
    if ctx.settings.nfgan.perceptual_features != "judge":
        return None
    from runs.scoreboard import judge_model_name

    name = judge_model_name(data)
    entry = ctx.tracking.version_by_alias(name, CHAMPION)
    if entry is None:
        raise RuntimeError(
            f"nfgan.perceptual_features is 'judge' and {name} has no champion: train and evaluate the judge first "
            "(`emoflow run --variant judge`), or set nfgan.perceptual_features: identity"
        )
    return [name, str(entry.version)]


def _identity_faces(data: DatasetRef, split: str, section) -> ImageSet | None:
    faces = load_identity_set(data.path, split, section.identity.min_images, data.sources)
    if not len(faces):
        return None
    return ImageSet(
        resize_faces(faces.images, section.image_size), faces.labels, faces.name, faces.class_names, faces.ids
    )


def fit_identity_network(ctx: RunContext, data: DatasetRef, section):
    """(the identity network trained on the training split's subjects, its ``TrainResult``, its folder)."""
    config = section.identity.train
    key = key_of(
        {
            "identity": section.identity.model_dump(),
            "image_size": list(section.image_size),
            "data": data.identity(COLUMN),
            "code": nfgan_code_version(),
        }
    )
    folder = ctx.home / "nfgan_identity" / data.version / key
    train_set = _identity_faces(data, "train", section)
    if train_set is None:
        raise ValueError(
            f"shard set {data.version}: no training subject has {section.identity.min_images} faces "
            "(nfgan.identity.min_images) to train the identity network on"
        )
    network = build_identity_network(train_set, section.identity, config.seed)
    trainer = IdentityTrainer(network, train_set, _identity_faces(data, "val", section), config)
    say = ctx.throttled("train nfgan identity network")

    def on_progress(event: dict) -> None:
        if event["event"] in ("log", "val"):
            numbers = {k: v for k, v in event.items() if k not in ("event", "step") and isinstance(v, float)}
            say(f"step {event['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in numbers.items()))

    result = run_training(
        trainer,
        LoopConfig.from_settings(config),
        folder,
        on_progress=on_progress,
        progress_bar=ctx.progress_bars,
        description="train nfgan identity network",
    )
    return trainer.final_model(), result, folder


def _spec(ctx: RunContext, data: DatasetRef, max_steps: int | None) -> tuple[TrainingSpec, dict[str, Any]]:
    """The training spec, and the dict its ``build`` fills with what it did beside NFGAN (the identity network)."""
    section = _section(ctx, max_steps)
    spec = model_spec(section)
    face_size = tuple(data.image_shape[1:])
    judge = perceptual_judge(ctx, data)
    done: dict[str, Any] = {}

    def build():
        found = shard_pairs(data)
        train = require_pairs(found, "train", section.image_size)
        val = split_pairs(found, "val", section.image_size)
        network, identity_result, identity_folder = fit_identity_network(ctx, data, section)
        done.update(identity=identity_result, identity_folder=identity_folder, pairs=found.counts())
        judge_model = ctx.tracking.load_model(f"models:/{judge[0]}/{judge[1]}").eval() if judge else None
        perceptual, identity = build_extractors(network, section, judge_model)
        generator, discriminator = build_networks(section, seed=section.train.seed)
        trainer = FaceSizedTrainer(
            generator,
            discriminator,
            train.pairs,
            val.pairs if val is not None else None,
            section,
            perceptual,
            identity,
            face_size=face_size,
        )
        return trainer, trainer.final_model(), LoopConfig.from_settings(section.train)

    sizes = {"face_size": size_text(face_size), "network_size": size_text(section.image_size)}
    return (
        TrainingSpec(
            family=FAMILY,
            variant=VARIANT,
            data=data,
            key_material={
                "spec": spec,
                "train": section.train.model_dump(),
                "data": data.identity(COLUMN),
                "face_size": list(face_size),
                "perceptual_judge": judge,
                "code": nfgan_code_version(),
            },
            params={
                "model": spec,
                "train": section.train.model_dump(),
                "data": {"source": data.path, "column": COLUMN, **sizes},
            },
            pixel_column=COLUMN,
            build=build,
            signature=image_signature(
                (1, *section.image_size), "neutral_faces", (1, *section.image_size), output_dtype="uint8"
            ),
            description=f"train {VARIANT}",
        ),
        done,
    )


def train_nfgan(
    ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None, resume: bool = True
) -> TrainOutcome:
    require_emotionset(data, "NFGAN")
    spec, done = _spec(ctx, data, max_steps)
    face, size = spec.params["data"]["face_size"], spec.params["data"]["network_size"]
    if face != size:
        ctx.logger.warning(
            "nfgan: the shard set's faces are %s; they are resized to the networks' %s on load (build the shards with "
            "data.image_size: [64, 64] for the paper's setting)",
            face,
            size,
        )
    tags = {"emoflow.nfgan.face_size": face, "emoflow.nfgan.resized_to": size if face != size else ""}
    outcome = train_tracked(dataclasses.replace(ctx, tags={**ctx.tags, **tags}), spec, resume=resume)
    if "identity" in done:  # trained now (not reused): the identity network's numbers join the run
        client, identity = ctx.tracking.client(), done["identity"]
        for name, value in {**identity.final, **identity.val}.items():
            if value is not None and np.isfinite(value):
                client.log_metric(outcome.run_id, f"identity.{name.removeprefix('val_')}", float(value))
        client.set_tag(outcome.run_id, "emoflow.nfgan.identity_checkpoint", str(done["identity_folder"] / "last.pt"))
        client.log_dict(outcome.run_id, {"pairs": done["pairs"], "identity": identity.as_dict()}, "training/nfgan.json")
    return outcome


def trained_nfgan(ctx: RunContext, variant: str, data: DatasetRef, max_steps: int | None = None) -> TrainOutcome | None:
    require_emotionset(data, "NFGAN")
    return find_trained(ctx, _spec(ctx, data, max_steps)[0])


def evaluate_nfgan(ctx: RunContext, trained: TrainOutcome, data: DatasetRef) -> EvalOutcome:
    from runs.nfgan_table4 import table4

    if data.version != trained.data.version:
        raise RuntimeError(f"NFGAN was trained on {trained.data.version}, the data is now {data.version}: train again")
    evaluate, batch = ctx.settings.nfgan.evaluate, ctx.settings.evaluate.batch_size
    model = normalizer_from_checkpoint(trained.checkpoint)
    found = shard_pairs(data)
    test = require_pairs(found, "test", model.image_size)
    chosen = diverse_inputs(test.table, evaluate.dlib_faces)
    progress = ctx.stage_progress(f"evaluate {VARIANT}")
    try:
        outputs = normalize_faces(model, test.pairs.inputs, batch)
        metrics: dict[str, Any] = pixel_scores(test.pairs.inputs, outputs, test.pairs.targets)
        metrics.update({"test_pairs": float(len(test.pairs)), "test_inputs": float(len(set(test.input_ids)))})
        progress("pixel L1 and SSIM", 1, 3)
        distances = identity_distances(test, outputs, chosen)
        metrics.update(identity_scores(distances))
        metrics["dlib_inputs"] = float(len(chosen))
        figures = pictures(test, outputs, distances, evaluate.strip_faces)
        progress("dlib identity distances", 2, 3)
        comparison = table4(ctx, data, model, found)
        metrics.update(comparison.metrics())
        if comparison.results:
            figures["table4"] = comparison.figure()
        progress("Table 4", 3, 3)
    finally:
        progress.close()

    def champion_distance(champion) -> float:
        return float(
            np.median(identity_distances(test, normalize_faces(champion, test.pairs.inputs, batch), chosen)["output"])
        )

    outcome = record_evaluation(ctx, trained, metrics, figures, SCORE, champion_distance)
    client = ctx.tracking.client()
    client.log_dict(trained.run_id, comparison.as_dict(), "evaluation/table4.json")
    client.log_dict(trained.run_id, {k: v.tolist() for k, v in distances.items()}, "evaluation/identity_distances.json")
    return outcome


def scoreboard_scores(model, inputs) -> dict[str, Any]:
    """NFGAN's scoreboard row. A normalizer neither has a density, classifies, nor generates by emotion: the five
    shared columns stay empty. What it can be scored on with the test faces alone (no true neutral there, so no L1):
    ``nfgan_identity_distance`` (median dlib distance input <-> output) and ``nfgan_same_person_rate`` on up to
    ``nfgan.evaluate.dlib_faces`` test faces (a seeded choice), and with a champion judge ``nfgan_neutral_rate``: the
    share of outputs the judge calls neutral (``nfgan_neutral_rate_input``: of the inputs themselves)."""
    from recognition.scoring import predict_probabilities
    from training.seeds import generator

    evaluate, board = inputs.ctx.settings.nfgan.evaluate, inputs.settings
    faces = inputs.test_raw
    n = min(evaluate.dlib_faces, len(faces))
    pick = torch.randperm(len(faces), generator=generator(evaluate.seed, "nfgan-scoreboard"))[:n].sort().values
    sized = resize_faces(faces.images[pick], model.image_size)
    outputs = normalize_faces(model, sized, board.batch_size)
    distance = np.linalg.norm(embed_faces(sized.numpy()) - embed_faces(outputs.numpy()), axis=1)
    inputs.progress(f"{VARIANT}: dlib identity distances")
    scores: dict[str, Any] = {
        "nfgan_identity_distance": float(np.median(distance)),
        "nfgan_same_person_rate": float((distance < SAME_PERSON_THRESHOLD).mean()),
        "nfgan_faces": n,
    }
    if inputs.judge is not None:
        from pipelines.pairs import NEUTRAL

        flip = inputs.ctx.settings.judge.test_time_flip
        for key, images in (("nfgan_neutral_rate", outputs), ("nfgan_neutral_rate_input", faces.images[pick])):
            shrunk = resize_faces(images, faces.images.shape[-2:])  # the judge's own input size
            predicted = predict_probabilities(inputs.judge, shrunk, board.batch_size, flip).argmax(axis=1)
            scores[key] = float((predicted == NEUTRAL).mean())
    return scores
