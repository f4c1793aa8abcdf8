"""Image helpers of the face stage: a uint8 array from whatever a reader or a user hands in (numpy, PIL in
any mode), gray and RGB views, and the downscaling applied before detection."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(image: Any) -> np.ndarray:
    """A uint8 HxW (gray) or HxWx3 (RGB) array from an array or a PIL image (any mode, palette included)."""
    if not isinstance(image, np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a dependency
            raise TypeError(f"expected a numpy array or PIL image, got {type(image).__name__}") from None
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a numpy array or PIL image, got {type(image).__name__}")
        if image.mode in ("L", "RGB"):
            return np.asarray(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(image, dtype=np.float64)
            top = arr.max() if arr.size else 0.0
            return np.clip(arr * (255.0 / top if top > 255 else 1.0), 0, 255).astype(np.uint8)
        # P (palette: map indices through the palette), LA, RGBA, CMYK, 1, ...
        palette_gray = image.mode == "P" and _gray_palette(image)
        return np.asarray(image.convert("L" if image.mode in ("1", "LA") or palette_gray else "RGB"))
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"empty image of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
            arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def _gray_palette(image: Any) -> bool:
    palette = image.getpalette()
    if not palette:
        return True
    rgb = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB from HxW gray or HxWx3 RGB."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """HxW uint8 gray (ITU-R BT.601 luma, OpenCV's COLOR_RGB2GRAY) from HxW gray or HxWx3 RGB."""
    if image.ndim == 2:
        return image
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def detection_scale(shape: tuple[int, ...], max_side: int | None) -> float:
    """The factor (<= 1) an image of this shape is resized by before detection."""
    short = min(shape[0], shape[1])
    if not max_side or short <= max_side:
        return 1.0
    return max_side / short


def downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """(image resized for detection, fx, fy): multiply detection coordinates by fx, fy to get back."""
    factor = detection_scale(image.shape, max_side)
    if factor == 1.0:
        return image, 1.0, 1.0
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, w / size[0], h / size[1]
