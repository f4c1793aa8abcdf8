"""NFGAN's data at the networks' size: the shard set's (expressive, neutral) pairs (``pipelines.pairs``) and faces
resized to ``nfgan.image_size``, and the normalizer applied in batches.

The networks take the paper's 64x64 faces. A shard set built at another size (the project's default is 48x48) is
resized on load (bilinear; antialiased when shrinking) rather than refused, so the default pipeline (``dvc repro``,
``emoflow run``) trains NFGAN too; the run says so (tags ``emoflow.nfgan.face_size`` / ``resized_to``) and the
trained normalizer remembers the size its faces were cropped at (``face_size``), so ``emoflow normalize`` crops a
photo's faces at that size and resizes them the same way. For the paper's setting build the shards at 64x64
(``data.image_size: [64, 64]``): nothing is resized then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor

from adversarial.nfgan.training import PairSet
from pipelines.pairs import NeutralPairs, neutral_pairs, pair_images
from runs.datasets import DatasetRef

COLUMN = "pixels"  # NFGAN learns from the faces as they are (no SVD truncation)
NO_PAIRS_ADVICE = (
    "NFGAN needs a source with neutral and expressive faces of the same person: JAFFE, CK+ in its original layout "
    "(data.ckplus.first_frame_neutral) or MMI; CK+48 and FER2013 have none"
)


def resize_faces(faces: Tensor, size: Sequence[int]) -> Tensor:
    """uint8 faces (N, C, h, w) -> uint8 (N, C, H, W) at ``size`` (H, W): bilinear, antialiased when shrinking,
    rounded; the same tensor when the size already matches."""
    size = tuple(int(v) for v in size)
    if tuple(faces.shape[-2:]) == size:
        return faces
    if not len(faces):
        return torch.zeros((0, faces.shape[1], *size), dtype=torch.uint8)
    resized = F.interpolate(faces.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def size_text(size: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in size)


@torch.no_grad()
def normalize_faces(model, faces: Tensor, batch_size: int) -> Tensor:
    """The normalizer's neutral faces, uint8 (N, 1, H, W) at its size, of uint8 faces of any size (resized first)."""
    sized = resize_faces(faces, model.image_size)
    if not len(sized):
        return sized
    device = next(model.parameters()).device
    return torch.cat([model(sized[i : i + batch_size].to(device)).cpu() for i in range(0, len(sized), batch_size)])


@dataclass
class SplitPairs:
    """One split's pairs: their table (``pipelines.pairs.PAIR_SCHEMA``) and faces at the networks' size."""

    table: pa.Table
    pairs: PairSet

    @property
    def input_ids(self) -> list[str]:
        return self.table.column("input_id").to_pylist()

    @property
    def labels(self) -> list[str]:
        return self.table.column("input_label_name").to_pylist()


def shard_pairs(data: DatasetRef) -> NeutralPairs:
    """Every pair of the dataset's shard set, of its sources."""
    if data.dataset != "emotionset":
        raise ValueError(f"NFGAN learns from the emotionset's pairs, not {data.dataset}")
    return neutral_pairs(data.path, data.sources)


def split_pairs(found: NeutralPairs, split: str, size: Sequence[int]) -> SplitPairs | None:
    """``split``'s pairs with their faces resized to ``size``; None when the split has none."""
    table = found.split(split)
    if not table.num_rows:
        return None
    inputs, targets = pair_images(found.shard_set, table, COLUMN)
    subjects = [f"{a}/{b}" for a, b in zip(table.column("source").to_pylist(), table.column("subject").to_pylist())]
    name = f"pairs/{found.shard_set.name}/{split}"
    h, w = inputs.shape[1:]
    if (h, w) != tuple(size):
        name += f"@{size_text(size)}"
    pairs = PairSet(
        resize_faces(torch.from_numpy(np.ascontiguousarray(inputs[:, None])), size),
        resize_faces(torch.from_numpy(np.ascontiguousarray(targets[:, None])), size),
        name,
        subjects,
    )
    return SplitPairs(table, pairs)


def require_pairs(found: NeutralPairs, split: str, size: Sequence[int]) -> SplitPairs:
    got = split_pairs(found, split, size)
    if got is None:
        raise ValueError(
            f"shard set {found.shard_set.name} has no {split} pairs (pairs by source and split: {found.counts()}). "
            + NO_PAIRS_ADVICE
        )
    return got


def diverse_inputs(table: pa.Table, limit: int) -> list[str]:
    """Up to ``limit`` distinct input ids, ordered so that every person's first emotion comes before anyone's
    second, and every (person, emotion) once before any twice: the faces a picture or a capped measurement
    should reach first."""
    done: set[str] = set()
    repeats: dict[tuple[str, str], int] = {}
    emotions_of: dict[str, list[str]] = {}
    keyed = []
    for input_id, source, subject, label in zip(
        *(table.column(c).to_pylist() for c in ("input_id", "source", "subject", "input_label_name"))
    ):
        if input_id in done:  # an input paired with several neutrals
            continue
        done.add(input_id)
        person = f"{source}/{subject}"
        emotions = emotions_of.setdefault(person, [])
        if label not in emotions:
            emotions.append(label)
        repeat = repeats.get((person, label), 0)
        repeats[(person, label)] = repeat + 1
        keyed.append((repeat, emotions.index(label), person, input_id))
    return [k[-1] for k in sorted(keyed)][:limit]
