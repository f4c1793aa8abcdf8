"""Split (Glow's multi-scale factor-out): half the channels leave the flow as a latent z with a learned
Gaussian prior conditioned on the half that stays (and on the label, when there is one)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowmodels.conditioners import ZeroConv2d
from flowmodels.distributions import LabelShift, gaussian_log_prob, gaussian_sample
from flowmodels.flows.base import full_precision


class Split(nn.Module):
    """(N, C, H, W) -> kept (N, C - C//2, H, W) and z (N, C//2, H, W).

    p(z | kept, label) = N(mean, exp(log_sd)^2) with (mean, log_sd) = ZeroConv2d(kept) [+ LabelShift(label)].
    Not a ``Flow``: it changes the dimension of what goes on, so it returns the log-density of the factored
    out part instead of a log-determinant. The split itself is a coordinate selection (log-determinant 0).
    """

    def __init__(self, num_channels: int, num_classes: int | None = None):
        super().__init__()
        self.z_channels = num_channels // 2
        self.kept_channels = num_channels - self.z_channels
        self.prior = ZeroConv2d(self.kept_channels, 2 * self.z_channels)
        self.label_shift = LabelShift(num_classes, 2 * self.z_channels) if num_classes else None

    def mean_log_sd(self, kept: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        with full_precision(kept):  # a density: never under autocast (one small conv: little to gain anyway)
            params = self.prior(kept)
        if self.label_shift is not None:
            if cond is None:
                raise ValueError("this split's prior is label-conditional: pass the one-hot condition")
            params = params + self.label_shift(cond).to(params.dtype)
        return params[:, : self.z_channels], params[:, self.z_channels :]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (kept, z, log p(z | kept, cond)) with the log-density of shape (N,)."""
        kept, z = x[:, : self.kept_channels], x[:, self.kept_channels :]
        mean, log_sd = self.mean_log_sd(kept, cond)
        return kept, z, gaussian_log_prob(z, mean, log_sd)

    def inverse(
        self, kept: Tensor, z: Tensor | None = None, cond: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Put z back beside kept; with ``z=None`` draw it from the prior at the given temperature."""
        if z is None:
            mean, log_sd = self.mean_log_sd(kept, cond)
            z = gaussian_sample(mean, log_sd, temperature)
        return torch.cat([kept, z.to(kept.dtype)], dim=1)
