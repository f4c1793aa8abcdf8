"""The faces stage: RawRecord -> FaceRecord (face found, eyes levelled, cropped, gray, resized) or Quarantined.

    aligner = FaceAligner(params.data.faces, params.data.image_size)
    for out in aligner.process(records):   # one output per input, in input order
        ...                                # FaceRecord, or Quarantined(reason="no_face", stage="face")

MTCNN (facenet-pytorch's networks, batched, on the GPU when there is one) finds the face; OpenCV's Haar
cascade is the fallback. Pre-cropped records (FER2013, CK+48) are only grayed and resized unless
``FaceParams.detect_precropped``. Several faces: the largest box among those scoring at least ``min_score``.

For direct use (e.g. classifying arbitrary photos): ``detect_faces(images)`` -> per image, every face found
(largest first); ``select_face`` picks as the stage does; ``align_face(image, detection, size, margin)``.

torch, facenet-pytorch and OpenCV are imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from ..params import FaceParams
from ..records import FaceRecord, Quarantined, QuarantineReason, RawRecord
from .alignment import align_face, alignment_matrix, crop_geometry, resize_gray
from .detection import (
    MAX_DETECT_SIDE,
    MIN_FACE_FRACTION,
    Detection,
    FaceDetector,
    detect_faces,
    eye_angle,
    get_detector,
    resolve_device,
    select_face,
)
from .haar import HaarDetector
from .images import as_array, to_gray
from .mtcnn import MtcnnDetector

__all__ = [
    "FaceAligner",
    "FaceResult",
    "Detection",
    "FaceDetector",
    "MtcnnDetector",
    "HaarDetector",
    "detect_faces",
    "select_face",
    "align_face",
    "alignment_matrix",
    "crop_geometry",
    "resize_gray",
    "as_array",
    "to_gray",
    "eye_angle",
    "get_detector",
    "resolve_device",
    "MIN_FACE_FRACTION",
    "MAX_DETECT_SIDE",
    "STAGE",
]

STAGE = "face"
DETECTORS = ("mtcnn", "haar")


@dataclass(frozen=True)
class FaceResult:
    """What the stage found in one image: the chosen detection and the detector that found it (or None)."""

    detection: Detection | None
    detector: str | None
    tried: tuple[str, ...]  # the detectors run, in order
    best_rejected: float | None  # the best score below min_score, when a scored detector found only such faces


class FaceAligner:
    """Finds, aligns, crops, grays and resizes faces, batch by batch, keeping input order.

    ``process`` yields exactly one output per input: a FaceRecord, or a Quarantined with reason ``no_face``
    (stage ``face``). Quarantined records already in the stream (a reader's) pass through unchanged, so a
    reader's stream can be fed in directly.

    Settings beyond ``FaceParams`` (keyword-only, defaults chosen for speed on CPU with dataset faces, see
    bench/bench_faces.py): ``min_face_fraction`` (smallest face searched for, as a fraction of the image's
    shorter side), ``max_detect_side`` (images with a longer shorter side are downscaled for detection),
    ``pad`` ("edge" or "zero": how crops that leave the image are filled), ``workers`` (MTCNN worker threads
    on CPU; default one per CPU, at most 8).
    """

    def __init__(
        self,
        params: FaceParams | None = None,
        image_size: tuple[int, int] = (48, 48),
        *,
        min_face_fraction: float | None = None,
        max_detect_side: int | None = MAX_DETECT_SIDE,
        pad: str = "edge",
        workers: int | None = None,
    ) -> None:
        self.params = params if params is not None else FaceParams()
        p = self.params
        if p.detector not in DETECTORS:
            raise ValueError(f"faces.detector must be mtcnn or haar, got {p.detector!r}")
        if p.fallback not in (None, *DETECTORS):
            raise ValueError(f"faces.fallback must be mtcnn, haar or None, got {p.fallback!r}")
        if p.batch_size < 1:
            raise ValueError(f"faces.batch_size must be >= 1, got {p.batch_size}")
        if p.margin < 0:
            raise ValueError(f"faces.margin must be >= 0, got {p.margin}")
        if pad not in ("edge", "zero"):
            raise ValueError(f"pad must be edge or zero, got {pad!r}")
        h, w = (int(v) for v in image_size)
        if h < 1 or w < 1:
            raise ValueError(f"image_size must be positive (h, w), got {image_size}")
        self.image_size = (h, w)
        # the smallest face searched for, as a fraction of the image's shorter side: params, unless given here
        if min_face_fraction is None:
            min_face_fraction = getattr(p, "min_face_fraction", MIN_FACE_FRACTION)
        self.min_face_fraction = float(min_face_fraction)
        self.max_detect_side = max_detect_side
        self.pad = pad
        self.workers = workers
        self._device = p.device
        resolve_device(p.device)  # fail early on an impossible device
        self._detectors: dict[str, FaceDetector] = {}

    # -------------------------------------------------------------------------------------- detection

    def detector(self, name: str) -> FaceDetector:
        det = self._detectors.get(name)
        if det is None:
            options: dict[str, Any] = {
                "min_face_fraction": self.min_face_fraction,
                "max_detect_side": self.max_detect_side,
            }
            if name == "mtcnn" and self.workers is not None:
                options["workers"] = self.workers
            det = get_detector(name, self._device, **options)
            self._detectors[name] = det
        return det

    @property
    def detector_chain(self) -> tuple[str, ...]:
        p = self.params
        return (p.detector,) if p.fallback in (None, p.detector) else (p.detector, p.fallback)

    def find_faces(self, images: Sequence[Any]) -> list[FaceResult]:
        """The face the stage would use in each image: main detector on all, the fallback on the misses."""
        arrays = [as_array(im) for im in images]
        chosen: list[Detection | None] = [None] * len(arrays)
        found_by: list[str | None] = [None] * len(arrays)
        best_rejected: list[float | None] = [None] * len(arrays)
        tried: list[tuple[str, ...]] = [()] * len(arrays)
        todo = list(range(len(arrays)))
        for name in self.detector_chain:
            if not todo:
                break
            found = self.detector(name).detect([arrays[i] for i in todo])
            left = []
            for i, dets in zip(todo, found):
                tried[i] = tried[i] + (name,)
                face = select_face(dets, self.params.min_score)
                if face is None:
                    scores = [d.score for d in dets if d.score is not None]
                    if scores and (best_rejected[i] is None or max(scores) > best_rejected[i]):
                        best_rejected[i] = max(scores)
                    left.append(i)
                else:
                    chosen[i], found_by[i] = face, name
            todo = left
        return [FaceResult(chosen[i], found_by[i], tried[i], best_rejected[i]) for i in range(len(arrays))]

    # ---------------------------------------------------------------------------------------- records

    def process(self, records: Iterable[RawRecord | Quarantined]) -> Iterator[FaceRecord | Quarantined]:
        """One FaceRecord or Quarantined per input, in input order; works in batches of params.batch_size."""
        it = iter(records)
        while True:
            batch = list(islice(it, self.params.batch_size))
            if not batch:
                return
            yield from self.process_batch(batch)

    def process_batch(self, batch: Sequence[RawRecord | Quarantined]) -> list[FaceRecord | Quarantined]:
        out: list[FaceRecord | Quarantined | None] = [None] * len(batch)
        need: list[int] = []
        for i, rec in enumerate(batch):
            if isinstance(rec, Quarantined):
                out[i] = rec
            elif not isinstance(rec, RawRecord):
                raise TypeError(f"FaceAligner.process expects RawRecord or Quarantined, got {type(rec).__name__}")
            elif rec.precropped and not self.params.detect_precropped:
                out[i] = self._pass_through(rec)
            else:
                need.append(i)
        if need:
            results = self.find_faces([batch[i].image for i in need])  # type: ignore[union-attr]
            for i, res in zip(need, results):
                rec = batch[i]
                assert isinstance(rec, RawRecord)
                out[i] = self._aligned(rec, res) if res.detection is not None else self._no_face(rec, res)
        return out  # type: ignore[return-value]

    def all_faces(self, rec: RawRecord) -> list[FaceRecord]:
        """Every face of one image the stage accepts (score >= min_score), largest first, each aligned like the
        shards' faces: the main detector's faces, or the fallback's when the main one finds none; [] when no
        detector finds one. A precropped record is its own single face (unless faces.detect_precropped)."""
        if rec.precropped and not self.params.detect_precropped:
            return [self._pass_through(rec)]
        image = as_array(rec.image)
        for name in self.detector_chain:
            found = self.detector(name).detect([image])[0]
            faces = sorted(
                (d for d in found if d.score is None or d.score >= self.params.min_score),
                key=lambda d: d.area,
                reverse=True,
            )
            if faces:
                return [self._aligned(rec, FaceResult(d, name, (name,), None)) for d in faces]
        return []

    def _pass_through(self, rec: RawRecord) -> FaceRecord:
        h, w = rec.image.shape[:2]
        face = resize_gray(rec.image, self.image_size)
        return FaceRecord(raw=rec, face=face, detector="none", det_score=None, box=(0, 0, int(w), int(h)))

    def _aligned(self, rec: RawRecord, res: FaceResult) -> FaceRecord:
        det = res.detection
        assert det is not None and res.detector is not None
        face = align_face(rec.image, det, self.image_size, self.params.margin, pad=self.pad)
        box = record_box(det, rec.image.shape)
        return FaceRecord(raw=rec, face=face, detector=res.detector, det_score=det.score, box=box)

    def _no_face(self, rec: RawRecord, res: FaceResult) -> Quarantined:
        h, w = rec.image.shape[:2]
        detail = f"no face found in the {w}x{h} image by {' then '.join(res.tried)}"
        if res.best_rejected is not None:
            detail += f" (best MTCNN score {res.best_rejected:.3f} < min_score {self.params.min_score})"
        return Quarantined.of_record(rec, QuarantineReason.NO_FACE, detail, STAGE)


def record_box(det: Detection, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A detection's box as whole pixels inside the image: x0, y0 floored, x1, y1 ceiled, clipped to the frame."""
    h, w = shape[0], shape[1]
    x0, y0, x1, y1 = det.box
    bx0 = min(max(int(math.floor(x0)), 0), w - 1)
    by0 = min(max(int(math.floor(y0)), 0), h - 1)
    bx1 = min(max(int(math.ceil(x1)), bx0 + 1), w)
    by1 = min(max(int(math.ceil(y1)), by0 + 1), h)
    return bx0, by0, bx1, by1
