"""``FlowModel``: a multi-scale flow over uint8 images, with the project's public methods.

Images arrive from the shards as uint8 tensors (N, 1, H, W) and labels as int64 in 0..num_classes-1 (the
emotions: 0 anger, 1 disgust, 2 fear, 3 happiness, 4 sadness, 5 surprise, 6 neutral). Continuous images (what
``decode`` and ``sample`` return, what ``encode`` also accepts) live in [-0.5, 0.5); ``to_uint8`` maps them
back to pixels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from flowmodels.bits import bits_per_dim, bits_per_dim_bplf
from flowmodels.dequantize import bin_centres, check_bits, dequantize, to_uint8
from flowmodels.layers.scale import ConstantScale
from flowmodels.multiscale import MultiScaleFlow

Labels = Tensor | int | None

BPD_CONVENTIONS = ("standard", "bplf")


def one_hot_condition(y: Labels, num_classes: int | None, n: int, device, dtype=torch.float32) -> Tensor | None:
    """Labels -> the (n, num_classes) one-hot condition the layers take (``None`` stays ``None``).

    ``y``: an int (one label for all n), an int64 tensor (n,), or an already float (n, num_classes) tensor
    (a soft condition, e.g. for interpolating between emotions).
    """
    if y is None:
        return None
    if not num_classes:
        raise ValueError("this model is unconditional: it takes no label")
    if isinstance(y, int):
        y = torch.full((n,), y, dtype=torch.long, device=device)
    if y.is_floating_point():
        if y.shape != (n, num_classes):
            raise ValueError(f"a float condition must have shape ({n}, {num_classes}), got {tuple(y.shape)}")
        return y.to(device=device, dtype=dtype)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return nn.functional.one_hot(y.to(device=device, dtype=torch.long), num_classes).to(dtype)


class FlowModel(nn.Module):
    """A Glow/BPLF flow with dequantisation, bits/dim, encode/decode and sampling.

    Built by ``flowmodels.build_model``; ``config`` holds the arguments that rebuild it
    (``build_model(**model.config)``), ``pixel_column`` the shard column it is trained on ("pixels", or
    "pixels_svd" for the ``_svd`` variants).
    """

    def __init__(
        self,
        flow: MultiScaleFlow,
        n_bits: int = 8,
        num_classes: int | None = None,
        pixel_column: str = "pixels",
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.flow = flow
        self.n_bits = check_bits(n_bits)
        self.num_classes = num_classes
        self.pixel_column = pixel_column
        self.config = dict(config or {})
        self.image_shape = flow.image_shape
        self.num_dims = math.prod(self.image_shape)

    # --- conditions and inputs -------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return bool(self.num_classes)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.parameters())
        return p.device, p.dtype

    def condition(self, y: Labels, n: int) -> Tensor | None:
        """The one-hot condition for n images (see ``one_hot_condition``)."""
        device, dtype = self._device_dtype()
        return one_hot_condition(y, self.num_classes, n, device, dtype)

    def _check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")

    def dequantize(self, x_uint8: Tensor, noise: Tensor | None = None) -> Tensor:
        """uint8 images -> continuous images in [-0.5, 0.5) (uniform noise unless ``noise`` is given)."""
        self._check_images(x_uint8)
        device, dtype = self._device_dtype()
        return dequantize(x_uint8.to(device), self.n_bits, None if noise is None else noise.to(device), dtype)

    def _continuous(self, x: Tensor) -> Tensor:
        """uint8 -> bin centres; float images pass through."""
        self._check_images(x)
        device, dtype = self._device_dtype()
        if x.dtype == torch.uint8:
            return bin_centres(x.to(device), self.n_bits, dtype)
        return x.to(device=device, dtype=dtype)

    def to_uint8(self, x: Tensor) -> Tensor:
        """Continuous images -> uint8 pixels (values outside the data range are clamped)."""
        return to_uint8(x, self.n_bits)

    # --- densities -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, x_uint8: Tensor, y: Labels = None) -> None:
        """Data-dependent initialisation of every actnorm from one batch (what the first training batch would
        otherwise do implicitly). Call it before ``torch.compile``. A conditional model needs the batch's
        labels."""
        self._require_label(y, "initialize")
        x = self.dequantize(x_uint8)
        self.flow.transform(x, self.condition(y, x.shape[0]))

    def log_prob(self, x: Tensor, y: Labels = None) -> Tensor:
        """log p(x | y) of continuous images in [-0.5, 0.5), shape (N,). With a conditional model and no label:
        the marginal log sum_y p(x | y) p(y) under a uniform label prior."""
        if self.conditional and y is None:
            return self.class_log_probs(x).logsumexp(dim=1) - math.log(self.num_classes)
        _, log_px = self.flow(x, self.condition(y, x.shape[0]))
        return log_px

    def class_log_probs(self, x: Tensor) -> Tensor:
        """log p(x | y = c) for every class c: shape (N, num_classes); one pass per class (the label enters
        every layer of a class-conditional flow)."""
        if not self.conditional:
            raise ValueError("class_log_probs needs a class-conditional model")
        return torch.stack([self.log_prob(x, c) for c in range(self.num_classes)], dim=1)

    def bits_per_dim(
        self, x_uint8: Tensor, y: Labels = None, *, noise: Tensor | None = None, convention: str = "standard"
    ) -> Tensor:
        """Bits per dimension of uint8 images, one value per image (N,), at ``self.n_bits`` bits.

        ``noise``: the dequantisation offsets u in [0, 1) bin units (same shape as the images); ``None``
        draws U(0, 1), the usual training objective. ``convention``: "standard" (data in [-0.5, 0.5), + ln 2^n)
        or "bplf" (the BPLF paper's equation 4-1: data in [-1, 1], + ln 2^(n-1)); they agree (flowmodels.bits).
        """
        if convention not in BPD_CONVENTIONS:
            raise ValueError(f"convention must be one of {BPD_CONVENTIONS}, got {convention!r}")
        self._check_images(x_uint8)
        device, dtype = self._device_dtype()
        if noise is None:
            noise = torch.rand(x_uint8.shape, device=device, dtype=dtype)
        if convention == "standard":
            x = self.dequantize(x_uint8, noise)
            return bits_per_dim(self.log_prob(x, y), self.num_dims, self.n_bits)
        # data in [-1, 1]: bins of width 2 / 2^n; the model's density lives on x = x_pm1 / 2
        q = torch.div(x_uint8.to(device).long(), 2 ** (8 - self.n_bits), rounding_mode="floor").to(dtype)
        x_pm1 = (q + noise.to(dtype)) / 2 ** (self.n_bits - 1) - 1.0
        x, logdet_to_model = ConstantScale(0.5)(x_pm1)
        return bits_per_dim_bplf(self.log_prob(x, y) + logdet_to_model, self.num_dims, self.n_bits)

    def forward(self, x_uint8: Tensor, y: Labels = None) -> Tensor:
        """The training objective: bits/dim per image with fresh dequantisation noise (``.mean()`` it)."""
        return self.bits_per_dim(x_uint8, y)

    # --- latents and samples ---------------------------------------------------------------------------------
    def _require_label(self, y: Labels, what: str) -> None:
        if self.conditional and y is None:
            raise ValueError(f"{what} of a class-conditional model needs the label y")

    def encode(self, x: Tensor, y: Labels = None) -> list[Tensor]:
        """Images -> latents [z_1, ..., z_L] (finest first, shapes ``flow.latent_shapes``). uint8 images are
        taken at their bin centres; float images in [-0.5, 0.5) as they are."""
        self._require_label(y, "encode")
        x = self._continuous(x)
        latents, _, _ = self.flow.transform(x, self.condition(y, x.shape[0]))
        return latents

    def decode(self, latents: list[Tensor], y: Labels = None) -> Tensor:
        """Latents [z_1, ..., z_L] -> continuous images (exact inverse of ``encode``)."""
        self._require_label(y, "decode")
        n = latents[-1].shape[0]
        return self.flow.inverse(list(latents), self.condition(y, n))

    @torch.no_grad()
    def sample(self, n: int, y: Labels = None, temperature: float = 1.0) -> Tensor:
        """n continuous images drawn at ``temperature`` (the prior std multiplier; Glow samples at 0.7).
        ``y``: one emotion for all (int) or one per sample; a conditional model given no label draws labels
        uniformly."""
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (n,), device=self._device_dtype()[0])
        cond = self.condition(y, n)
        return self.flow.inverse([None] * len(self.flow.levels), cond, temperature, n=n)
