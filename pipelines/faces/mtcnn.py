"""``MtcnnDetector``: facenet-pytorch's MTCNN networks (P-, R-, O-net, weights shipped in the wheel), run by a
batched driver of our own (``_mtcnn_batch``) that follows facenet-pytorch's ``detect_face`` stage by stage: same
networks, thresholds, pyramid factor, NMS thresholds, box regression and landmark decoding. What differs, for
speed on CPU (facenet's own ``detect`` does ~40 JAFFE images/s here, one by one):

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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from pipelines.faces.detection import MAX_DETECT_SIDE, MIN_FACE_FRACTION, Detection, resolve_device
from pipelines.faces.images import as_array, downscale

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


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


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
            small, fx, fy = downscale(arr, self.max_detect_side)
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
            return _mtcnn_batch(
                batch, self._nets, self.min_face(batch[0].shape), self.thresholds, self.factor, self.device
            )

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
    global _THREADS_LOCK
    _THREADS_LOCK = threading.Lock()


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
