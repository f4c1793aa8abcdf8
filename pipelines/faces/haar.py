"""``HaarDetector``: OpenCV's frontal-face Haar cascade, plus ``haarcascade_eye.xml`` inside the face box to find
the two eyes for alignment. It gives no confidence (``score=None``): the face stage's fallback when MTCNN finds
nothing."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.faces.detection import MAX_DETECT_SIDE, MIN_FACE_FRACTION, Detection, Point
from pipelines.faces.images import as_array, downscale, to_gray


class HaarDetector:
    """OpenCV's Haar cascades: frontal face, then two eyes inside the face's upper part for alignment."""

    name = "haar"

    def __init__(
        self,
        *,
        min_face_fraction: float = MIN_FACE_FRACTION,
        max_detect_side: int | None = MAX_DETECT_SIDE,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
    ) -> None:
        self.min_face_fraction = float(min_face_fraction)
        self.max_detect_side = max_detect_side
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self._face = _cascade("haarcascade_frontalface_default.xml")
        self._eye = _cascade("haarcascade_eye.xml")
        self._lock = threading.Lock()  # a CascadeClassifier must not run in two threads at once

    def detect(self, images: Sequence[Any]) -> list[list[Detection]]:
        return [self._detect_one(as_array(im)) for im in images]

    def _detect_one(self, image: np.ndarray) -> list[Detection]:
        gray, fx, fy = downscale(to_gray(image), self.max_detect_side)
        h, w = gray.shape
        side = max(int(self.min_face_fraction * min(h, w)), 20)
        with self._lock:
            faces = self._face.detectMultiScale(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
            )
            dets = []
            for x, y, fw, fh in np.asarray(faces).reshape(-1, 4):
                eyes = self._eyes(gray, int(x), int(y), int(fw), int(fh))
                det = Detection(box=(float(x), float(y), float(x + fw), float(y + fh)), score=None, eyes=eyes)
                dets.append(det.scaled(fx, fy) if (fx, fy) != (1.0, 1.0) else det)
        return dets

    def _eyes(self, gray: np.ndarray, x: int, y: int, fw: int, fh: int) -> tuple[Point, Point] | None:
        """The two eyes in the face's upper 60%: the biggest candidate left and right of the centre line."""
        top = gray[y : y + int(fh * 0.6), x : x + fw]
        if top.size == 0:
            return None
        found = self._eye.detectMultiScale(
            top, scaleFactor=1.1, minNeighbors=5, minSize=(max(fw // 10, 5),) * 2, maxSize=(fw // 2,) * 2
        )
        left = right = None
        for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4):
            cx, cy = x + ex + ew / 2.0, y + ey + eh / 2.0
            if cy > y + fh * 0.55:
                continue
            if cx < x + fw / 2.0:
                if left is None or ew * eh > left[2]:
                    left = (cx, cy, ew * eh)
            elif right is None or ew * eh > right[2]:
                right = (cx, cy, ew * eh)
        if left is None or right is None:
            return None
        return (float(left[0]), float(left[1])), (float(right[0]), float(right[1]))


def _cascade(filename: str):
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no cv2.CascadeClassifier (removed in OpenCV 5): the Haar detector "
            "needs opencv-python-headless 4.x"
        )
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        raise RuntimeError("cv2.data.haarcascades is missing: cannot find OpenCV's Haar cascade files")
    path = os.path.join(folder, filename)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {path}")
    return cascade
