"""``Flow``: an invertible map x -> y that also returns log|det dy/dx|, one value per sample.

Every layer in ``flowmodels.layers`` implements this interface, so layers compose, are tested the same way
(invertibility, and log-determinant against a brute-force autograd Jacobian) and can be swapped. The
condition (a one-hot label, shape ``(N, num_classes)``, or ``None``) is always passed explicitly; layers that
do not use it ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class Flow(nn.Module):
    """Base class. Subclasses implement both directions.

    ``forward(x, cond=None) -> (y, logdet)`` with ``logdet = log|det dy/dx|`` of shape ``(N,)``;
    ``inverse(y, cond=None) -> (x, logdet)`` with ``logdet = log|det dx/dy|`` (the negative of the forward one
    at the corresponding point).
    """

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


def full_precision(x: Tensor):
    """A context in which autocast is off on x's device: what computes a density or a log-determinant runs
    in it, so bf16 autocast (``train.bf16``) speeds up the conditioners' convolutions and nothing else."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def zero_logdet(x: Tensor) -> Tensor:
    """A per-sample log-determinant of zero, on x's device and dtype."""
    return x.new_zeros(x.shape[0])


class FlowSequence(Flow):
    """Flows applied one after another; log-determinants add up."""

    def __init__(self, flows: Iterable[Flow]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = zero_logdet(x)
        for flow in self.flows:
            x, ld = flow(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = zero_logdet(y)
        for flow in reversed(self.flows):
            y, ld = flow.inverse(y, cond)
            logdet = logdet + ld
        return y, logdet

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self):
        return iter(self.flows)

    def __getitem__(self, i: int) -> Flow:
        return self.flows[i]


def spatial_size(x: Tensor) -> int:
    """H*W of an (N, C, H, W) tensor: per-channel parameters count this many times in a log-determinant."""
    return x.shape[2] * x.shape[3]


__all__ = ["Flow", "FlowSequence", "zero_logdet", "spatial_size"]
