"""What the training and evaluation loops consume: ``ImageSet``, a labelled set of uint8 images held in memory.

Two sources:

- ``load_shard_split``: one split of an EmotionSet shard set (``pipelines.shards``), streamed batch by batch
  into one preallocated array (the images are the ``pixels`` or ``pixels_svd`` column, the labels the 7-emotion
  ``label`` column, see ``pipelines.labels.EMOTIONS``);
- ``load_mnist_split``: MNIST from its idx files (``pipelines.readers.mnist``), zero-padded to 32x32 so that a
  3-level multi-scale flow can squeeze it three times (28 is not a multiple of 2**3); the BPLF paper's Table 3
  reports MNIST alongside the EmotionSet.

The sets are small enough to hold (EmotionSet: tens of thousands of 48x48 bytes; MNIST: 60,000 x 32 x 32 =
61 MB), so the loops index them directly: no DataLoader, no workers, and every batch is a pure function of
(seed, step) (``flowmodels.training``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipelines.labels import EMOTIONS
from pipelines.params import SvdParams

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) with optional int64 labels (N,), a name for tracking
    ("emotionset/<version>/train", "mnist/test") and the class names the labels index."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    class_names: tuple[str, ...] | None
    ids: list[str] | None = None  # the shard rows' ids, when the set comes from shards

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be a uint8 tensor (N, C, H, W)")
        if self.labels is not None:
            if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
                raise ValueError(
                    f"{self.name}: labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
                )
            if self.labels.dtype != torch.int64:
                self.labels = self.labels.long()
            if self.labels.numel() and int(self.labels.min()) < 0:
                raise ValueError(f"{self.name}: negative labels")
            if self.class_names is not None and self.labels.numel() and int(self.labels.max()) >= len(self.class_names):
                raise ValueError(f"{self.name}: labels beyond the {len(self.class_names)} class names")
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
        if self.ids is not None and len(self.ids) != self.images.shape[0]:
            raise ValueError(f"{self.name}: {len(self.ids)} ids for {self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def subset(self, index, name: str | None = None) -> ImageSet:
        """The images (and labels, ids) at ``index`` (a slice, an index tensor or a list)."""
        if isinstance(index, slice):
            ids = None if self.ids is None else self.ids[index]
        else:
            index = torch.as_tensor(index, dtype=torch.long)
            ids = None if self.ids is None else [self.ids[i] for i in index.tolist()]
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, name or self.name, self.class_names, ids)

    def fingerprint(self) -> dict:
        """Name, count, shape and a sha256 of the pixels and labels: what a checkpoint records to refuse resuming
        on other data."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.images.numpy()).data)
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels.numpy()).data)
        return {
            "name": self.name,
            "count": len(self),
            "shape": list(self.image_shape),
            "labelled": self.labels is not None,
            "sha256": digest.hexdigest(),
        }


def load_shard_split(
    version_dir, split: str, column: str = "pixels", sources: Sequence[str] | None = None, batch_rows: int = 4096
) -> ImageSet:
    """One split ("train", "val", "test") of a shard set, optionally only some sources, as an ``ImageSet``.

    ``version_dir``: a shard-set folder (with ``manifest.json``), or a shards root whose ``current`` file names
    one. ``column``: "pixels" or "pixels_svd" (``model.pixel_column``). Rows are streamed batch by batch into one
    preallocated array (the Parquet metadata gives the row count first). Images come out (N, 1, H, W) uint8,
    labels int64 in 0..6 (``class_names`` = ``pipelines.labels.EMOTIONS``), in the shard files' stable order.
    An empty split gives an empty set (image size from the manifest).
    """
    from pipelines.shards import decode_pixels, resolve_shard_set, shard_files

    if column not in ("pixels", "pixels_svd"):
        raise ValueError(f"column must be 'pixels' or 'pixels_svd', got {column!r}")
    vdir = resolve_shard_set(Path(version_dir))
    files = shard_files(vdir, [split], list(sources) if sources is not None else None)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    name = f"emotionset/{vdir.name}/{split}"
    manifest = vdir / "manifest.json"
    size = json.loads(manifest.read_text()).get("image_size") if manifest.exists() else None

    images: np.ndarray | None = None
    labels = np.empty(total, dtype=np.int64)
    ids: list[str] = []
    filled = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(
            batch_size=batch_rows, columns=[column, "label", "height", "width", "id"]
        ):
            n = batch.num_rows
            if n == 0:
                continue
            heights = np.unique(batch.column("height").to_numpy())
            widths = np.unique(batch.column("width").to_numpy())
            if len(heights) != 1 or len(widths) != 1:
                raise ValueError(f"{f}: images of several sizes in one shard set ({heights} x {widths})")
            h, w = int(heights[0]), int(widths[0])
            if images is None:
                images = np.empty((total, 1, h, w), dtype=np.uint8)
            elif images.shape[2:] != (h, w):
                raise ValueError(f"{f}: {h}x{w} images, others are {images.shape[2]}x{images.shape[3]}")
            images[filled : filled + n, 0] = decode_pixels(batch.column(column), h, w)
            labels[filled : filled + n] = batch.column("label").to_numpy(zero_copy_only=False)
            ids.extend(batch.column("id").to_pylist())
            filled += n
    if filled != total:
        raise RuntimeError(f"{vdir}: read {filled} rows where the Parquet metadata promised {total}")
    if images is None:
        h, w = (int(size[0]), int(size[1])) if size else (0, 0)
        images = np.empty((0, 1, h, w), dtype=np.uint8)
    if total and (labels.min() < 0 or labels.max() >= len(EMOTIONS)):
        raise ValueError(f"{vdir}: labels outside 0..{len(EMOTIONS) - 1}")
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), name, EMOTIONS, ids)


