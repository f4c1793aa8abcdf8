"""Coupling layers: additive (NICE), affine (Glow) and BPLF's bi-parallel linear coupling (DLF with K parts).

All take a conditioner factory ``make(in_channels, out_channels)`` (``flowmodels.conditioners``) and pass
the condition through to it, so the same classes serve unconditional and emotion-conditional flows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmodels.conditioners import ConditionerFactory
from flowmodels.distributions import LabelShift
from flowmodels.flows.base import Flow, zero_logdet

# Glow's stable scale: s = sigmoid(h + 2) lies in (0, 1), is about 0.88 when the zero-initialised conditioner
# outputs h = 0, and can neither explode (exp(h) can) nor change sign. log s = logsigmoid(h + 2) exactly,
# without the log(sigmoid()) round trip that underflows for very negative h.
SCALE_OFFSET = 2.0


def stable_scale(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(s, log s) with s = sigmoid(logits + 2)."""
    shifted = logits + SCALE_OFFSET
    return torch.sigmoid(shifted), F.logsigmoid(shifted)


def per_sample_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


class AdditiveCoupling(Flow):
    """NICE: x = (x_a, x_b), y = (x_a, x_b + t(x_a)). Volume-preserving (log-determinant 0)."""

    def __init__(self, num_channels: int, make_conditioner: ConditionerFactory):
        super().__init__()
        self.split_at = num_channels // 2
        self.conditioner = make_conditioner(self.split_at, num_channels - self.split_at)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, : self.split_at], x[:, self.split_at :]
        y_b = x_b + self.conditioner(x_a, cond)
        return torch.cat([x_a, y_b], dim=1), zero_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y_a, y_b = y[:, : self.split_at], y[:, self.split_at :]
        x_b = y_b - self.conditioner(y_a, cond)
        return torch.cat([y_a, x_b], dim=1), zero_logdet(y)


class AffineCoupling(Flow):
    """Glow: y_a = x_a, y_b = (x_b + t) * s with (log-scale logits, t) = g(x_a) and s = sigmoid(logits + 2)."""

    def __init__(self, num_channels: int, make_conditioner: ConditionerFactory):
        super().__init__()
        self.split_at = num_channels // 2
        self.transformed = num_channels - self.split_at
        self.conditioner = make_conditioner(self.split_at, 2 * self.transformed)

    def _scale_shift(self, x_a: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        h = self.conditioner(x_a, cond)
        scale, log_scale = stable_scale(h[:, : self.transformed])
        return scale, log_scale, h[:, self.transformed :]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, : self.split_at], x[:, self.split_at :]
        scale, log_scale, shift = self._scale_shift(x_a, cond)
        y_b = (x_b + shift) * scale
        return torch.cat([x_a, y_b], dim=1), per_sample_sum(log_scale)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y_a, y_b = y[:, : self.split_at], y[:, self.split_at :]
        scale, log_scale, shift = self._scale_shift(y_a, cond)
        x_b = y_b / scale - shift
        return torch.cat([y_a, x_b], dim=1), -per_sample_sum(log_scale)


def part_sizes(num_channels: int, parts: int) -> list[int]:
    """Channel counts of ``parts`` nearly equal groups (the first ones one larger when it does not divide)."""
    if parts < 2:
        raise ValueError(f"a bi-parallel/dynamic linear coupling needs at least 2 parts, got {parts}")
    if parts > num_channels:
        raise ValueError(f"cannot split {num_channels} channels into {parts} parts")
    base, extra = divmod(num_channels, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


class BiParallelLinearCoupling(Flow):
    """BPLF's coupling (equations 3-6, 3-7), generalised to K parts as in Dynamic Linear Flow.

    x = (x_1, ..., x_K) along channels; every part gets an affine map, none is left as the identity:

        y_k = s_k * x_k + mu_k,   (s_k, mu_k) = g_{k-1}(x_{k-1}),  s_k = sigmoid(. + 2)

    with the first part's (s_1, mu_1) coming from a learned constant (the paper's "x_0 initialised to the
    default value"; a network of a constant is a constant, so it is stored directly, one value per channel and
    pixel when ``spatial_shape`` is given), plus a class-dependent offset in the conditional model (equation
    3-8: the label enters every scale and shift). The Jacobian is block lower-triangular with diagonal blocks
    diag(s_k): log|det| = sum of log s_k. The forward pass computes all g's at once (each reads an input part);
    the inverse is sequential: x_1 first, then each x_k from the already recovered x_{k-1} (equation 3-7).
    ``parts=2`` is BPLF's bi-parallel case.
    """

    def __init__(
        self,
        num_channels: int,
        make_conditioner: ConditionerFactory,
        parts: int = 2,
        spatial_shape: tuple[int, int] | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.sizes = part_sizes(num_channels, parts)
        first = self.sizes[0]
        h, w = spatial_shape if spatial_shape is not None else (1, 1)
        # logits of s_1 and mu_1; zero: s_1 = sigmoid(2), mu_1 = 0 like the other parts at initialisation
        self.first_params = nn.Parameter(torch.zeros(1, 2 * first, h, w))
        self.first_label_shift = LabelShift(num_classes, 2 * first) if num_classes else None
        self.conditioners = nn.ModuleList(
            make_conditioner(self.sizes[k - 1], 2 * self.sizes[k]) for k in range(1, parts)
        )

    def _first_scale_shift(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        params = self.first_params
        if self.first_label_shift is not None:
            if cond is None:
                raise ValueError("this coupling is label-conditional: pass the one-hot condition")
            params = params + self.first_label_shift(cond)
        first = self.sizes[0]
        scale, log_scale = stable_scale(params[:, :first])
        # the parameters broadcast over the batch (and over pixels when stored per channel only)
        pixels_per_value = (x.shape[2] * x.shape[3]) // (log_scale.shape[2] * log_scale.shape[3])
        logdet = (per_sample_sum(log_scale) * pixels_per_value).expand(x.shape[0])
        return scale, params[:, first:], logdet

    def _scale_shift(self, k: int, previous: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        h = self.conditioners[k - 1](previous, cond)
        scale, log_scale = stable_scale(h[:, : self.sizes[k]])
        return scale, h[:, self.sizes[k] :], per_sample_sum(log_scale)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        xs = torch.split(x, self.sizes, dim=1)
        scale, shift, logdet = self._first_scale_shift(x, cond)
        ys = [xs[0] * scale + shift]
        for k in range(1, len(self.sizes)):
            scale, shift, ld = self._scale_shift(k, xs[k - 1], cond)
            ys.append(xs[k] * scale + shift)
            logdet = logdet + ld
        return torch.cat(ys, dim=1), logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ys = torch.split(y, self.sizes, dim=1)
        scale, shift, logdet = self._first_scale_shift(y, cond)
        xs = [(ys[0] - shift) / scale]
        for k in range(1, len(self.sizes)):
            scale, shift, ld = self._scale_shift(k, xs[k - 1], cond)
            xs.append((ys[k] - shift) / scale)
            logdet = logdet + ld
        return torch.cat(xs, dim=1), -logdet
