"""BiCoGAN's three networks for gray faces, DCGAN-style, at any size whose sides are multiples of 2^len(widths).

The seed paper gives no shapes; the original BiCoGAN paper used the BiGAN/DCGAN families (an MLP for MNIST, a
DCGAN-like convolutional stack for CelebA at 64x64). Adapted to 48x48 (and 64x64) gray faces, with ``widths``
the channels from the image upwards, default (64, 128, 256):

* ``Generator`` G(z, c): [z, one-hot c] -> a linear layer to a (256, H/8, W/8) map (6x6 at 48, 8x8 at 64; BN,
  ReLU) -> fractional-strided 4x4/2 convolutions 256 -> 128 -> 64 (BN, ReLU) -> 1 channel with tanh: images in
  [-1, 1], each convolution exactly doubling the side.
* ``Encoder`` E(x) -> (z_hat, c_logits): 4x4/2 convolutions 1 -> 64 -> 128 -> 256 (BN on all but the first,
  leaky ReLU 0.2), flattened, one linear layer to z_dim + num_classes numbers, split into z_hat and the label
  logits. z_hat is unbounded like the N(0, I) prior it should match.
* ``Discriminator`` D(x, z, c) -> one logit per tuple: an x path (the encoder's convolutions, no batch norm so a
  batch's real and generated tuples do not share statistics), a latent path on [z, c] (a two-layer MLP of
  ``latent_width``), and a joint layer of ``joint_width`` on both, as BiGAN's and ALI's joint discriminators.
  c is one-hot on both sides: the generator's condition, and the encoder's most likely class (straight-through,
  ``training.encoded_label``).

Weights start from DCGAN's N(0, 0.02) (batch-norm scales N(1, 0.02)); ``build_seeded_bicogan`` draws them from
a seed. ``config`` rebuilds the networks: ``build_bicogan(**networks.config)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.seeds import derive_seed, seeded

LEAK = 0.2  # DCGAN's leaky-ReLU slope


def _check_shape(image_shape: Sequence[int], widths: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {shape}")
    if not widths:
        raise ValueError("widths needs at least one stage")
    side = 2 ** len(widths)
    if shape[1] % side or shape[2] % side:
        raise ValueError(
            f"image sides {shape[1:]} must be multiples of 2^len(widths) = {side} ({len(widths)} stride-2 stages)"
        )
    return shape  # type: ignore[return-value]


def _conv_stack(channels: int, widths: Sequence[int], batch_norm: bool) -> nn.Sequential:
    """4x4/2 convolutions halving the side per stage; batch norm (when on) on all but the first, as DCGAN."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        norm = batch_norm and i > 0
        layers.append(nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.LeakyReLU(LEAK))
        channels = width
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """G(z, c): latent codes (N, z_dim) and one-hot (or soft) labels (N, num_classes) -> images in [-1, 1]."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, z_dim: int, widths: Sequence[int]):
        super().__init__()
        c, h, w = _check_shape(image_shape, widths)
        self.image_shape, self.num_classes, self.z_dim = (c, h, w), int(num_classes), int(z_dim)
        down = 2 ** len(widths)
        self.base = (widths[-1], h // down, w // down)
        self.project = nn.Linear(z_dim + num_classes, widths[-1] * self.base[1] * self.base[2], bias=False)
        self.project_norm = nn.BatchNorm2d(widths[-1])
        layers: list[nn.Module] = []
        stages = list(reversed(widths))
        for i, width in enumerate(stages):
            last = i == len(stages) - 1
            out = c if last else stages[i + 1]
            layers.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        if z.shape[1] != self.z_dim or c.shape[1] != self.num_classes or z.shape[0] != c.shape[0]:
            raise ValueError(
                f"G takes z (N, {self.z_dim}) and c (N, {self.num_classes}), got {tuple(z.shape)}, {tuple(c.shape)}"
            )
        h = self.project(torch.cat([z, c.to(z.dtype)], dim=1)).view(-1, *self.base)
        return self.upsample(torch.relu(self.project_norm(h)))


class Encoder(nn.Module):
    """E(x): images in [-1, 1] (N, C, H, W) -> (z_hat (N, z_dim), label logits (N, num_classes))."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, z_dim: int, widths: Sequence[int]):
        super().__init__()
        c, h, w = _check_shape(image_shape, widths)
        self.image_shape, self.num_classes, self.z_dim = (c, h, w), int(num_classes), int(z_dim)
        self.widths = tuple(int(v) for v in widths)
        self.features = _conv_stack(c, widths, batch_norm=True)
        flat = widths[-1] * (h // 2 ** len(widths)) * (w // 2 ** len(widths))
        self.head = nn.Linear(flat, z_dim + num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"E takes images (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        out = self.head(self.features(x).flatten(1))
        return out[:, : self.z_dim], out[:, self.z_dim :]


class Discriminator(nn.Module):
    """D(x, z, c): a joint tuple -> one logit each (N,); sigmoid(logit) = the probability that it is real
    (an (x, E(x)) tuple) rather than generated (a (G(z, c), [z, c]) tuple)."""

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        z_dim: int,
        widths: Sequence[int],
        latent_width: int,
        joint_width: int,
    ):
        super().__init__()
        c, h, w = _check_shape(image_shape, widths)
        self.image_shape, self.num_classes, self.z_dim = (c, h, w), int(num_classes), int(z_dim)
        self.x_path = _conv_stack(c, widths, batch_norm=False)
        flat = widths[-1] * (h // 2 ** len(widths)) * (w // 2 ** len(widths))
        self.latent_path = nn.Sequential(
            nn.Linear(z_dim + num_classes, latent_width),
            nn.LeakyReLU(LEAK),
            nn.Linear(latent_width, latent_width),
            nn.LeakyReLU(LEAK),
        )
        self.joint = nn.Sequential(
            nn.Linear(flat + latent_width, joint_width), nn.LeakyReLU(LEAK), nn.Linear(joint_width, 1)
        )

    def forward(self, x: Tensor, z: Tensor, c: Tensor) -> Tensor:
        n = x.shape[0]
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"D takes images (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        if z.shape != (n, self.z_dim) or c.shape != (n, self.num_classes):
            raise ValueError(
                f"D takes z ({n}, {self.z_dim}) and c ({n}, {self.num_classes}), got {tuple(z.shape)}, {tuple(c.shape)}"
            )
        latent = self.latent_path(torch.cat([z, c.to(z.dtype)], dim=1))
        return self.joint(torch.cat([self.x_path(x).flatten(1), latent], dim=1)).squeeze(1)


class BiCoGANNetworks(nn.Module):
    """G, E and D together (what a training checkpoint holds); ``config`` rebuilds them."""

    def __init__(self, generator: Generator, encoder: Encoder, discriminator: Discriminator, config: dict[str, Any]):
        super().__init__()
        self.generator, self.encoder, self.discriminator = generator, encoder, discriminator
        self.config = dict(config)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.generator.image_shape

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: convolution and linear weights N(0, 0.02), biases 0, batch-norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_bicogan(
    image_shape: Sequence[int],
    num_classes: int,
    z_dim: int,
    widths: Sequence[int],
    latent_width: int,
    joint_width: int,
) -> BiCoGANNetworks:
    """G, E and D for images of ``image_shape`` (C, H, W) and ``num_classes`` labels, DCGAN-initialised from the
    global RNG (``build_seeded_bicogan`` for a seed). Defaults live in ``pipelines.model_params.BicoganParams``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if z_dim < 1 or latent_width < 1 or joint_width < 1 or any(int(w) < 1 for w in widths):
        raise ValueError("z_dim, widths, latent_width and joint_width must be positive")
    shape = _check_shape(image_shape, widths)
    widths = tuple(int(w) for w in widths)
    config = {
        "image_shape": list(shape),
        "num_classes": int(num_classes),
        "z_dim": int(z_dim),
        "widths": list(widths),
        "latent_width": int(latent_width),
        "joint_width": int(joint_width),
    }
    networks = BiCoGANNetworks(
        Generator(shape, num_classes, z_dim, widths),
        Encoder(shape, num_classes, z_dim, widths),
        Discriminator(shape, num_classes, z_dim, widths, latent_width, joint_width),
        config,
    )
    dcgan_init(networks)
    return networks


def build_seeded_bicogan(seed: int, **config: Any) -> BiCoGANNetworks:
    """``build_bicogan(**config)`` with its initial weights drawn from ``seed`` (the global RNG left as it was)."""
    with seeded(derive_seed(seed, "bicogan-model")):
        return build_bicogan(**config)
