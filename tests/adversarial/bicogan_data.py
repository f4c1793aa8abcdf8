"""Real faces for BiCoGAN's quick tests: the CK+48 crops (../shared/datasets/ckplus48) read straight into a
48x48 ``ImageSet`` with 7-emotion labels (no shard build), and tiny network sizes that train in milliseconds."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowmodels.data import ImageSet
from pipelines.labels import CKPLUS_LABELS, EMOTION_INDEX, EMOTIONS

TINY = {"z_dim": 8, "widths": (8, 16, 16), "latent_width": 16, "joint_width": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors run fastest on one thread on a busy machine, and the tests see one summation order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def _ckplus(root: str) -> tuple[np.ndarray, np.ndarray]:
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


def ckplus_faces(datasets_dir: Path) -> ImageSet:
    """All CK+48 crops in the 7-emotion scheme (contempt left out), 48x48 uint8."""
    images, labels = _ckplus(str(datasets_dir))
    return ImageSet(torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.copy()), "ckplus48", EMOTIONS)


def split_every(full: ImageSet, every: int = 5) -> tuple[ImageSet, ImageSet]:
    """(train, held out): every ``every``-th face held out."""
    idx = torch.arange(len(full))
    held = idx % every == 0
    return full.subset(idx[~held], f"{full.name}/train"), full.subset(idx[held], f"{full.name}/heldout")


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every parameter and buffer bitwise equal (``training.checkpoints.state_digest`` cannot view the 0-d
    batch-norm counters as bytes)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
