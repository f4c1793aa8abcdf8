"""``EmotionJudge``: the expression classifier that referees the scoreboard, a mini-Xception (Arriaga et al. 2017).

Layout, as in the paper: a stem of two 3x3 convolutions (BN, ReLU), then one residual stage per entry of
``widths``: two depthwise-separable 3x3 convolutions (each BN, the first followed by ReLU), a 3x3 stride-2
max-pool, plus a strided 1x1 convolution (BN) on the shortcut; then global average pooling. The paper ends with a
3x3 convolution to the classes before the pooling; here the pooled vector goes through dropout and a linear head,
so the pooled vector (``features``) is a class-agnostic embedding the scoreboard can use as FID uses Inception's.
With the paper's widths (16, 32, 64, 128) the stem has its 8 channels (``widths[0] // 2``).

Convolutions are padded ("same"), so every stage halves the side: 48 -> 24 -> 12 -> 6 -> 3, 64 -> 32 -> 16 -> 8 -> 4.
Activations are channels-last (NHWC) inside: speed only, same numbers up to summation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.seeds import derive_seed, seeded

# Input scaling of the paper (x / 255 - 0.5) * 2: pixels in [-1, 1], whatever the data set's brightness.
_CENTRE, _SPREAD = 0.5, 0.5


class SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 convolution (no bias: a BN follows)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualStage(nn.Module):
    """One mini-Xception module: two separable convolutions and a stride-2 max-pool, plus a strided 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            SeparableConv(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            SeparableConv(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        # The strided 1x1 convolution as "every other pixel, then 1x1": the same function, but torch 2.14's CPU
        # kernel for a stride-2 1x1 convolution on channels-last input with 2..7 input channels corrupts memory in
        # its backward pass (measured: segfaults for a stem of 4 channels), and this way never calls it.
        return self.main(x) + self.shortcut(x[:, :, ::2, ::2])


class EmotionJudge(nn.Module):
    """Logits over ``num_classes`` emotions for gray faces (N, 1, H, W): uint8, or float in [0, 1]."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, widths: Sequence[int], dropout: float):
        super().__init__()
        channels, height, width = (int(v) for v in image_shape)
        if not widths:
            raise ValueError("widths: at least one stage")
        if min(height, width) < 2 ** len(widths):
            raise ValueError(f"{height}x{width} images are too small for {len(widths)} stride-2 stages")
        self.image_shape = (channels, height, width)
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        self.dropout_rate = float(dropout)
        stem = max(self.widths[0] // 2, 1)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        stages, previous = [], stem
        for w in self.widths:
            stages.append(ResidualStage(previous, w))
            previous = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.head = nn.Linear(previous, self.num_classes)
        self.to(memory_format=torch.channels_last)  # the convolution weights too: ~2x a step on the CPU (measured)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    @property
    def config(self) -> dict[str, Any]:
        """``build_judge(**config)`` rebuilds this architecture."""
        return {
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "dropout": self.dropout_rate,
        }

    def standardise(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        # channels-last: on the CPU the 3x3 max-pool and batch norm run ~10x and ~2x faster in NHWC (measured)
        return ((x - _CENTRE) / _SPREAD).contiguous(memory_format=torch.channels_last)

    def features(self, x: Tensor) -> Tensor:
        """(N, feature_dim): the globally pooled last stage, before dropout and the head."""
        return self.pool(self.stages(self.stem(self.standardise(x)))).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


def build_judge(
    image_shape: Sequence[int], num_classes: int, widths: Sequence[int], dropout: float, seed: int | None = None
) -> EmotionJudge:
    """An ``EmotionJudge``; with ``seed`` its initial weights are drawn from (seed, "model") and the global RNG is
    left as it was, so two calls with the same arguments give the same weights."""
    if seed is None:
        return EmotionJudge(image_shape, num_classes, widths, dropout)
    with seeded(derive_seed(seed, "model")):
        return EmotionJudge(image_shape, num_classes, widths, dropout)
