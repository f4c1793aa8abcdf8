"""Face detectors behind one tiny interface: ``detect(images) -> list[list[Detection]]``.

- ``pipelines.faces.mtcnn.MtcnnDetector``: facenet-pytorch's MTCNN networks run by a batched driver of our own
  (the confident detector, with eye landmarks for alignment);
- ``pipelines.faces.haar.HaarDetector``: OpenCV's Haar cascades (the fallback; no confidence);
- ``pipelines.faces.images``: the image helpers both use (arrays from PIL images, gray, downscaling).

This module holds what they share: ``Detection``, the ``FaceDetector`` protocol, the search-size defaults, and
``get_detector`` / ``detect_faces`` / ``select_face``. torch, facenet-pytorch and cv2 are imported when a
detector is built, not when this module is imported, so ``import pipelines.faces`` stays cheap.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.devices import resolve_device as resolve_torch_device

# Defaults chosen on JAFFE (256x256, faces ~55% of the frame) and the real photos in tests/faces; see
# bench/bench_faces.py. A face smaller than this fraction of the image's shorter side is not searched for.
MIN_FACE_FRACTION = 0.12
# Images whose shorter side is above this are downscaled (area interpolation) before detection.
MAX_DETECT_SIDE = 320

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face a detector found, in the input image's pixel coordinates (x right, y down).

    ``box`` is (x0, y0, x1, y1) and may reach past the image border; ``score`` is the detector's
    confidence (None for Haar); ``eyes`` is (left, right) eye centres in image order (smaller x first),
    or None when the detector could not place both eyes.
    """

    box: tuple[float, float, float, float]
    score: float | None
    eyes: tuple[Point, Point] | None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, fx: float, fy: float | None = None) -> Detection:
        """The same detection with x coordinates multiplied by ``fx`` and y by ``fy`` (default fx)."""
        fy = fx if fy is None else fy
        x0, y0, x1, y1 = self.box
        box = (float(x0) * fx, float(y0) * fy, float(x1) * fx, float(y1) * fy)
        eyes = None
        if self.eyes is not None:
            (lx, ly), (rx, ry) = self.eyes
            eyes = ((float(lx) * fx, float(ly) * fy), (float(rx) * fx, float(ry) * fy))
        return Detection(box=box, score=self.score, eyes=eyes)


class FaceDetector(Protocol):
    name: str

    def detect(self, images: Sequence[Any]) -> list[list[Detection]]:
        """Per input image, every face found (any order)."""
        ...


def resolve_device(device: str) -> str:
    """The face stage's device as a string: 'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    if device == "cpu":
        return "cpu"  # no torch import for a CPU-only face stage
    resolved = resolve_torch_device(device)
    return "cuda" if resolved.type == "cuda" and device in ("auto", "cuda") else str(resolved)


# ----------------------------------------------------------------------------------------- functions

_CACHE: dict[tuple, FaceDetector] = {}
_CACHE_LOCK = threading.Lock()


def get_detector(name: str, device: str = "auto", **options: Any) -> FaceDetector:
    """A (cached) detector by name: 'mtcnn' or 'haar'. Options go to the detector's constructor."""
    if name not in ("mtcnn", "haar"):
        raise ValueError(f"face detector must be mtcnn or haar, got {name!r}")
    resolved = resolve_device(device) if name == "mtcnn" else "cpu"
    key = (name, resolved, tuple(sorted(options.items())))
    with _CACHE_LOCK:
        det = _CACHE.get(key)
        if det is None:
            if name == "mtcnn":
                from pipelines.faces.mtcnn import MtcnnDetector

                det = MtcnnDetector(resolved, **options)
            else:
                from pipelines.faces.haar import HaarDetector

                det = HaarDetector(**options)
            _CACHE[key] = det
    return det


def detect_faces(
    images: Sequence[Any], detector: str = "mtcnn", device: str = "auto", **options: Any
) -> list[list[Detection]]:
    """Every face in each image (numpy HxW / HxWx3 uint8, or PIL images of any mode), largest first."""
    found = get_detector(detector, device, **options).detect(list(images))
    return [sorted(dets, key=lambda d: d.area, reverse=True) for dets in found]


def select_face(detections: Sequence[Detection], min_score: float) -> Detection | None:
    """The largest detection whose score reaches min_score (unscored detections, i.e. Haar's, always count)."""
    ok = [d for d in detections if d.score is None or d.score >= min_score]
    return max(ok, key=lambda d: d.area) if ok else None


def eye_angle(eyes: tuple[Point, Point]) -> float:
    """Angle in degrees of the line from the left to the right eye (0 = level; positive = right eye lower)."""
    (lx, ly), (rx, ry) = eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def _reset_after_fork() -> None:
    global _CACHE_LOCK
    _CACHE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