def pad_images(images: np.ndarray, pad_to: int) -> np.ndarray:
    """Zero-pad (N, H, W) images to (N, pad_to, pad_to), centred (the odd pixel, if any, bottom/right)."""
    n, h, w = images.shape
    if pad_to < h or pad_to < w:
        raise ValueError(f"cannot pad {h}x{w} images to {pad_to}")
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    out = np.zeros((n, pad_to, pad_to), dtype=images.dtype)
    out[:, top : top + h, left : left + w] = images
    return out


def load_mnist_split(
    root,
    split: str,
    pad_to: int | None = 32,
    column: str = "pixels",
    svd: SvdParams | None = None,
) -> ImageSet:
    """MNIST's "train" (60,000) or "test" (10,000) split from the idx files in ``root`` as an ``ImageSet``.

    The 28x28 digits are zero-padded to ``pad_to`` x ``pad_to`` (default 32, two black pixels on every side):
    a flow with L levels squeezes the image L times, so H and W must be multiples of 2**L, and 28 only allows
    L <= 2; 32 allows the L=3 of the paper's Table 3. The padding is exactly the digits' own background (0), but
    it adds 240 constant dimensions the model learns to predict almost for free, so bits/dim at 32x32 are *not*
    the same number as at 28x28 (typically lower: the cheap border is averaged in); report the size with it.
    ``pad_to=None`` or 28 keeps 28x28.

    ``column="pixels_svd"`` gives what the ``_svd`` variants train on, like the shards' column of that name:
    every digit's singular values truncated (``pipelines.svd``, before padding) as ``svd`` says (the settings'
    ``data.svd``, passed down: required for this column). Labels int64 0..9, class names "0".."9".
    """
    from pipelines.readers.mnist import load_mnist

    if split not in ("train", "test"):
        raise ValueError(f"MNIST has the splits 'train' and 'test', got {split!r}")
    if column not in ("pixels", "pixels_svd"):
        raise ValueError(f"column must be 'pixels' or 'pixels_svd', got {column!r}")
    images, labels = load_mnist(Path(root), split)
    name = f"mnist/{split}"
    if column == "pixels_svd":
        from pipelines.svd import truncate_singular_values

        if svd is None:
            raise ValueError("column 'pixels_svd' needs the SVD settings (data.svd) to truncate MNIST with")
        images = truncate_singular_values(images, rank=svd.rank, energy=svd.energy)
        name += f"/svd-{'rank' if svd.rank is not None else 'energy'}{svd.rank if svd.rank is not None else svd.energy}"
    if pad_to is not None and pad_to != images.shape[1]:
        images = pad_images(images, int(pad_to))
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(images[:, None])),
        torch.from_numpy(labels.astype(np.int64)),
        name,
        MNIST_CLASSES,
    )


MNIST_VAL_IMAGES = 5000  # MNIST has no validation split: the last 5,000 training digits serve as one


def load_mnist_partition(
    root,
    split: str,
    pad_to: int | None = 32,
    column: str = "pixels",
    val_images: int = MNIST_VAL_IMAGES,
    svd: SvdParams | None = None,
) -> ImageSet:
    """MNIST's "train" (all but the last ``val_images`` training digits), "val" (those) or "test" split, as
    the training assets, ``train_main`` and the benchmarks all split it."""
    if split == "test":
        return load_mnist_split(root, "test", pad_to=pad_to, column=column, svd=svd)
    if split not in ("train", "val"):
        raise ValueError(f"MNIST splits: train, val (last {val_images} of train), test; got {split!r}")
    full = load_mnist_split(root, "train", pad_to=pad_to, column=column, svd=svd)
    cut = len(full) - val_images
    part = slice(None, cut) if split == "train" else slice(cut, None)
    return full.subset(part, full.name.replace("mnist/train", f"mnist/{split}"))
