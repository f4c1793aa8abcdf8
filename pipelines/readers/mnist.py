"""MNIST in its original idx format (``train-images-idx3-ubyte.gz`` and friends), gzipped or not.

The idx header is: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension. ``read_idx`` checks all of it against the file, so a truncated download, a
renamed file of the wrong kind or an HTML error page saved under the right name fails loudly instead of
turning into a wrong-shaped array.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# idx type codes -> numpy dtypes (multi-byte types are big-endian in the format)
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> file stem prefix, as the files are distributed
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
MNIST_SHAPE = (28, 28)
MNIST_COUNTS = {"train": 60000, "test": 10000}


class IdxFormatError(ValueError):
    """A file is not a valid idx file (bad magic number, or its size disagrees with its header)."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an idx file (``.gz`` is decompressed), with the shape its header declares.

    Raises ``IdxFormatError`` when the magic number is wrong or the payload is not exactly the size the header
    declares, ``FileNotFoundError`` when the file is missing.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4:
        raise IdxFormatError(f"{path}: {len(data)} bytes, too short for an idx header")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(f"{path}: bad idx magic number {data[:4].hex()} (expected 0000<type><ndim>)")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise IdxFormatError(f"{path}: header declares {ndim} dimensions but the file ends inside the header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header_end
    if payload != expected:
        raise IdxFormatError(
            f"{path}: header declares shape {shape} of {dtype} ({expected} bytes) but the payload is {payload} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    # native byte order, writable (np.frombuffer on bytes is read-only)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {root}")


def load_mnist(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images as uint8 ``(N, 28, 28)`` and labels as int64 ``(N,)`` in 0..9.

    ``root`` is the folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; ``split`` is
    ``"train"`` (60000 images) or ``"test"`` (10000). Checks that images and labels agree in count, that the
    images are 28x28, and that labels are digits.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(_SPLIT_PREFIX)}, got {split!r}")
    root = Path(root)
    prefix = _SPLIT_PREFIX[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != MNIST_SHAPE:
        raise IdxFormatError(f"MNIST {split} images: expected uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise IdxFormatError(f"MNIST {split}: {images.shape[0]} images but labels of shape {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise IdxFormatError(f"MNIST {split}: labels outside 0..9 ({labels.min()}..{labels.max()})")
    return images, labels
