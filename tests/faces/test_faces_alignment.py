"""Alignment geometry on synthetic images (no detector), settings, devices and the cheap import."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from pipelines.faces import (
    Detection,
    FaceAligner,
    align_face,
    alignment_matrix,
    resize_gray,
    resolve_device,
    to_gray,
)
from pipelines.params import PROJECT_ROOT, FaceParams


def _dots_image(eyes, size=(300, 400), radius=4):
    h, w = size
    img = np.full((h, w), 90, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for x, y in eyes:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = 255
    return img


def _tilted_face(angle_deg, centre=(200.0, 150.0), half=40.0):
    a = math.radians(angle_deg)
    cx, cy = centre
    left = (cx - half * math.cos(a), cy - half * math.sin(a))
    right = (cx + half * math.cos(a), cy + half * math.sin(a))
    box = (cx - 70, cy - 60, cx + 70, cy + 100)
    return Detection(box=box, score=0.99, eyes=(left, right))


@pytest.mark.parametrize("angle", [-30.0, -8.0, 0.0, 12.0, 35.0])
@pytest.mark.parametrize("size", [(48, 48), (64, 64)])
def test_eyes_come_out_level(angle, size):
    det = _tilted_face(angle)
    img = _dots_image(det.eyes)
    face = align_face(img, det, size, margin=0.25)
    assert face.shape == size and face.dtype == np.uint8
    h, w = size
    left, right = face[:, : w // 2], face[:, w // 2 :]
    ly, lx = np.unravel_index(np.argmax(left), left.shape)
    ry, rx = np.unravel_index(np.argmax(right), right.shape)
    assert abs(int(ly) - int(ry)) <= 1
    # and where the matrix says they go
    m = alignment_matrix(det, size, 0.25)
    (plx, ply), (prx, pry) = (m @ np.array([x, y, 1.0]) for x, y in det.eyes)
    assert abs(ply - pry) < 1e-9
    assert abs(ly + 0.5 - ply) <= 1.5 and abs(lx + 0.5 - plx) <= 1.5
    assert abs(ry + 0.5 - pry) <= 1.5 and abs(rx + w // 2 + 0.5 - prx) <= 1.5


def test_margin_zero_maps_the_box_onto_the_output():
    det = Detection(box=(10.0, 20.0, 110.0, 120.0), score=None, eyes=None)
    m = alignment_matrix(det, (48, 48), 0.0)
    corners = [m @ np.array([x, y, 1.0]) for x, y in [(10, 20), (110, 120)]]
    assert np.allclose(corners[0], [0, 0]) and np.allclose(corners[1], [48, 48])
    m = alignment_matrix(det, (48, 48), 0.25)  # a quarter of the box on every side
    assert np.allclose(m @ np.array([10.0, 20.0, 1.0]), [48 / 6, 48 / 6])
    # non-square output: the crop takes the output's aspect and still holds the whole box
    m = alignment_matrix(det, (64, 48), 0.0)
    tl, br = (m @ np.array([x, y, 1.0]) for x, y in [(10, 20), (110, 120)])
    assert np.allclose([tl[0], br[0]], [0, 48]) and tl[1] >= 0 and br[1] <= 64


def test_crop_leaving_the_image_is_padded():
    img = np.full((100, 100), 200, np.uint8)
    det = Detection(box=(-30.0, -30.0, 50.0, 50.0), score=None, eyes=None)
    edge = align_face(img, det, (48, 48), 0.25, pad="edge")
    zero = align_face(img, det, (48, 48), 0.25, pad="zero")
    assert edge.min() == 200
    assert zero[:5, :5].max() == 0 and zero[-5:, -5:].min() == 200
    with pytest.raises(ValueError):
        align_face(img, det, (48, 48), 0.25, pad="mirror")


def test_gray_is_bt601_and_resize_is_area():
    rgb = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    expected = np.rint(rgb @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(to_gray(rgb).astype(int) - expected).max() <= 1
    checker = np.indices((96, 96)).sum(axis=0) % 2 * 255
    small = resize_gray(checker.astype(np.uint8), (48, 48))
    assert small.shape == (48, 48) and np.abs(small.astype(int) - 128).max() <= 1  # averaged, not aliased


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        FaceAligner(FaceParams(detector="dlib"))
    with pytest.raises(ValueError):
        FaceAligner(FaceParams(fallback="dlib"))
    with pytest.raises(ValueError):
        FaceAligner(FaceParams(batch_size=0))
    with pytest.raises(ValueError):
        FaceAligner(FaceParams(device="tpu"))


def test_device_resolution():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(RuntimeError):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("gpu")


def test_import_is_cheap():
    heavy = ("torch", "cv2", "facenet_pytorch", "torchvision")
    code = f"import sys, pipelines.faces; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
