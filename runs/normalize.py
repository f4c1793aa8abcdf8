"""``emoflow normalize``: every face of every photo through the face stage, then NFGAN, written to a folder.

A face is cropped and aligned as the shards' faces were, at the size the normalizer learnt from (its ``face_size``:
the shards' size; resized to the networks' 64x64 as in training when that differs), then normalized. For each face
``<photo>-face<k>.png`` holds the aligned input and its neutral face side by side, ``<photo>-face<k>-neutral.png``
the neutral face alone (k counts from 1, largest face first). A photo with no face is reported with the reason.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runs.nfgan_data import normalize_faces, resize_faces

GAP = 2  # white pixels between the input and its neutral face


def load_normalizer(ctx, model_uri: str | None, checkpoint: str | None):
    """An NFGAN normalizer from an MLflow URI (``models:/emoflow-nfgan@champion``) or a training checkpoint."""
    from runs.nfgan import normalizer_from_checkpoint

    if checkpoint:
        from training.checkpoints import load_checkpoint

        state = load_checkpoint(checkpoint)
        if state.get("kind") != "nfgan":
            raise SystemExit(f"emoflow: {checkpoint} is a {state.get('kind')!r} checkpoint, not an NFGAN one")
        return normalizer_from_checkpoint(state)
    model = ctx.tracking.load_model(model_uri)
    if not (hasattr(model, "normalize") and hasattr(model, "image_size")):
        raise SystemExit(f"emoflow: normalize needs an NFGAN model (models:/emoflow-nfgan@...), {model_uri} is not one")
    return model


def _file_stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 1
    while stem in used:
        k += 1
        stem = f"{path.stem}-{k}"
    used.add(stem)
    return stem


@torch.no_grad()
def normalize_photos(ctx, model, paths: list[str], out: Path, precropped: bool = False) -> dict[str, Any]:
    """Normalize every face of every photo into ``out`` (module docstring). ``faces``: how many were written."""
    from PIL import Image

    from pipelines.faces import FaceAligner
    from pipelines.records import RawRecord

    model = model.eval()
    face_size = tuple(getattr(model, "face_size", model.image_size))
    aligner = FaceAligner(ctx.settings.data.faces, face_size)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    photos, written = [], 0
    for name in paths:
        data = Path(name).read_bytes()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        record = RawRecord(
            "photo", "photo", None, image, str(name), hashlib.sha256(data).hexdigest(), precropped=precropped
        )
        faces = aligner.all_faces(record)
        entry: dict[str, Any] = {"file": str(name), "faces": []}
        if not faces:
            entry["reason"] = (
                f"no face found by {' then '.join(aligner.detector_chain)} "
                f"(min_score {ctx.settings.data.faces.min_score})"
            )
        stem = _file_stem(Path(name), used)
        for k, face in enumerate(faces, start=1):
            crop = torch.from_numpy(np.ascontiguousarray(face.face))[None, None]
            sized = resize_faces(crop, model.image_size)
            neutral = normalize_faces(model, sized, 1)
            h = sized.shape[-2]
            pair = np.concatenate([sized[0, 0].numpy(), np.full((h, GAP), 255, np.uint8), neutral[0, 0].numpy()], 1)
            side_by_side, alone = out / f"{stem}-face{k}.png", out / f"{stem}-face{k}-neutral.png"
            Image.fromarray(pair).save(side_by_side)
            Image.fromarray(neutral[0, 0].numpy()).save(alone)
            written += 1
            entry["faces"].append(
                {
                    "box": list(face.box),
                    "detector": face.detector,
                    "score": face.det_score,
                    "side_by_side": str(side_by_side),
                    "normalized": str(alone),
                }
            )
        photos.append(entry)
    return {
        "out": str(out),
        "face_size": list(face_size),
        "image_size": list(model.image_size),
        "faces": written,
        "photos": photos,
    }
