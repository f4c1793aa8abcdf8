"""Face detectors behind one tiny interface: ``detect(images) -> list[list[Detection]]``.

Two detectors:

* ``MtcnnDetector``: facenet-pytorch's MTCNN networks (P-, R-, O-net, weights shipped in the wheel), run by
  a batched driver of our own (``_mtcnn_batch``) that follows facenet-pytorch's ``detect_face`` stage by stage:
  same networks, thresholds, pyramid factor, NMS thresholds, box regression and landmark decoding. What
  differs, for speed on CPU (facenet's own ``detect`` does ~40 JAFFE images/s here, one by one):

  - R-/O-net candidates are cropped with one ``torchvision.ops.roi_align`` call per stage (2x2 bilinear
    samples per output pixel) instead of one ``interpolate(mode="area")`` call per candidate box, facenet's
    main CPU cost. Candidates that run off the image are zero-padded, as in the original MTCNN (facenet
    stretches their in-image part instead).
  - The pyramid is resized as uint8 with antialiased bilinear interpolation (torch's vectorised path) rather
    than float area; gray images stay one channel until the networks' input; the nets run channels_last
    (their ceil-mode max pooling is several times faster so).
  - The smallest face searched for is a fraction of the image's shorter side (``min_face_fraction``), not a
    fixed 20 px: the pyramid's first level then has 12/fraction px on its shorter side whatever the image
    size. Images whose shorter side exceeds ``max_detect_side`` are downscaled before detection; boxes and
    landmarks are scaled back to the input's pixels.
  - On CPU a batch is split across worker threads that each run torch single-threaded (``workers``).
    torch's own OpenMP threads synchronise at barriers between the many small ops; when another process
    takes a core that collapses throughput (JAFFE on 2 cores: ~150 images/s alone, 15-30 beside one busy
    process), where worker threads degrade gracefully (~200 alone, ~100 beside one busy process).

  ``tests/faces`` checks that boxes, scores and eye landmarks agree with facenet's ``MTCNN.detect``.
* ``HaarDetector``: OpenCV's frontal-face Haar cascade, plus ``haarcascade_eye.xml`` inside the face box to
  find the two eyes for alignment. It gives no confidence (``score=None``).

torch, torchvision, facenet-pytorch and cv2 are imported when a detector is built, not when this module is
imported, so ``import pipelines.faces`` stays cheap.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

# Defaults chosen on JAFFE (256x256, faces ~55% of the frame) and the real photos in tests/faces; see
# bench/bench_faces.py. A face smaller than this fraction of the image's shorter side is not searched for.
MIN_FACE_FRACTION = 0.12
# Images whose shorter side is above this are downscaled (area interpolation) before detection.
MAX_DETECT_SIDE = 320
# Never search for faces smaller than this many pixels of the (possibly downscaled) image: P-net's window
# is 12 px, so going lower only upsamples.
MIN_FACE_PIXELS = 12.0
# On CPU a batch is split across this many Python worker threads, each running torch single-threaded
# (default: the CPUs this process may use, at most 8), in sub-batches of at least MIN_WORKER_BATCH images.
MAX_WORKERS = 8
MIN_WORKER_BATCH = 4
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults
MTCNN_FACTOR = 0.709  # facenet-pytorch's default pyramid step
# Bilinear samples per axis per output pixel when R-/O-net candidates are cropped (roi_align); -1 = adaptive
# (ceil(box/size), a true area average, ~3x slower on CPU). See _crop.
CROP_SAMPLING = 2

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

    def scaled(self, fx: float, fy: float | None = None) -> "Detection":
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


# --------------------------------------------------------------------------------------------- images


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


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """(image resized for detection, fx, fy): multiply detection coordinates by fx, fy to get back."""
    factor = detection_scale(image.shape, max_side)
    if factor == 1.0:
        return image, 1.0, 1.0
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, w / size[0], h / size[1]


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"face detection device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"face detection device {device!r} asked for, but torch sees no CUDA GPU")
    return device


# ---------------------------------------------------------------------------------------------- MTCNN


class MtcnnDetector:
    """MTCNN (facenet-pytorch's networks and weights), batched over same-size images.

    Images of different sizes are grouped by their (downscaled) size; each group runs as one batch.
    """

    name = "mtcnn"

    def __init__(
        self,
        device: str = "auto",
        *,
        min_face_fraction: float = MIN_FACE_FRACTION,
        min_face_size: float | None = None,
        max_detect_side: int | None = MAX_DETECT_SIDE,
        thresholds: Sequence[float] = MTCNN_THRESHOLDS,
        factor: float = MTCNN_FACTOR,
        max_batch: int = 64,
        workers: int | None = None,
    ) -> None:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        if not 0 < min_face_fraction < 1:
            raise ValueError(f"min_face_fraction must be in (0, 1), got {min_face_fraction}")
        self.device = resolve_device(device)
        self.min_face_fraction = float(min_face_fraction)
        self.min_face_size = None if min_face_size is None else float(min_face_size)
        self.max_detect_side = max_detect_side
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.max_batch = int(max_batch)
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self._pool = None
        self._pool_pid = 0
        # channels_last: on CPU, R-/O-net's ceil-mode max pooling is several times faster in NHWC than NCHW
        # (same numbers out); the nets take NCHW input and convert below.
        nets = (PNet(), RNet(), ONet())
        self._nets = [net.eval().to(self.device).to(memory_format=torch.channels_last) for net in nets]

    def min_face(self, shape: tuple[int, ...]) -> float:
        """Smallest face searched for, in pixels of the image as detection sees it."""
        if self.min_face_size is not None:
            return self.min_face_size
        return max(MIN_FACE_PIXELS, self.min_face_fraction * min(shape[0], shape[1]))

    def detect(self, images: Sequence[Any]) -> list[list[Detection]]:
        arrays = [as_array(im) for im in images]
        results: list[list[Detection]] = [[] for _ in arrays]
        groups: dict[tuple[int, ...], list[int]] = {}
        prepared: list[np.ndarray] = []
        back: list[tuple[float, float]] = []
        for i, arr in enumerate(arrays):
            small, fx, fy = _downscale(arr, self.max_detect_side)
            prepared.append(small)
            back.append((fx, fy))
            groups.setdefault(small.shape, []).append(i)  # same size and same channel count
        workers = self.workers if self.device == "cpu" else 1
        chunks: list[list[int]] = []
        for idx in groups.values():
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start : start + self.max_batch]
                # split for the worker threads, but keep sub-batches big enough to batch well
                parts = max(1, min(workers, len(chunk) // MIN_WORKER_BATCH))
                step = -(-len(chunk) // parts)
                chunks.extend(chunk[k : k + step] for k in range(0, len(chunk), step))

        def run(chunk: list[int]) -> list[list[Detection]]:
            batch = [prepared[i] for i in chunk]
            return _mtcnn_batch(batch, self._nets, self.min_face(batch[0].shape), self.thresholds, self.factor, self.device)

        if workers <= 1:  # torch's own intra-op threads
            found_all = [run(chunk) for chunk in chunks]
        elif len(chunks) == 1:  # one small batch: this thread, torch single-threaded (see the module notes)
            with _torch_threads(1):
                found_all = [run(chunks[0])]
        else:
            with _torch_threads(1):
                found_all = list(self._executor().map(_single_threaded(run), chunks))
        for chunk, found in zip(chunks, found_all):
            for i, dets in zip(chunk, found):
                results[i] = [d.scaled(*back[i]) if back[i] != (1.0, 1.0) else d for d in dets]
        return results

    def _executor(self):
        # A pool made before a fork has no threads in the child: make a new one there.
        if self._pool is None or self._pool_pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mtcnn")
            self._pool_pid = os.getpid()
        return self._pool


_THREADS_LOCK = threading.Lock()


def _reset_after_fork() -> None:
    global _THREADS_LOCK, _CACHE_LOCK
    _THREADS_LOCK = threading.Lock()
    _CACHE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to n for the block (process-wide), restored after it."""
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _single_threaded(fn):
    def call(arg):
        import torch

        torch.set_num_threads(1)  # this worker thread's own OpenMP setting
        return fn(arg)

    return call


def _mtcnn_batch(images, nets, minsize, thresholds, factor, device) -> list[list[Detection]]:
    """Run the three MTCNN stages on same-size uint8 images (HxW or HxWx3); facenet-pytorch's algorithm."""
    import torch
    from torch.nn.functional import interpolate
    from torchvision.ops import batched_nms, roi_align

    pnet, rnet, onet = nets
    n = len(images)
    cl = torch.channels_last
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(images))  # N, H, W[, 3] uint8, all gray or all RGB
        if batch.ndim == 3:  # gray stays one channel through resizing and cropping (a third of that work)
            batch = batch[:, :, :, None]
        # NCHW view of NHWC memory, i.e. channels_last. On CPU the pyramid is resized as uint8 (torch's
        # vectorised antialiased-bilinear path, ~4x faster than float area); on a GPU, as float.
        pix = batch.permute(0, 3, 1, 2)
        pix = pix.to(device).float() if device != "cpu" else pix
        imgs = pix.float().contiguous()  # NCHW float for the candidate crops
        h, w = imgs.shape[2:]

        def net_input(x):  # normalised, three channels (a gray one repeated), channels_last
            return ((x.float() - 127.5) * 0.0078125).expand(-1, 3, -1, -1).contiguous(memory_format=cl)

        # Stage 1: P-net over the scale pyramid.
        m = 12.0 / minsize
        minl = min(h, w) * m
        scales = []
        scale = m
        while minl >= 12:
            scales.append(scale)
            scale *= factor
            minl *= factor
        boxes_all, inds_all = [], []
        for scale in scales:
            data = interpolate(pix, size=(int(h * scale + 1), int(w * scale + 1)), mode="bilinear", antialias=True)
            reg, probs = pnet(net_input(data))
            boxes, inds = _generate_boxes(reg, probs[:, 1], scale, thresholds[0])
            if len(boxes):
                keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.5)
                boxes_all.append(boxes[keep])
                inds_all.append(inds[keep])
        if not boxes_all:
            return [[] for _ in range(n)]
        boxes = torch.cat(boxes_all)
        inds = torch.cat(inds_all)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[keep], inds[keep]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * regw,
                boxes[:, 1] + boxes[:, 6] * regh,
                boxes[:, 2] + boxes[:, 7] * regw,
                boxes[:, 3] + boxes[:, 8] * regh,
                boxes[:, 4],
            ],
            dim=1,
        )
        boxes = _rerec(boxes)

        # Stage 2: R-net on 24x24 crops of the candidates.
        crops = _crop(imgs, boxes, inds, 24, roi_align)
        reg, probs = rnet(net_input(crops))
        score = probs[:, 1]
        ok = score > thresholds[1]
        boxes = torch.cat([boxes[ok, :4], score[ok, None]], dim=1)
        inds, reg = inds[ok], reg[ok]
        if not len(boxes):
            return [[] for _ in range(n)]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds, reg = boxes[keep], inds[keep], reg[keep]
        boxes = _rerec(_bbreg(boxes, reg))

        # Stage 3: O-net on 48x48 crops: final score, box regression, five landmarks.
        crops = _crop(imgs, boxes, inds, 48, roi_align)
        reg, points, probs = onet(net_input(crops))
        score = probs[:, 1]
        ok = score > thresholds[2]
        boxes = torch.cat([boxes[ok, :4], score[ok, None]], dim=1)
        inds, reg, points = inds[ok], reg[ok], points[ok]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = bw * points[:, :5] + boxes[:, 0:1] - 1
        py = bh * points[:, 5:] + boxes[:, 1:2] - 1
        boxes = _bbreg(boxes, reg)
        boxes_np = boxes.cpu().numpy().astype(np.float64)
        pts_np = torch.stack([px, py], dim=2).cpu().numpy().astype(np.float64)
        inds_np = inds.cpu().numpy()

    out: list[list[Detection]] = [[] for _ in range(n)]
    for b in range(n):
        sel = np.flatnonzero(inds_np == b)
        if not len(sel):
            continue
        sel = sel[_nms_min(boxes_np[sel], 0.7)]
        for k in sel:
            x0, y0, x1, y1, s = boxes_np[k]
            le, re = pts_np[k, 0], pts_np[k, 1]
            if le[0] > re[0]:
                le, re = re, le
            eyes = ((float(le[0]), float(le[1])), (float(re[0]), float(re[1])))
            out[b].append(Detection(box=(float(x0), float(y0), float(x1), float(y1)), score=float(s), eyes=eyes))
    return out


