"""NFGAN's three networks, Tables 1-3 of the paper, for gray faces (1 channel) whose sides are multiples of 32.

Every network works in the generator's scale: float images in [-1, 1] (the decoder ends in tanh).

* ``Encoder`` (Table 1): four 3x3 stride-2 convolutions (32, 64, 128, 256 filters; BN on all but the first; ReLU),
  FC 512 (BN, ReLU), FC 256 (no BN, no non-linearity): 64x64 -> 32 -> 16 -> 8 -> 4 -> the 256-d latent z.
* ``Decoder`` (Table 2): five 3x3 stride-2 fractional-stride convolutions (512, 256, 128, 64 filters with BN and
  ReLU, then 1 filter with tanh), each doubling the side. Five doublings reach 64 from 2x2, and the table has no
  layer that turns the vector into a map, so z is *viewed* as a (256 / 4)-channel 2x2 map (64 x 2 x 2 = 256 numbers;
  parameter-free). That reshape is the one deviation from the tables; ``ConvTranspose2d(3, stride 2, padding 1,
  output_padding 1)`` is the "3x3/2" FConv that exactly doubles.
* ``Discriminator`` (Table 3): four 3x3 stride-2 convolutions (64, 128, 256, 512; BN on all but the first; leaky
  ReLU with the paper's alpha = 0.3) and a 3x3 stride-1 convolution to 1 channel. It returns that map's *logits*
  (a 4x4 patch map at 64x64); the table's sigmoid is applied inside the losses (``losses.discriminator_loss``), where
  log(sigmoid) is computed stably, and by ``Discriminator.probability``.

Widths are arguments (``params.nfgan``: the tables' values by default), so tests can run narrower copies. Weights are
initialised as in DCGAN (normal(0, 0.02); BN scale normal(1, 0.02)), the paper naming no scheme.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.seeds import derive_seed, seeded

SIDE_MULTIPLE = 32  # the decoder's five doublings start from a (side / 32) map


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in image_size)
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
        raise ValueError(
            f"NFGAN needs image sides divisible by {SIDE_MULTIPLE} (the decoder's five stride-2 layers), got {h}x{w}: "
            "build the shards at 64x64 (data.image_size: [64, 64]), the paper's size"
        )
    return h, w


def weights_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): equal digests = identical weights.
    ``training.checkpoints.state_digest`` does the same but cannot view a 0-dim buffer (BatchNorm's
    ``num_batches_tracked``) as bytes; these networks all have one."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _conv_stack(widths: Sequence[int], activation: type[nn.Module] | nn.Module) -> nn.Sequential:
    """3x3 stride-2 convolutions from 1 channel; BN on all but the first (Tables 1 and 3)."""
    layers: list[nn.Module] = []
    previous = 1
    for i, width in enumerate(widths):
        layers.append(nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=i == 0))
        if i > 0:
            layers.append(nn.BatchNorm2d(width))
        layers.append(activation() if isinstance(activation, type) else activation)
        previous = width
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Table 1: (N, 1, H, W) in [-1, 1] -> z (N, latent)."""

    def __init__(self, image_size: Sequence[int], widths: Sequence[int], hidden: int, latent: int):
        super().__init__()
        h, w = _check_image_size(image_size)
        self.convs = _conv_stack(widths, nn.ReLU)
        cells = (h >> len(widths)) * (w >> len(widths))
        self.fc = nn.Sequential(
            nn.Linear(int(widths[-1]) * cells, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, latent),  # FC2: no BN, no non-linearity
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x).flatten(1))


