"""``emoflow classify``: every face of every photo through the face stage, then any classifying model.

Classifying models: the emotion judge (softmax, test-time flip as params ``judge.test_time_flip``), paper 002's
flow-latent classifier (eq. 4 with its own training prior), a class-conditional flow (Bayes' rule; the prior
is the training label frequencies of the shard set its MLflow run trained on when that set is still on disk,
else uniform — the output says which), and any model with a ``classify(x_uint8) -> probabilities`` method
(BiCoGAN's encoder). A face is fed in the model's own input pixels (SVD-truncated for the ``_svd`` flows).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.labels import EMOTIONS
from pipelines.params import Params


def _prior_from_run(ctx, uri: str | None, num_classes: int) -> tuple[torch.Tensor | None, str]:
    """The training label frequencies of the shard set the model's run trained on, or (None, "uniform")."""
    from flowmodels.data import load_shard_split
    from scoring.classification import class_log_prior

    if not uri or not uri.startswith("models:/"):
        return None, "uniform (no registered model to find the training data from)"
    client = ctx.tracking.client()
    name, _, ref = uri[len("models:/") :].partition("@")
    if ref:
        version = client.get_model_version_by_alias(name, ref)
    else:
        name, _, number = name.partition("/")
        version = client.get_model_version(name, number)
    source = client.get_run(version.run_id).data.params.get("data.source")
    if not source or not Path(source).is_dir():
        return None, "uniform (the training shard set is not on disk)"
    labels = load_shard_split(source, "train").labels.numpy()
    log_prior = class_log_prior(labels, num_classes, ctx.settings.evaluate.class_prior)
    return torch.from_numpy(log_prior).float(), f"{ctx.settings.evaluate.class_prior} (from {source})"


def classifier_for(model, ctx, uri: str | None):
    """(probabilities(faces uint8 (N, 1, H, W)) -> (N, C), class names, pixel column, how) for a classifying
    model; a clear error for one that does not classify."""
    from flowmodels.classifier import FlowLatentClassifier, bayes_posterior
    from flowmodels.model import FlowModel
    from recognition.network import EmotionJudge
    from recognition.scoring import predict_probabilities

    settings: Params = ctx.settings
    batch = settings.evaluate.batch_size
    if isinstance(model, EmotionJudge):
        flip = settings.judge.test_time_flip
        return (
            lambda x: predict_probabilities(model, x, batch, flip),
            EMOTIONS,
            "pixels",
            f"emotion judge ({'test-time flip' if flip else 'no flip'})",
        )
    if isinstance(model, FlowLatentClassifier):
        return lambda x: model.posterior(x).double().numpy(), EMOTIONS, "pixels", "flow-latent classifier (eq. 4)"
    if isinstance(model, FlowModel):
        if not model.conditional:
            raise SystemExit("emoflow: classify needs a classifying model; this flow is unconditional")
        log_prior, how = _prior_from_run(ctx, uri, model.num_classes)
        names = EMOTIONS if model.num_classes == len(EMOTIONS) else tuple(str(i) for i in range(model.num_classes))
        return (
            lambda x: bayes_posterior(model, x, log_prior).double().numpy(),
            names,
            model.pixel_column,
            f"Bayes' rule on {model.config.get('variant', 'a flow')}, prior {how}",
        )
    if hasattr(model, "classify"):
        names = tuple(getattr(model, "class_names", EMOTIONS))
        return lambda x: np.asarray(model.classify(x), dtype=np.float64), names, "pixels", type(model).__name__
    raise SystemExit(f"emoflow: {type(model).__name__} does not classify expressions")


@torch.no_grad()
def classify_photos(ctx, model, uri: str | None, paths: list[str], precropped: bool) -> list[dict[str, Any]]:
    """One entry per photo: its faces (box, detector score, emotion, probabilities), or why it has none."""
    from PIL import Image

    from pipelines.faces import FaceAligner
    from pipelines.records import RawRecord
    from pipelines.svd import truncate_singular_values

    settings: Params = ctx.settings
    probabilities, names, column, how = classifier_for(model, ctx, uri)
    image_shape = getattr(model, "image_shape", None) or (1, *settings.data.image_size)
    _, h, w = image_shape
    aligner = FaceAligner(settings.data.faces, (h, w))
    results = []
    for name in paths:
        data = Path(name).read_bytes()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        record = RawRecord(
            "photo", "photo", None, image, str(name), hashlib.sha256(data).hexdigest(), precropped=precropped
        )
        faces = aligner.all_faces(record)
        entry: dict[str, Any] = {"file": str(name), "classifier": how, "faces": []}
        if not faces:
            entry["reason"] = (
                f"no face found by {' then '.join(aligner.detector_chain)} (min_score {settings.data.faces.min_score})"
            )
        for face in faces:
            pixels = face.face
            if column == "pixels_svd":
                pixels = truncate_singular_values(pixels, rank=settings.data.svd.rank, energy=settings.data.svd.energy)
            p = probabilities(torch.from_numpy(np.ascontiguousarray(pixels))[None, None])[0]
            ranked = sorted(zip(names, p.tolist()), key=lambda kv: -kv[1])
            entry["faces"].append(
                {
                    "box": list(face.box),
                    "detector": face.detector,
                    "score": face.det_score,
                    "emotion": ranked[0][0],
                    "probabilities": {k: round(v, 6) for k, v in ranked},
                }
            )
        results.append(entry)
    return results
