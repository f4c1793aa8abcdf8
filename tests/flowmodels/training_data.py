"""Real images for the training/evaluation tests: the CK+48 crops (../shared/datasets/ckplus48), read straight
into an ``ImageSet`` (no shard build needed), block-averaged from 48x48 to a small size so a tiny flow trains in
milliseconds per step."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowmodels.data import ImageSet
from pipelines.labels import CKPLUS_LABELS, EMOTION_INDEX, EMOTIONS


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors this small run fastest on one thread (two OpenMP threads on a busy 2-core machine can be 50x
    slower), and the tests then see one summation order. Import it into a test module to apply it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def _ckplus_arrays(root: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    base = Path(root) / "ckplus48" / "CK+48"
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        emotion = CKPLUS_LABELS[folder.name]
        if emotion not in EMOTION_INDEX:  # contempt: outside the 7-emotion scheme
            continue
        for png in sorted(folder.glob("*.png")):
            with Image.open(png) as im:
                images.append(np.asarray(im.convert("L"), dtype=np.uint8))
            labels.append(EMOTION_INDEX[emotion])
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def ckplus_set(datasets_dir: Path, size: int = 16, name: str = "ckplus48") -> ImageSet:
    """All 927 CK+48 crops in the 7-emotion scheme (contempt left out), 48x48 block-averaged to size x size."""
    images, labels = _ckplus_arrays(str(datasets_dir))
    if 48 % size:
        raise ValueError("size must divide 48")
    f = 48 // size
    small = images.reshape(len(images), size, f, size, f).astype(np.float64).mean(axis=(2, 4))
    small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return ImageSet(torch.from_numpy(small[:, None].copy()), torch.from_numpy(labels.copy()), name, EMOTIONS)


def interleaved_split(full: ImageSet, every: int = 5) -> tuple[ImageSet, ImageSet]:
    """(train, held out): every ``every``-th image held out (all emotions on both sides)."""
    idx = torch.arange(len(full))
    held = idx % every == 0
    return full.subset(idx[~held], f"{full.name}/train"), full.subset(idx[held], f"{full.name}/heldout")
