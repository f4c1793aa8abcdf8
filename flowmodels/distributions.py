"""Diagonal Gaussians: the priors of the split latents and of the top latent."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mean: Tensor, log_sd: Tensor) -> Tensor:
    """Sum over all but the batch dimension of log N(z; mean, exp(log_sd)^2): shape (N,)."""
    elementwise = -_HALF_LOG_2PI - log_sd - 0.5 * (z - mean) ** 2 * torch.exp(-2 * log_sd)
    return elementwise.flatten(1).sum(1)


def gaussian_sample(mean: Tensor, log_sd: Tensor, temperature: float = 1.0) -> Tensor:
    """mean + exp(log_sd) * temperature * eps, eps ~ N(0, I)."""
    return mean + torch.exp(log_sd) * temperature * torch.randn_like(mean)


class LabelShift(nn.Module):
    """A zero-initialised linear map from the one-hot label to per-channel offsets (N, C, 1, 1): the
    class-dependent part of a prior's mean and log-std. Zero at initialisation, so a conditional flow starts
    out identical to an unconditional one."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(num_classes, channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cond: Tensor) -> Tensor:
        # Part of a prior (a density): autocast off, so a bf16 run's priors stay in the flow's precision.
        with torch.autocast(device_type=cond.device.type, enabled=False):
            return self.linear(cond.to(self.linear.weight.dtype))[:, :, None, None]


class TopPrior(nn.Module):
    """Learned diagonal Gaussian for the last latent: per-channel mean and log-std (zero-initialised, i.e.
    N(0, I) at first), plus class-dependent offsets when the flow is conditional (Glow's class-conditional
    prior; BPLF's "class-dependent prior means")."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int | None = None):
        super().__init__()
        channels = shape[0]
        self.shape = tuple(shape)
        self.params = nn.Parameter(torch.zeros(1, 2 * channels, 1, 1))
        self.label_shift = LabelShift(num_classes, 2 * channels) if num_classes else None

    def mean_log_sd(self, n: int, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        c, h, w = self.shape
        params = self.params.expand(n, -1, h, w)
        if self.label_shift is not None:
            if cond is None:
                raise ValueError("this prior is label-conditional: pass the one-hot condition")
            params = params + self.label_shift(cond)
        return params[:, :c], params[:, c:]

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        mean, log_sd = self.mean_log_sd(z.shape[0], cond)
        return gaussian_log_prob(z, mean, log_sd)

    def sample(self, n: int, cond: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        mean, log_sd = self.mean_log_sd(n, cond)
        return gaussian_sample(mean, log_sd, temperature)
