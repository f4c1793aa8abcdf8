"""Perceptual and exact hashes of aligned faces, and Hamming distances between perceptual hashes.

``perceptual_hash(faces)``: a 63-bit DCT hash (pHash family) per face, as a non-negative int64. The 8x8 lowest
frequencies of the face's 2-D DCT-II are taken straight from the full-resolution face (a matrix product with the
first eight cosine basis rows, for every face of a batch at once: no per-image resize), the DC term is dropped
(so a brightness shift changes nothing) and each of the 63 AC coefficients gives one bit: above their median or
not. Low frequencies survive JPEG re-encoding, resizing and mild blur, so copies land within a few bits; the
median split makes every hash hold exactly 31 ones, so distances between hashes are even.

``pixel_digest(pixels)``: a 128-bit BLAKE2b digest of one face's pixel bytes (exact duplicates: identical pixels).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

HASH_SIDE = 8  # 8x8 lowest DCT frequencies, DC dropped: 63 bits
HASH_BITS = HASH_SIDE * HASH_SIDE - 1


@lru_cache(maxsize=8)
def _dct_rows(n: int) -> np.ndarray:
    """The first HASH_SIDE DCT-II basis rows over n samples, (HASH_SIDE, n) float32."""
    x = np.arange(n)
    u = np.arange(HASH_SIDE)[:, None]
    return np.cos(np.pi * (2 * x + 1) * u / (2 * n)).astype(np.float32)


def low_frequencies(faces: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 faces -> (N, 8, 8) float32 lowest DCT-II coefficients (unnormalised)."""
    if faces.ndim != 3:
        raise ValueError(f"expected (N, H, W) faces, got shape {faces.shape}")
    _, h, w = faces.shape
    n = len(faces)
    rows, cols = _dct_rows(h), _dct_rows(w)
    # two plain 2-D matrix products (one GEMM each) rather than N small batched ones: ~10x faster on CPU
    across = (faces.reshape(n * h, w).astype(np.float32) @ cols.T).reshape(n, h, HASH_SIDE)
    return (
        (across.transpose(0, 2, 1).reshape(n * HASH_SIDE, h) @ rows.T)
        .reshape(n, HASH_SIDE, HASH_SIDE)
        .transpose(0, 2, 1)
    )


_WEIGHTS = (1 << np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)


def perceptual_hash(faces: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 faces -> (N,) int64 63-bit perceptual hashes (see the module docstring)."""
    coefficients = low_frequencies(faces).reshape(len(faces), -1)[:, 1:]  # drop DC
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    return (bits.astype(np.uint64) @ _WEIGHTS).astype(np.int64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between int64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)))


def pixel_digest(pixels: bytes) -> bytes:
    """The 16-byte digest of one face's pixel bytes (the shards' ``pixels`` value)."""
    return hashlib.blake2b(pixels, digest_size=16).digest()
