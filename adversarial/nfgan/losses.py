"""The five losses of the NFGAN paper's section 4, each exactly its formula, averaged over the batch.

Images are float (N, C, H, W) in the generator's scale [-1, 1]; indices below are the paper's (n: column, m: row).

* ``perceptual_loss`` (eq. 2): for each feature map phi_l of a fixed network, (1 / (W_l H_l)) sum_{n,m}
  ||phi_{l,n,m}(x~) - phi_{l,n,m}(y)||_2^2: the squared error over channels, averaged over positions, summed over
  the layers the extractor returns (the paper uses one, VGG-Face's fifth convolution). Algorithm 1 writes the same
  sum with 1 / (2 W_l H_l); eq. 2's factor is used and the weight absorbs the 1/2.
* ``symmetry_loss`` (eq. 3): (1 / (H W / 2)) sum_{n <= W/2} sum_m |x~_{n,m} - x~_{W-(n-1),m}|, on the pixels or (the
  variant section 4.2 recommends under uneven lighting) on their Laplacian; zero on a mirror-symmetric image.
* ``discriminator_loss`` (eq. 4): -log Dis(g) - log(1 - Dis(x~)), ``generator_adversarial_loss`` (eq. 5):
  -log Dis(x~); both take the discriminator's logits a (Dis = sigmoid(a)) and average over its patch map, computing
  -log sigmoid(a) = softplus(-a) and -log(1 - sigmoid(a)) = softplus(a), which never overflow.
* ``identity_loss`` (eq. 6): sum over the identity network's last two layers of (1 / (W_l H_l)) sum_{n,m}
  |phi_{l,n,m}(x~) - phi_{l,n,m}(x)|: the L1 distance over channels, averaged over positions; against the *input*.
* ``pixel_loss`` (eq. 7): (1 / (W H)) sum_{n,m} |x~_{n,m} - y_{n,m}|.

A feature extractor is any module (or callable) mapping images in [-1, 1] to a tensor (N, C, h, w) or (N, D) (a
vector is a 1x1 map), or to a list of such tensors (one per layer). The paper's VGG-Face and Light CNN weights
cannot be downloaded here; ``adversarial.nfgan.identity`` trains the identity network in the pipeline, and
``ExternalFeatures`` adapts a network trained on another scale and size (the emotion judge's ``features``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FeatureExtractor = Callable[[Tensor], "Tensor | Sequence[Tensor]"]


def _layers(features: Tensor | Sequence[Tensor]) -> list[Tensor]:
    layers = [features] if isinstance(features, Tensor) else list(features)
    if not layers:
        raise ValueError("the feature extractor returned no layer")
    return [f if f.dim() == 4 else f.reshape(f.shape[0], -1, 1, 1) for f in layers]


def perceptual_loss(generated: Tensor, target: Tensor, extractor: FeatureExtractor) -> Tensor:
    """Eq. 2 on every layer ``extractor`` returns, summed; the target's features carry no gradient."""
    with torch.no_grad():
        wanted = [f.detach() for f in _layers(extractor(target))]  # detach: an extractor may return its input
    total = generated.new_zeros(())
    for got, want in zip(_layers(extractor(generated)), wanted, strict=True):
        total = total + (got - want).pow(2).sum(dim=1).mean()
    return total


def identity_loss(generated: Tensor, inputs: Tensor, extractor: FeatureExtractor) -> Tensor:
    """Eq. 6: the L1 distance of the generated face's identity features to the *input* face's, summed over layers."""
    with torch.no_grad():
        wanted = [f.detach() for f in _layers(extractor(inputs))]
    total = generated.new_zeros(())
    for got, want in zip(_layers(extractor(generated)), wanted, strict=True):
        total = total + (got - want).abs().sum(dim=1).mean()
    return total


def laplacian(images: Tensor) -> Tensor:
    """The 4-neighbour Laplacian (up + down + left + right - 4 x) of every channel, edges replicated. Written as
    sums of pairs rather than a convolution so that a mirror-symmetric image gives an exactly symmetric result
    (a + b == b + a in floating point; a convolution's summation order is not mirror-invariant)."""
    p = F.pad(images, (1, 1, 1, 1), mode="replicate")
    vertical = p[..., :-2, 1:-1] + p[..., 2:, 1:-1]
    horizontal = p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    return (vertical + horizontal) - 4 * images


def symmetry_loss(images: Tensor, space: str) -> Tensor:
    """Eq. 3: the mean absolute difference between the left half and the mirrored right half (``space``:
    "pixel", the equation, or "laplacian", section 4.2's illumination-robust variant)."""
    if space == "laplacian":
        images = laplacian(images)
    elif space != "pixel":
        raise ValueError(f"symmetry space must be 'pixel' or 'laplacian', got {space!r}")
    half = images.shape[-1] // 2
    return (images[..., :half] - images.flip(-1)[..., :half]).abs().mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Eq. 4: -log Dis(g) - log(1 - Dis(x~)), each term averaged over the batch and the patch map."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Eq. 5: -log Dis(x~), averaged over the batch and the patch map (the non-saturating form)."""
    return F.softplus(-fake_logits).mean()


def pixel_loss(generated: Tensor, target: Tensor) -> Tensor:
    """Eq. 7: the mean absolute pixel difference."""
    return (generated - target).abs().mean()


class ExternalFeatures(nn.Module):
    """A network trained on another input convention as a feature extractor for these losses: images in [-1, 1]
    are mapped to [0, 1] (what ``EmotionJudge.features`` takes as floats) and, when ``image_size`` is given,
    resized to it (bilinear, antialiased) before ``getattr(network, method)`` runs. The network is frozen."""

    def __init__(self, network: nn.Module, method: str = "features", image_size: Sequence[int] | None = None):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.method = method
        self.image_size = None if image_size is None else tuple(int(v) for v in image_size)

    def train(self, mode: bool = True) -> ExternalFeatures:
        super().train(mode)
        self.network.eval()  # a fixed measuring network: its BN statistics never move
        return self

    def forward(self, images: Tensor) -> Tensor | Sequence[Tensor]:
        x = (images + 1.0) / 2.0
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        return getattr(self.network, self.method)(x)