def _generate_boxes(reg, probs, scale, thresh):
    """P-net's output map -> candidate boxes (x0, y0, x1, y1, score, 4 regression offsets), image indices."""
    import torch

    stride, cell = 2, 12
    mask = probs >= thresh
    where = mask.nonzero()
    inds = where[:, 0]
    score = probs[mask]
    offsets = reg.permute(1, 0, 2, 3)[:, mask].permute(1, 0)
    xy = where[:, 1:].to(reg.dtype).flip(1)
    q1 = ((stride * xy + 1) / scale).floor()
    q2 = ((stride * xy + cell) / scale).floor()
    return torch.cat([q1, q2, score[:, None], offsets], dim=1), inds


def _rerec(boxes):
    """Boxes -> squares with the same centre and the longer side."""
    import torch

    boxes = boxes.clone()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _bbreg(boxes, reg):
    """Apply a stage's box regression (offsets relative to the box size)."""
    import torch

    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, :4] = boxes[:, :4] + reg * torch.stack([w, h, w, h], dim=1)
    return out


def _crop(imgs, boxes, inds, size, roi_align):
    """Every candidate box cropped from its image and resampled to size x size, in one call.

    MTCNN boxes are in 1-based inclusive pixel indices (facenet-pytorch crops ``img[y0-1:y1, x0-1:x1]``), i.e.
    the region from pixel edge x0-1 to pixel edge x1; ``aligned=True`` makes roi_align use pixel edges.
    Its adaptive sampling averages ceil(box/size)^2 bilinear samples per output pixel (an area resample).
    Parts of a box outside the image read as zero, as in the original MTCNN's padding.
    """
    import torch

    rois = torch.cat([inds[:, None].to(boxes.dtype), boxes[:, :2] - 1, boxes[:, 2:4]], dim=1)
    return roi_align(imgs, rois, (size, size), spatial_scale=1.0, sampling_ratio=CROP_SAMPLING, aligned=True)


def _nms_min(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """MTCNN's last NMS: overlap measured against the smaller box ("Min"); returns kept row indices."""
    x0, y0, x1, y1, s = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(s, kind="stable")
    keep = []
    while order.size:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        overlap = iw * ih / np.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


# ----------------------------------------------------------------------------------------------- Haar


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
        gray, fx, fy = _downscale(to_gray(image), self.max_detect_side)
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
            det = MtcnnDetector(resolved, **options) if name == "mtcnn" else HaarDetector(**options)
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
