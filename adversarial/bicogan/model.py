"""``BiCoGANModel``: what a trained BiCoGAN is used (and registered) as: the generator and the encoder, with the
class set's names. Images go in and come out as uint8 (N, 1, H, W) like the shards' pixels; z codes and label
logits/probabilities come out as float tensors; everything returned is on the CPU.

Labels may be class indices (0..K-1 of ``class_names``) or emotion names ("happiness"), one for all images or one
per image. ``edit`` is the paper's expression change on a real face: encode x to (z, c), keep z, decode with
another c.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversarial.bicogan.classes import ClassMap
from adversarial.bicogan.networks import Encoder, Generator
from training.checkpoints import load_checkpoint
from training.seeds import normal

Labels = int | str | Sequence[int | str] | Tensor

CHUNK = 256  # images per forward pass: bounded memory for any n


def to_model_scale(images: Tensor) -> Tensor:
    """uint8 pixels -> floats in [-1, 1] (the generator's tanh scale)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 pixels, got {images.dtype}")
    return images.float() / 127.5 - 1.0


def to_pixels(images: Tensor) -> Tensor:
    """Floats in [-1, 1] -> uint8 pixels (rounded, clipped)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class BiCoGANModel(nn.Module):
    """G and E of a trained BiCoGAN over the emotions ``class_names`` (built from ``config``)."""

    def __init__(self, generator: Generator, encoder: Encoder, class_names: Sequence[str]):
        super().__init__()
        self.generator, self.encoder = generator, encoder
        self.class_map = ClassMap(tuple(class_names))
        if len(self.class_map.names) != generator.num_classes or encoder.num_classes != generator.num_classes:
            raise ValueError(f"{len(class_names)} class names for networks of {generator.num_classes} classes")
        self.eval()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_map.names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.generator.image_shape

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @property
    def config(self) -> dict[str, Any]:
        """What ``from_config`` rebuilds the (untrained) networks from."""
        return {
            "image_shape": list(self.image_shape),
            "num_classes": len(self.class_names),
            "z_dim": self.z_dim,
            "widths": list(self.encoder.widths),
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BiCoGANModel:
        shape, k, z_dim, widths = config["image_shape"], config["num_classes"], config["z_dim"], config["widths"]
        return cls(Generator(shape, k, z_dim, widths), Encoder(shape, k, z_dim, widths), config["class_names"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def labels(self, labels: Labels, n: int) -> Tensor:
        """(n,) int64 class indices from an index, a name, or a sequence/tensor of n of them."""
        if isinstance(labels, (int, str)):
            return torch.full((n,), self.class_map.index(labels), dtype=torch.long)
        if isinstance(labels, Tensor):
            labels = labels.tolist()
            if isinstance(labels, int):  # a 0-d tensor: one label for all
                return self.labels(labels, n)
        values = [self.class_map.index(v) for v in labels]
        if len(values) != n:
            raise ValueError(f"{len(values)} labels for {n} images")
        return torch.tensor(values, dtype=torch.long)

    def latents(self, n: int, seed: int) -> Tensor:
        """n latent codes z ~ N(0, I) drawn from ``seed`` (the same seed gives the same "persons")."""
        return normal(seed, "bicogan-sample", 0, (n, self.z_dim))

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Labels) -> Tensor:
        """G(z, c) as uint8 images (N, C, H, W)."""
        self.eval()
        c = F.one_hot(self.labels(labels, z.shape[0]), len(self.class_names)).float()
        out = [
            to_pixels(self.generator(z[i : i + CHUNK].to(self.device).float(), c[i : i + CHUNK].to(self.device))).cpu()
            for i in range(0, z.shape[0], CHUNK)
        ]
        return torch.cat(out) if out else torch.empty((0, *self.image_shape), dtype=torch.uint8)

    def sample(self, n: int, labels: Labels, seed: int) -> Tensor:
        """n generated faces of the given emotion(s), z drawn from ``seed``."""
        return self.decode(self.latents(n, seed), labels)

    @torch.no_grad()
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """E(x) of uint8 images: (z_hat (N, z_dim), label logits (N, K))."""
        self.eval()
        if images.shape[0] == 0:
            return torch.empty(0, self.z_dim), torch.empty(0, len(self.class_names))
        zs, logits = [], []
        for i in range(0, images.shape[0], CHUNK):
            z, c = self.encoder(to_model_scale(images[i : i + CHUNK]).to(self.device))
            zs.append(z.float().cpu())
            logits.append(c.float().cpu())
        return torch.cat(zs), torch.cat(logits)

    def classify(self, images: Tensor) -> Tensor:
        """The encoder's label probabilities (N, K) over ``class_names``."""
        return torch.softmax(self.encode(images)[1], dim=1)

    def edit(self, images: Tensor, target: Labels) -> Tensor:
        """Real faces with their expression changed: z from the encoder, c replaced by ``target``, decoded."""
        z, _ = self.encode(images)
        return self.decode(z, target)

    def reconstruct(self, images: Tensor) -> Tensor:
        """x -> E -> G: each face decoded from its own z and its encoded (most likely) label."""
        z, logits = self.encode(images)
        return self.decode(z, logits.argmax(dim=1))


def bicogan_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> BiCoGANModel:
    """The ``BiCoGANModel`` (G and E) of a BiCoGAN training checkpoint, in eval mode on ``device``."""
    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict)
    if state.get("kind") != "bicogan":
        raise ValueError(
            f"not a BiCoGAN training checkpoint (kind {state.get('kind')!r}, format {state.get('format')!r})"
        )
    trainer = state["trainer"]
    config = {**trainer["model_config"], "class_names": trainer["class_names"]}
    model = BiCoGANModel.from_config(config)
    weights = {k: v for k, v in trainer["model"].items() if k.startswith(("generator.", "encoder."))}
    model.load_state_dict(weights)
    return model.to(device).eval()
