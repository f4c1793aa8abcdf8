"""Activation normalisation (Glow): a per-channel affine map initialised from the first batch it sees."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowmodels.flows.base import Flow, spatial_size


class ActNorm(Flow):
    """y = (x + loc) * exp(log_scale), per channel.

    Data-dependent initialisation: the first forward pass (or an explicit ``initialize(x)``) sets loc and
    log_scale so that the batch comes out with zero mean and unit variance per channel. The "initialised" flag is
    a registered buffer, so it travels in the state dict: loading a checkpoint into a fresh model does not
    re-initialise (a plain Python attribute would, silently, on the first batch after loading).

    The scale is stored as its logarithm: the log-determinant is then a plain sum and the scale can never
    change sign or reach zero.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set loc/log_scale from a batch (N, C, H, W) so it is normalised per channel; mark initialised."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # Under torch.compile the model must already be initialised (the benchmark and the training loop run one
        # eager batch first); skipping the check there keeps the graph free of a data-dependent branch.
        if not torch.compiler.is_compiling() and not bool(self.initialized):
            self.initialize(x)
        y = (x + self.loc) * torch.exp(self.log_scale)
        logdet = (spatial_size(x) * self.log_scale.sum()).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = y * torch.exp(-self.log_scale) - self.loc
        logdet = (-spatial_size(y) * self.log_scale.sum()).expand(y.shape[0])
        return x, logdet
