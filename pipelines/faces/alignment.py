"""Eye-level alignment, crop with margin, gray, resize.

One affine map takes the raw image to the output face: rotate about the eyes' midpoint so the eyes are level,
then crop a box around the (rotated) face box centre, ``margin`` of the box's size added on every side, with
the output's aspect ratio. The rotation and crop are one ``cv2.warpAffine`` at the crop's own resolution
(pixels outside the image are filled by edge replication, or zeros); the result is then resized to the
output size with area interpolation, so big faces are averaged down rather than aliased.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .detection import Detection
from .images import as_array, to_gray

PAD_MODES = ("edge", "zero")


def crop_geometry(detection: Detection, size: tuple[int, int], margin: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The alignment as (M, (crop_w, crop_h)): M (2x3) maps raw-image points (pixel-edge coordinates, i.e.
    pixel (i, j) covers [i, i+1) x [j, j+1)) into the crop frame, whose extent is [0, crop_w) x [0, crop_h);
    the crop frame is scaled to the output size afterwards.
    """
    h_out, w_out = size
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = detection.box
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if detection.eyes is not None:
        (lx, ly), (rx, ry) = detection.eyes
        dx, dy = rx - lx, ry - ly
        norm = math.hypot(dx, dy)
    else:
        norm = 0.0
    if norm > 1e-6:
        c, s = dx / norm, dy / norm  # rotation taking the eye line to the +x axis
        ex, ey = (lx + rx) / 2.0, (ly + ry) / 2.0
    else:
        c, s, ex, ey = 1.0, 0.0, cx, cy
    rot = np.array([[c, s], [-s, c]])
    centre = np.array([ex, ey]) + rot @ np.array([cx - ex, cy - ey])  # face box centre after rotation
    # The smallest crop with the output's aspect that holds the box plus margin on every side.
    k = max(bw * (1 + 2 * margin) / w_out, bh * (1 + 2 * margin) / h_out)
    crop_w, crop_h = k * w_out, k * h_out
    origin = centre - np.array([crop_w / 2.0, crop_h / 2.0])
    # p_crop = rot @ (p - e) + e - origin
    shift = np.array([ex, ey]) - rot @ np.array([ex, ey]) - origin
    return np.hstack([rot, shift[:, None]]), (crop_w, crop_h)


def alignment_matrix(detection: Detection, size: tuple[int, int], margin: float) -> np.ndarray:
    """2x3 affine taking raw-image points to output-face points (pixel-edge coordinates, as in crop_geometry)."""
    m, (crop_w, crop_h) = crop_geometry(detection, size, margin)
    h_out, w_out = size
    return np.diag([w_out / crop_w, h_out / crop_h]) @ m


def align_face(
    image: Any, detection: Detection, size: tuple[int, int] = (48, 48), margin: float = 0.25, pad: str = "edge"
) -> np.ndarray:
    """The face as uint8 gray of shape ``size`` (h, w): eyes level, box plus margin, area-resized."""
    import cv2

    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    gray = to_gray(as_array(image))
    h_out, w_out = size
    m, (crop_w, crop_h) = crop_geometry(detection, size, margin)
    # Warp at the crop's own resolution (never below the output's), then area-resize to the output.
    cw, ch = max(w_out, int(round(crop_w))), max(h_out, int(round(crop_h)))
    m = np.diag([cw / crop_w, ch / crop_h]) @ m
    # cv2 works in pixel-centre coordinates: p_c = p_e - 0.5 on both sides of the map.
    lin, t = m[:, :2], m[:, 2]
    m_centre = np.hstack([lin, (t + lin @ np.array([0.5, 0.5]) - 0.5)[:, None]])
    border = cv2.BORDER_REPLICATE if pad == "edge" else cv2.BORDER_CONSTANT
    crop = cv2.warpAffine(gray, m_centre, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    if (cw, ch) == (w_out, h_out):
        return crop
    return cv2.resize(crop, (w_out, h_out), interpolation=cv2.INTER_AREA)


def resize_gray(image: Any, size: tuple[int, int]) -> np.ndarray:
    """Pre-cropped faces: gray and resized to ``size`` (h, w) with area interpolation, nothing else."""
    import cv2

    gray = to_gray(as_array(image))
    h_out, w_out = size
    if gray.shape == (h_out, w_out):
        return gray.copy()
    return cv2.resize(gray, (w_out, h_out), interpolation=cv2.INTER_AREA)
