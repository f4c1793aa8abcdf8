"""JAFFE, all 213 raw images (256x256 gray, 23 in palette mode): every one yields an aligned face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.faces import FaceAligner, MtcnnDetector, alignment_matrix, as_array, eye_angle, select_face
from pipelines.params import FaceParams
from pipelines.records import FaceRecord


def test_all_213_jaffe_images_yield_a_face(jaffe_records, jaffe_out48):
    assert len(jaffe_out48) == len(jaffe_records) == 213
    missing = [o.raw_path for o in jaffe_out48 if not isinstance(o, FaceRecord)]
    assert missing == []
    for rec, out in zip(jaffe_records, jaffe_out48):
        assert out.raw is rec  # order kept, record carried
        assert out.detector == "mtcnn"
        assert out.det_score is not None and out.det_score >= 0.9
        assert out.face.shape == (48, 48) and out.face.dtype == np.uint8
        x0, y0, x1, y1 = out.box
        assert all(isinstance(v, int) for v in out.box)
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
        # a JAFFE face fills roughly half the frame, centred
        assert 0.3 * 256 < x1 - x0 < 0.8 * 256 and 0.3 * 256 < y1 - y0 < 0.9 * 256
        assert 80 < (x0 + x1) / 2 < 176
        assert out.face.std() > 20  # a face, not a flat patch


def test_jaffe_raw_detection_boxes_lie_in_frame_and_eyes_level_after_alignment(aligner48, jaffe_records):
    results = aligner48.find_faces([r.image for r in jaffe_records])
    for rec, res in zip(jaffe_records, results):
        det = res.detection
        assert det is not None and res.detector == "mtcnn", rec.raw_path
        x0, y0, x1, y1 = det.box
        tol = 0.05 * 256  # MTCNN's box may graze the border; the face itself is inside
        assert -tol <= x0 and -tol <= y0 and x1 <= 256 + tol and y1 <= 256 + tol, (rec.raw_path, det.box)
        assert det.eyes is not None
        for size in ((48, 48), (64, 64)):
            m = alignment_matrix(det, size, aligner48.params.margin)
            (lx, ly), (rx, ry) = (m @ np.array([x, y, 1.0]) for x, y in det.eyes)
            h, w = size
            assert abs(ly - ry) < 1e-6 * h  # eyes exactly level
            assert lx < w / 2 < rx  # one eye each side of the centre
            assert 0.15 * h < ly < 0.55 * h  # in the upper half
            assert 0.2 * w < rx - lx < 0.6 * w  # a plausible interocular distance


def test_palette_mode_images_are_read_as_gray_and_found(jaffe_paths, jaffe_out48):
    palette = [i for i, p in enumerate(jaffe_paths) if Image.open(p).mode == "P"]
    assert len(palette) == 23
    for i in palette:
        im = Image.open(jaffe_paths[i])
        arr = as_array(im)
        assert arr.ndim == 2 and arr.dtype == np.uint8
        assert np.array_equal(arr, np.asarray(im.convert("L")))
        assert isinstance(jaffe_out48[i], FaceRecord) and jaffe_out48[i].detector == "mtcnn"


def test_64x64_and_non_square_outputs(jaffe_records):
    recs = jaffe_records[::13]  # 17 images, two batch boundaries with batch_size 8
    for size in ((64, 64), (64, 48)):
        out = list(FaceAligner(FaceParams(batch_size=8), size).process(recs))
        assert [o.raw for o in out] == recs
        assert all(isinstance(o, FaceRecord) and o.face.shape == size and o.face.dtype == np.uint8 for o in out)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("degrees", [15.0, -15.0])
def test_tilted_faces_come_out_with_eyes_level_on_redetection(jaffe_records, make_record, degrees):
    """Tilt real faces by 15 degrees, align them, then find the eyes again in the 64x64 output."""
    picked = jaffe_records[3::20]  # 11 images, several subjects
    tilted = [make_record(_rotate(r.image, degrees), r.raw_path, source="jaffe") for r in picked]
    aligner = FaceAligner(FaceParams(), (64, 64))
    upright = aligner.find_faces([r.image for r in picked])
    found = aligner.find_faces([r.image for r in tilted])
    for up, res in zip(upright, found):  # the detector sees the tilt (cv2's positive angle turns counter-clockwise)
        assert res.detection is not None
        assert abs(eye_angle(res.detection.eyes) - (eye_angle(up.detection.eyes) - degrees)) < 5
    faces = list(aligner.process(tilted))
    assert all(isinstance(f, FaceRecord) for f in faces)
    # Re-detect on the aligned faces, upscaled x3 so MTCNN's landmarks are well resolved.
    redetector = MtcnnDetector("cpu", min_face_size=40, max_detect_side=None)
    big = [cv2.resize(f.face, (192, 192), interpolation=cv2.INTER_CUBIC) for f in faces]
    angles = []
    for dets in redetector.detect(big):
        det = select_face(dets, 0.8)
        assert det is not None and det.eyes is not None
        angles.append(eye_angle(det.eyes))
    assert max(abs(a) for a in angles) < 5.0, angles
    assert abs(float(np.mean(angles))) < 2.0, angles


def test_the_mean_aligned_face_is_itself_a_level_face(jaffe_out48):
    """Averaging 213 aligned faces gives a sharp face only if they are consistently aligned."""
    mean = np.stack([o.face for o in jaffe_out48]).astype(np.float64).mean(axis=0)
    big = cv2.resize(np.rint(mean).astype(np.uint8), (192, 192), interpolation=cv2.INTER_CUBIC)
    det = select_face(MtcnnDetector("cpu", min_face_size=40, max_detect_side=None).detect([big])[0], 0.9)
    assert det is not None and abs(eye_angle(det.eyes)) < 3
    (lx, ly), (rx, ry) = det.eyes
    assert abs((lx + rx) / 2 - 96) < 10  # centred
