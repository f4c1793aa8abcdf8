"""Squeeze: trade spatial resolution for channels, (N, C, H, W) -> (N, 4C, H/2, W/2). Volume-preserving."""

from __future__ import annotations

from torch import Tensor

from flowmodels.flows.base import Flow, zero_logdet


class Squeeze(Flow):
    """Each 2x2 block of pixels becomes 4 channels (channel index c*4 + 2*row + col, as in Glow and
    rosinality's glow-pytorch). A permutation of coordinates: log-determinant 0."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)
        return y, zero_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n, c, h, w = y.shape
        x = y.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, h * 2, w * 2)
        return x, zero_logdet(y)
