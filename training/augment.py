"""Seeded, on-the-fly image augmentation for uint8 batches (N, C, H, W): the operations of BiCoGAN's table
(affine rotation, crop, horizontal flip, gamma contrast, affine scale, affine shear), any subset, composed.

Every image's parameters are drawn from ``training.seeds`` streams of (seed, step), so an augmented batch is a
pure function of (seed, step) like everything else in the loop (exact resume holds with augmentation on).
The geometric operations are one affine warp per image (``affine_grid`` + bilinear ``grid_sample``, border
padding: no black corners for the discriminator to learn); gamma acts on intensities in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.seeds import generator


@dataclass(frozen=True)
class Augmentation:
    """Ranges to draw from uniformly per image; None (or 0 for ``flip``) turns an operation off.

    rotate: degrees (BiCoGAN: -50..30); crop: fraction of each side cut away at random (0..0.2) and the rest
    resized back; flip: probability of a horizontal flip; gamma: exponent range (``GammaContrast 2`` in the
    paper: e.g. 0.5..2); scale: zoom factor range (1.0..1.5); shear: shear factor range (0..0.2)."""

    rotate: tuple[float, float] | None = None
    crop: tuple[float, float] | None = None
    flip: float = 0.0
    gamma: tuple[float, float] | None = None
    scale: tuple[float, float] | None = None
    shear: tuple[float, float] | None = None

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.rotate, self.crop, self.gamma, self.scale, self.shear)) or self.flip > 0

    def __call__(self, images: Tensor, seed: int, step: int) -> Tensor:
        """Augmented uint8 images, same shape; the identity when nothing is enabled."""
        if not self.enabled:
            return images
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("augment uint8 images of shape (N, C, H, W)")
        n = images.shape[0]
        g = generator(seed, "augment", step)

        def draw(bounds: tuple[float, float] | None, neutral: float) -> Tensor:
            if bounds is None:
                return torch.full((n,), neutral, dtype=torch.float64)
            low, high = bounds
            return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)

        angle = draw(self.rotate, 0.0) * math.pi / 180
        zoom = draw(self.scale, 1.0)
        shear = draw(self.shear, 0.0)
        cut = draw(self.crop, 0.0)
        flips = torch.rand(n, generator=g, dtype=torch.float64) < self.flip
        gammas = draw(self.gamma, 1.0)
        # crop: keep a (1 - cut) window at a random position, resized to the full image = zoom by 1/(1-cut)
        keep = 1.0 - cut
        offset = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * cut[
            :, None
        ]  # window centre in [-cut, cut]
        x = images.float() / 255.0
        geometric = any(v is not None for v in (self.rotate, self.scale, self.shear, self.crop)) or bool(flips.any())
        if geometric:
            cos, sin = torch.cos(angle), torch.sin(angle)
            # output -> input coordinates: rotation, shear, 1/zoom, crop window, flip (x mirrored)
            a = torch.stack([torch.stack([cos, -sin + shear * cos], -1), torch.stack([sin, cos + shear * sin], -1)], -2)
            a = a * (keep / zoom)[:, None, None]
            a[:, :, 0] = a[:, :, 0] * torch.where(flips, -1.0, 1.0)[:, None]
            theta = torch.cat([a, offset[:, :, None]], dim=2).float()
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.gamma is not None:
            x = x.clamp(0, 1) ** gammas.float()[:, None, None, None]
        return (x * 255.0).round().clamp(0, 255).to(torch.uint8)