class Decoder(nn.Module):
    """Table 2: z (N, latent) -> (N, 1, H, W) in [-1, 1]."""

    def __init__(self, image_size: Sequence[int], widths: Sequence[int], latent: int):
        super().__init__()
        h, w = _check_image_size(image_size)
        self.start = (h // SIDE_MULTIPLE, w // SIDE_MULTIPLE)
        cells = self.start[0] * self.start[1]
        if len(widths) != 4:
            raise ValueError(f"the decoder has four hidden FConv layers (Table 2), got widths {list(widths)}")
        if latent % cells:
            raise ValueError(f"latent {latent} cannot be viewed as a map of {self.start[0]}x{self.start[1]} cells")
        self.start_channels = latent // cells
        layers: list[nn.Module] = []
        previous = self.start_channels
        for width in widths:
            layers += [
                nn.ConvTranspose2d(previous, width, 3, stride=2, padding=1, output_padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            previous = width
        layers += [nn.ConvTranspose2d(previous, 1, 3, stride=2, padding=1, output_padding=1), nn.Tanh()]
        self.fconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.fconvs(z.reshape(z.shape[0], self.start_channels, *self.start))


class Discriminator(nn.Module):
    """Table 3: (N, 1, H, W) in [-1, 1] -> logits (N, 1, H/16, W/16) of "a real frontal neutral face"."""

    def __init__(self, image_size: Sequence[int], widths: Sequence[int], leaky_slope: float):
        super().__init__()
        _check_image_size(image_size)
        self.image_size = tuple(int(v) for v in image_size)
        self.widths = tuple(int(v) for v in widths)
        self.leaky_slope = float(leaky_slope)
        self.convs = _conv_stack(widths, nn.LeakyReLU(self.leaky_slope))
        self.head = nn.Conv2d(int(widths[-1]), 1, 3, stride=1, padding=1)  # Conv5; its sigmoid is in the losses
        _init_weights(self)

    @property
    def config(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "widths": list(self.widths), "leaky_slope": self.leaky_slope}

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))

    def probability(self, x: Tensor) -> Tensor:
        """Dis(x) of the paper: the sigmoid of the logits, per patch."""
        return torch.sigmoid(self.forward(x))


class Generator(nn.Module):
    """Enc then Dec: an expressive face -> its frontal neutral face, both (N, 1, H, W) in [-1, 1]."""

    def __init__(
        self,
        image_size: Sequence[int],
        latent: int,
        encoder_widths: Sequence[int],
        encoder_hidden: int,
        decoder_widths: Sequence[int],
    ):
        super().__init__()
        self.image_size = tuple(int(v) for v in image_size)
        self.latent = int(latent)
        self.encoder_widths = tuple(int(v) for v in encoder_widths)
        self.encoder_hidden = int(encoder_hidden)
        self.decoder_widths = tuple(int(v) for v in decoder_widths)
        self.encoder = Encoder(self.image_size, self.encoder_widths, self.encoder_hidden, self.latent)
        self.decoder = Decoder(self.image_size, self.decoder_widths, self.latent)
        _init_weights(self)

    @property
    def config(self) -> dict[str, Any]:
        """``Generator(**config)`` rebuilds this architecture."""
        return {
            "image_size": list(self.image_size),
            "latent": self.latent,
            "encoder_widths": list(self.encoder_widths),
            "encoder_hidden": self.encoder_hidden,
            "decoder_widths": list(self.decoder_widths),
        }

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def build_networks(nfgan: Any, seed: int | None = None) -> tuple[Generator, Discriminator]:
    """The generator and discriminator that ``nfgan`` (a ``params.nfgan`` section) describes; with ``seed`` their
    initial weights are drawn from (seed, "model", 0 / 1) and the global RNG is left as it was."""

    def generator() -> Generator:
        return Generator(
            nfgan.image_size, nfgan.latent, nfgan.encoder_widths, nfgan.encoder_hidden, nfgan.decoder_widths
        )

    def discriminator() -> Discriminator:
        return Discriminator(nfgan.image_size, nfgan.discriminator_widths, nfgan.leaky_slope)

    if seed is None:
        return generator(), discriminator()
    with seeded(derive_seed(seed, "model", 0)):
        g = generator()
    with seeded(derive_seed(seed, "model", 1)):
        d = discriminator()
    return g, d
