"""From uint8 pixels to the continuous data a flow models, and back.

With n bits (8 by default, 5 allowed: Glow's CelebA-HQ setting), a pixel p in 0..255 is first reduced to
q = floor(p / 2^(8-n)) in 0..2^n-1, then mapped to the bin [q / 2^n - 0.5, (q+1) / 2^n - 0.5) of width
1/2^n inside [-0.5, 0.5). Uniform dequantisation adds u ~ U(0, 1) bins: x = (q + u) / 2^n - 0.5. The
density of x then lower-bounds the discrete likelihood of q (Theis et al. 2016), which is what bits/dim
reports (``flowmodels.bits``).
"""

from __future__ import annotations

import torch
from torch import Tensor

SUPPORTED_BITS = (5, 8)


def check_bits(n_bits: int) -> int:
    if n_bits not in SUPPORTED_BITS:
        raise ValueError(f"n_bits must be one of {SUPPORTED_BITS}, got {n_bits}")
    return n_bits


def quantize(x_uint8: Tensor, n_bits: int = 8) -> Tensor:
    """uint8 pixels (any shape) -> integer bins 0..2^n-1 (int64)."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x_uint8.dtype}")
    return torch.div(x_uint8.long(), 2 ** (8 - check_bits(n_bits)), rounding_mode="floor")


def dequantize(x_uint8: Tensor, n_bits: int = 8, noise: Tensor | None = None, dtype=torch.float32) -> Tensor:
    """uint8 pixels -> x = (q + u) / 2^n - 0.5 in [-0.5, 0.5).

    ``noise`` is u in bin units, same shape as the pixels, values in [0, 1); ``None`` draws U(0, 1). Pass
    ``torch.full_like(..., 0.5)`` for the deterministic bin centres (evaluation, encode).
    """
    q = quantize(x_uint8, n_bits).to(dtype)
    if noise is None:
        noise = torch.rand(q.shape, dtype=dtype, device=q.device)
    return (q + noise.to(dtype)) / 2**n_bits - 0.5


def bin_centres(x_uint8: Tensor, n_bits: int = 8, dtype=torch.float32) -> Tensor:
    """The deterministic dequantisation: the centre of each pixel's bin."""
    return dequantize(x_uint8, n_bits, torch.full(x_uint8.shape, 0.5, dtype=dtype, device=x_uint8.device), dtype)


def to_uint8(x: Tensor, n_bits: int = 8) -> Tensor:
    """Continuous images in [-0.5, 0.5) (e.g. samples) -> uint8 pixels 0..255, the bin each value falls in,
    scaled back to 8 bits (clamped: samples can leave the data range)."""
    q = torch.floor((x.detach().float() + 0.5) * 2**n_bits).clamp(0, 2**n_bits - 1)
    return (q * 2 ** (8 - n_bits)).to(torch.uint8)
