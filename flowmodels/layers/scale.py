"""A constant elementwise scaling y = factor * x: the change of data range between bits/dim conventions."""

from __future__ import annotations

import math

from torch import Tensor

from flowmodels.flows.base import Flow


class ConstantScale(Flow):
    """y = factor * x; log|det dy/dx| = D ln|factor| with D the number of elements per sample."""

    def __init__(self, factor: float):
        super().__init__()
        if factor == 0:
            raise ValueError("factor must be non-zero")
        self.factor = float(factor)

    def _logdet(self, x: Tensor, factor: float) -> Tensor:
        dims = x[0].numel()
        return x.new_full((x.shape[0],), dims * math.log(abs(factor)))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x * self.factor, self._logdet(x, self.factor)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y / self.factor, self._logdet(y, 1.0 / self.factor)
