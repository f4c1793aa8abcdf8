"""``emoflow edit``: change the expression of every face in a photo with BiCoGAN (face stage → encoder →
generator with the requested emotion), written as one PNG: a row per face, the aligned input beside its edit."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from figures import grid_png


@torch.no_grad()
def edit_photos(ctx, model, paths: list[str], emotion: str, out: Path, precropped: bool = False) -> dict[str, Any]:
    """Every face of every photo encoded, its label replaced by ``emotion`` and decoded; the PNG at ``out``.
    A photo without a face is reported (and has no row); no face in any photo is an error."""
    from PIL import Image

    from pipelines.faces import FaceAligner
    from pipelines.records import RawRecord

    if not hasattr(model, "edit") or not hasattr(model, "class_names"):
        raise SystemExit(
            f"emoflow: edit needs a model that encodes and decodes faces (BiCoGAN), not {type(model).__name__}"
        )
    if emotion not in model.class_names:
        raise SystemExit(f"emoflow: --emotion must be one of {list(model.class_names)}")
    _, h, w = model.image_shape
    aligner = FaceAligner(ctx.settings.data.faces, (h, w))
    rows, report = [], []
    for name in paths:
        data = Path(name).read_bytes()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        record = RawRecord(
            "photo", "photo", None, image, str(name), hashlib.sha256(data).hexdigest(), precropped=precropped
        )
        faces = aligner.all_faces(record)
        report.append({"file": str(name), "faces": [list(f.box) for f in faces]})
        if not faces:
            report[-1]["reason"] = f"no face found by {' then '.join(aligner.detector_chain)}"
        for face in faces:
            x = torch.from_numpy(np.ascontiguousarray(face.face))[None, None]
            rows.append(torch.cat([x, model.edit(x, emotion)]))
    if not rows:
        raise SystemExit("emoflow: no face found in " + ", ".join(paths))
    stack = torch.cat(rows)
    png = grid_png(stack.numpy(), len(rows), 2, f"expression edited to {emotion}", None, ["input", emotion])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return {"out": str(out), "emotion": emotion, "photos": report}
