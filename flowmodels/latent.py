"""Latent-space tools: class mean latents and expression transfer (paper 002, section IV-D).

Transfer: for a target expression c, the difference between the mean latent of class c and the mean latent of
all other training images, z_avg^c - z_avg^other, is added to a test image's latent, and the sum decoded:
x' = decode(z_test + (z_avg^c - z_avg^other)). Works on every latent level (the list returned by
``encode``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowmodels.model import FlowModel, Labels


@dataclass
class ClassLatentMeans:
    """Per class c and latent level l: ``class_means[c][l]`` = mean z over class c, ``other_means[c][l]`` =
    mean z over every image not of class c. ``counts[c]`` images of class c went in; a class without images
    (or with every image) has no direction and may not be a transfer target."""

    class_means: list[list[Tensor]]
    other_means: list[list[Tensor]]
    counts: list[int]

    def direction(self, target: int) -> list[Tensor]:
        """z_avg^target - z_avg^other, per latent level."""
        if not 0 < self.counts[target] < sum(self.counts):
            raise ValueError(f"class {target} needs at least one image in it and one outside it to be a target")
        return [m - o for m, o in zip(self.class_means[target], self.other_means[target])]


@torch.no_grad()
def class_mean_latents(
    model: FlowModel, images: Tensor, labels: Tensor, num_classes: int, batch_size: int = 256
) -> ClassLatentMeans:
    """Mean latents per class and of the complement of each class, over (uint8 or continuous) images, in
    batches. A class-conditional model encodes each image with its own label; an unconditional one without.
    Classes without images are allowed (a split need not hold every emotion): their means are zeros and
    ``direction`` refuses them."""
    labels = labels.long()
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    device = next(model.parameters()).device
    sums: list[Tensor] | None = None
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
        latents = model.encode(x, y if model.conditional else None)
        one_hot = torch.nn.functional.one_hot(y, num_classes).to(latents[0].dtype)
        batch_sums = [torch.einsum("nc,n...->c...", one_hot, z) for z in latents]
        sums = batch_sums if sums is None else [s + b for s, b in zip(sums, batch_sums)]
    if sums is None:
        raise ValueError("no images")
    total = [s.sum(dim=0) for s in sums]
    n_total = int(counts.sum())
    class_means, other_means = [], []
    for c in range(num_classes):
        n_c = int(counts[c])
        class_means.append([s[c] / max(n_c, 1) for s in sums])
        other_means.append([(t - s[c]) / max(n_total - n_c, 1) for s, t in zip(sums, total)])
    return ClassLatentMeans(class_means, other_means, counts.tolist())


@torch.no_grad()
def transfer_expression(
    model: FlowModel,
    x: Tensor,
    target: int,
    means: ClassLatentMeans,
    source_labels: Labels = None,
    strength: float = 1.0,
) -> Tensor:
    """decode(encode(x) + strength * (z_avg^target - z_avg^other)): x rendered with the target expression.

    A class-conditional model encodes with ``source_labels`` and decodes with ``target``; an unconditional
    one (the paper's setting) needs no labels. Returns continuous images (``model.to_uint8`` for pixels).
    """
    latents = model.encode(x, source_labels if model.conditional else None)
    moved = [z + strength * d.to(z) for z, d in zip(latents, means.direction(target))]
    return model.decode(moved, target if model.conditional else None)
