"""Invertible 1x1 convolution (Glow): a learned channel mixing, LU-parametrised by default."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmodels.flows.base import Flow, full_precision, spatial_size


class InvertibleConv1x1(Flow):
    """y = W x at every pixel, W a C x C matrix initialised as a random rotation.

    ``lu=True`` (default): W = P L (U + diag(sign * exp(log_s))), P a fixed permutation, L unit lower
    triangular, U strictly upper triangular. log|det W| = sum(log_s): cheap and exact, and W cannot become
    singular. ``lu=False``: W is a plain parameter and log|det W| comes from slogdet in double precision (the
    float32 determinant of a 48x48 matrix loses digits).

    Autocast never touches it: a bf16 W would no longer be the matrix whose determinant is logged (and its
    inverse would not undo it), so both directions run in the input's precision.
    """

    def __init__(self, num_channels: int, lu: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.lu = lu
        rotation = torch.linalg.qr(torch.randn(num_channels, num_channels, dtype=torch.float64))[0]
        if lu:
            perm, lower, upper = torch.linalg.lu(rotation)
            diag = torch.diagonal(upper)
            self.register_buffer("perm", perm.float())
            self.register_buffer("sign_s", torch.sign(diag).float())
            self.lower = nn.Parameter(torch.tril(lower, -1).float())
            self.upper = nn.Parameter(torch.triu(upper, 1).float())
            self.log_s = nn.Parameter(torch.log(torch.abs(diag)).float())
        else:
            self.weight = nn.Parameter(rotation.float())

    def weight_matrix(self) -> Tensor:
        """The C x C mixing matrix W."""
        if not self.lu:
            return self.weight
        eye = torch.eye(self.num_channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def log_abs_det(self) -> Tensor:
        """log|det W| (a scalar)."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            w = self.weight_matrix()
            y = F.conv2d(x, w.to(x.dtype).view(self.num_channels, self.num_channels, 1, 1))
            logdet = (spatial_size(x) * self.log_abs_det()).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            w = self.weight_matrix()
            # Inverted in double precision: sampling and decode(encode(x)) round trips depend on it.
            w_inv = torch.linalg.inv(w.double()).to(y.dtype)
            x = F.conv2d(y, w_inv.view(self.num_channels, self.num_channels, 1, 1))
            logdet = (-spatial_size(y) * self.log_abs_det()).expand(y.shape[0])
        return x, logdet
