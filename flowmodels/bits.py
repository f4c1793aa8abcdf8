"""Bits per dimension, in the two conventions the project reports (see ../shared/docs/flows.md).

Standard (Glow, rosinality's glow-pytorch): data x in [-0.5, 0.5) with n-bit bins of width 1/2^n,

    bpd = (-log p(x) + D ln 2^n) / (D ln 2).

BPLF paper, equation (4-1): data x' in [-1, 1] (8 bits: bins of width 1/128),

    bpd = -(log p'(x') / D - ln 128) / ln 2.

Both are the discrete log-likelihood of the same n-bit pixels in bits per dimension, so they agree when the
densities are taken consistently: x' = 2x is a linear map with log|det| = D ln 2, so
log p'(x') = log p(x) - D ln 2, and substituting gives the standard form back. For n bits in general the
[-1, 1] bin width is 2/2^n and (4-1)'s ln 128 becomes ln 2^(n-1).
"""

from __future__ import annotations

import math

from torch import Tensor


def bits_per_dim(log_px: Tensor, num_dims: int, n_bits: int = 8) -> Tensor:
    """Standard convention: ``log_px`` is the log-density of data in [-0.5, 0.5)^D, per image."""
    return (-log_px + num_dims * n_bits * math.log(2)) / (num_dims * math.log(2))


def bits_per_dim_bplf(log_px_pm1: Tensor, num_dims: int, n_bits: int = 8) -> Tensor:
    """BPLF equation (4-1): ``log_px_pm1`` is the log-density of data in [-1, 1]^D, per image; 8 bits -> ln 128."""
    return -(log_px_pm1 / num_dims - (n_bits - 1) * math.log(2)) / math.log(2)


def nats_to_bits_per_dim(nll_nats: Tensor, num_dims: int) -> Tensor:
    """A discrete negative log-likelihood in nats per image -> bits per dimension."""
    return nll_nats / (num_dims * math.log(2))
