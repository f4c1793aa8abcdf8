"""Real faces for the judge's tests: the CK+48 crops (../shared/datasets/ckplus48) read straight into an ``ImageSet``
(no shard build), at 48x48 or block-averaged to 16x16 so a narrow judge trains in milliseconds per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowmodels.data import ImageSet
from pipelines.labels import CKPLUS_LABELS, EMOTION_INDEX, EMOTIONS


def load_ckplus(datasets_dir: Path) -> ImageSet:
    """All CK+48 crops in the 7-emotion scheme (contempt left out), 48x48, in a fixed order."""
    images, labels = [], []
    base = datasets_dir / "ckplus48" / "CK+48"
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        emotion = CKPLUS_LABELS[folder.name]
        if emotion not in EMOTION_INDEX:
            continue
        for png in sorted(folder.glob("*.png")):
            with Image.open(png) as im:
                images.append(np.asarray(im.convert("L"), dtype=np.uint8))
            labels.append(EMOTION_INDEX[emotion])
    pixels = torch.from_numpy(np.stack(images)[:, None].copy())
    return ImageSet(pixels, torch.tensor(labels, dtype=torch.int64), "ckplus48", EMOTIONS)


def shrink(faces: ImageSet, size: int) -> ImageSet:
    """The faces block-averaged from 48x48 to size x size."""
    f = 48 // size
    x = faces.images.double().reshape(len(faces), 1, size, f, size, f).mean(dim=(3, 5))
    return ImageSet(x.round().clamp(0, 255).to(torch.uint8), faces.labels, f"{faces.name}/{size}", faces.class_names)


def interleaved(faces: ImageSet, every: int = 5) -> tuple[ImageSet, ImageSet]:
    """(train, held out): every ``every``-th face held out (all emotions on both sides)."""
    idx = torch.arange(len(faces))
    held = idx % every == 0
    return faces.subset(idx[~held], f"{faces.name}/train"), faces.subset(idx[held], f"{faces.name}/heldout")
