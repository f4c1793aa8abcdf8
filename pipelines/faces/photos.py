"""Every face in a photo, aligned like the shards' faces: what the commands that take photos use
(``emoflow classify``, ``emoflow edit``, ``emoflow normalize``).

The shard stage keeps one face per image (the largest); a photo of a group holds several, and a user asks about
each. ``faces_in_photo`` runs the same detector chain (main detector, then the fallback when the main one finds
nothing above ``min_score``) and aligns every face it keeps, largest first. A face crop (``precropped``: FER2013,
CK+48) skips detection and is only grayed and resized, as the shard stage does with those datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .alignment import align_face, resize_gray
from .images import as_array


@dataclass(frozen=True)
class PhotoFace:
    """One aligned face: ``face`` uint8 (H, W) at the aligner's image size; ``box`` x0, y0, x1, y1 in the photo;
    ``score`` the detector's confidence (None for Haar and for pre-cropped input); ``detector`` its name
    ("none" for pre-cropped input)."""

    face: np.ndarray
    box: tuple[int, int, int, int]
    score: float | None
    detector: str


def faces_in_photo(aligner: Any, image: Any, precropped: bool = False) -> list[PhotoFace]:
    """Every face of ``image`` (numpy or PIL) that ``aligner`` (a ``pipelines.faces.FaceAligner``) accepts,
    largest first; [] when there is none. ``precropped``: the whole image is the face."""
    from . import record_box

    array = as_array(image)
    h, w = array.shape[:2]
    if precropped:
        return [PhotoFace(resize_gray(array, aligner.image_size), (0, 0, int(w), int(h)), None, "none")]
    min_score = aligner.params.min_score
    for name in aligner.detector_chain:
        found = aligner.detector(name).detect([array])[0]
        kept = sorted((d for d in found if d.score is None or d.score >= min_score), key=lambda d: d.area, reverse=True)
        if kept:
            return [
                PhotoFace(
                    align_face(array, d, aligner.image_size, aligner.params.margin, pad=aligner.pad),
                    record_box(d, array.shape),
                    None if d.score is None else float(d.score),
                    name,
                )
                for d in kept
            ]
    return []
