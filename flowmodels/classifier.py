"""Likelihood-based expression classification.

1. ``FlowLatentClassifier``: paper 002 (Aathreya & Canavan), Fig. 1. An unconditional Glow f maps x to the
   latents Z = [z_1, ..., z_L]; a small conditional flow h(z_L, y) (a few flow steps whose conditioners receive
   the one-hot label) transforms the last, coarsest latent before the top prior scores it:

       log p(x | y) = log p(z_1..z_{L-1}) + log|det df/dx| + log|det dh/dz_L| + log p_top(h(z_L, y))   (eq. 2)

   Training loss L_cond + lambda * L_class (eqs. 3, 5, 6; lambda = 0.3): L_cond = -log p(x | y) (reported in
   bits/dim, as glow-pytorch, which the paper built on, reports its loss), L_class = cross-entropy of the
   posterior p(y | x) proportional to p(x | y) p(y). Prediction (eq. 4): argmax_y p(x | y) p(y), with one pass
   of f and c passes of h (batched into one call).

   "The last latent": we take z_L, the final output of f (the lowest-dimensional one, what the semi-conditional
   flows of Atanov et al. condition); paper 002 names it z_1 in its reversed numbering.

2. ``bayes_log_posterior`` and friends: Bayes' rule for a class-conditional ``FlowModel`` (BPLF or Glow built
   with ``num_classes``): the label enters every layer, so it takes c full passes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmodels.bits import bits_per_dim
from flowmodels.conditioners import conditioner_factory
from flowmodels.flows.base import FlowSequence
from flowmodels.layers.couplings import AffineCoupling
from flowmodels.model import FlowModel, Labels, one_hot_condition
from flowmodels.multiscale import FlowStep
from flowmodels.variants import build_model

DEFAULT_LAMBDA = 0.3


class FlowLatentClassifier(nn.Module):
    """Glow f + conditional flow h on the last latent (paper 002). See the module docstring.

    ``f`` must be an unconditional ``FlowModel``. ``h_steps`` flow steps (paper: 4, one block) of width
    ``h_hidden``. ``class_prior``: p(y), uniform by default.
    """

    def __init__(
        self,
        f: FlowModel,
        num_classes: int,
        h_steps: int = 4,
        h_hidden: int = 512,
        lam: float = DEFAULT_LAMBDA,
        class_prior: Tensor | None = None,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        if f.conditional:
            raise ValueError("f must be unconditional: the label enters through h")
        if num_classes < 2:
            raise ValueError("need at least two classes")
        self.f = f
        self.num_classes = num_classes
        self.lam = lam
        self.config = dict(config or {})
        channels = f.flow.latent_shapes[-1][0]
        make = conditioner_factory("3x3&1x1", h_hidden, num_classes, f.config.get("channels_last", True))
        self.h = FlowSequence(FlowStep(channels, AffineCoupling(channels, make)) for _ in range(h_steps))
        prior = torch.full((num_classes,), 1.0 / num_classes) if class_prior is None else class_prior.float()
        if prior.shape != (num_classes,) or (prior <= 0).any():
            raise ValueError("class_prior must be positive with one entry per class")
        self.register_buffer("log_class_prior", torch.log(prior / prior.sum()))

    @property
    def pixel_column(self) -> str:
        return self.f.pixel_column

    # What the flow trainer and the set-wide scorers (flowmodels.scoring) ask of a model: the classifier is a
    # class-conditional density over f's images, so it answers like a class-conditional FlowModel.
    conditional = True

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.f.image_shape

    @property
    def n_bits(self) -> int:
        return self.f.n_bits

    @property
    def num_dims(self) -> int:
        return self.f.num_dims

    def dequantize(self, x_uint8: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.f.dequantize(x_uint8, noise)

    def to_uint8(self, x: Tensor) -> Tensor:
        return self.f.to_uint8(x)

    def bits_per_dim(
        self, x_uint8: Tensor, y: Labels = None, *, noise: Tensor | None = None, convention: str = "standard"
    ) -> Tensor:
        """Bits/dim per image (standard convention): of log p(x | y) with a label, of the marginal
        log sum_y p(x | y) p(y) (this model's class prior) without one. ``noise`` as ``FlowModel.bits_per_dim``."""
        if convention != "standard":
            raise ValueError("the flow-latent classifier reports the standard convention only")
        return bits_per_dim(self.log_prob(self.f.dequantize(x_uint8, noise), y), self.f.num_dims, self.f.n_bits)

    def log_prob(self, x: Tensor, y: Labels = None) -> Tensor:
        """log p(x | y) of continuous images (N,); without a label the marginal log sum_y p(x | y) p(y) under
        this model's class prior."""
        log_lik = self.class_log_likelihoods(x)
        if y is None:
            return (log_lik + self.log_class_prior).logsumexp(dim=1)
        labels = torch.as_tensor(y, device=log_lik.device).long().expand(log_lik.shape[0])
        return log_lik.gather(1, labels[:, None]).squeeze(1)

    def _continuous(self, x: Tensor) -> Tensor:
        return self.f._continuous(x)

    def class_log_likelihoods(self, x: Tensor) -> Tensor:
        """log p(x | y = c) for every class: (N, num_classes). x: continuous images in [-0.5, 0.5) (uint8
        images are taken at their bin centres)."""
        x = self._continuous(x)
        latents, log_p_splits, logdet_f = self.f.flow.transform(x)  # one pass of f
        top = latents[-1]
        n, c = top.shape[0], self.num_classes
        # c passes of h, as one batch: sample i with label j sits at row i * c + j
        tops = top.repeat_interleave(c, dim=0)
        labels = torch.arange(c, device=top.device).repeat(n)
        cond = one_hot_condition(labels, c, n * c, top.device, top.dtype)
        z_cond, logdet_h = self.h(tops, cond)
        log_top = self.f.flow.top_prior.log_prob(z_cond)
        return (log_p_splits + logdet_f)[:, None] + (logdet_h + log_top).view(n, c)

    def log_posterior(self, x: Tensor) -> Tensor:
        """log p(y | x) for every class: (N, num_classes); each row's exp sums to 1."""
        return torch.log_softmax(self.class_log_likelihoods(x) + self.log_class_prior, dim=1)

    def posterior(self, x: Tensor) -> Tensor:
        return self.log_posterior(x).exp()

    def predict(self, x: Tensor) -> Tensor:
        """argmax_y p(x | y) p(y) (eq. 4): int64 labels (N,)."""
        return (self.class_log_likelihoods(x) + self.log_class_prior).argmax(dim=1)

    def loss(self, x_uint8: Tensor, y: Tensor, noise: Tensor | None = None) -> dict[str, Tensor]:
        """{"total", "cond", "class"} for a batch: cond = mean bits/dim of -log p(x | y) (dequantised with
        ``noise``, fresh U(0, 1) if None), class = cross-entropy of p(y | x); total = cond + lam * class."""
        x = self.f.dequantize(x_uint8, noise)
        log_lik = self.class_log_likelihoods(x)
        y = y.to(log_lik.device).long()
        log_pxy = log_lik.gather(1, y[:, None]).squeeze(1)
        cond_loss = bits_per_dim(log_pxy, self.f.num_dims, self.f.n_bits).mean()
        class_loss = F.cross_entropy(log_lik + self.log_class_prior, y)
        return {"total": cond_loss + self.lam * class_loss, "cond": cond_loss, "class": class_loss}

    def forward(self, x_uint8: Tensor, y: Tensor) -> Tensor:
        """The training objective L_cond + lambda * L_class (a scalar)."""
        return self.loss(x_uint8, y)["total"]

    @torch.no_grad()
    def initialize(self, x_uint8: Tensor, y: Tensor | None = None) -> None:
        """Data-dependent actnorm initialisation of f and h from one batch (h sees the batch under every
        label, so ``y`` is not needed; it is accepted for symmetry with ``FlowModel.initialize``)."""
        self.class_log_likelihoods(self.f.dequantize(x_uint8))

    @torch.no_grad()
    def sample(self, n: int, y: Labels, temperature: float = 1.0) -> Tensor:
        """n continuous images of emotion ``y`` (an int or one per sample): z'_1 from the top prior at
        ``temperature``, z_L = h^{-1}(z'_1, y), the other latents from f's priors, then f^{-1}."""
        z_prime = self.f.flow.top_prior.sample(n, None, temperature)
        cond = one_hot_condition(y, self.num_classes, n, z_prime.device, z_prime.dtype)
        z_top, _ = self.h.inverse(z_prime, cond)
        return self.f.flow.inverse([None] * (len(self.f.flow.levels) - 1) + [z_top], None, temperature, n=n)

    def encode(self, x: Tensor, y: Labels) -> list[Tensor]:
        """Z_cond = [z_1, ..., z_{L-1}, h(z_L, y)] (paper 002, Fig. 1a)."""
        latents = self.f.encode(x)
        n = latents[-1].shape[0]
        z_cond, _ = self.h(
            latents[-1], one_hot_condition(y, self.num_classes, n, latents[-1].device, latents[-1].dtype)
        )
        return latents[:-1] + [z_cond]

    def decode(self, latents: list[Tensor], y: Labels) -> Tensor:
        """Inverse of ``encode``."""
        top = latents[-1]
        z_top, _ = self.h.inverse(top, one_hot_condition(y, self.num_classes, top.shape[0], top.device, top.dtype))
        return self.f.decode(list(latents[:-1]) + [z_top])


def build_classifier(
    image_shape: tuple[int, int, int],
    num_classes: int = 7,
    h_steps: int = 4,
    h_hidden: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    variant: str = "glow",
    **hparams: Any,
) -> FlowLatentClassifier:
    """Paper 002's classifier: an unconditional ``build_model(variant, image_shape, **hparams)`` as f and a
    conditional flow h of ``h_steps`` steps (width ``h_hidden``, default f's ``hidden``). ``config`` records
    the arguments: ``build_classifier(**clf.config)`` rebuilds it for ``load_state_dict``."""
    f = build_model(variant, image_shape, None, **hparams)
    h_hidden = f.config["hidden"] if h_hidden is None else h_hidden
    config = {
        "image_shape": list(image_shape),
        "num_classes": num_classes,
        "h_steps": h_steps,
        "h_hidden": h_hidden,
        "lam": lam,
        "variant": variant,
        **hparams,
    }
    return FlowLatentClassifier(f, num_classes, h_steps, h_hidden, lam, config=config)


def bayes_log_posterior(model: FlowModel, x: Tensor, log_prior: Tensor | None = None) -> Tensor:
    """log p(y | x) by Bayes' rule for a class-conditional ``FlowModel``: softmax_y(log p(x | y) + log p(y)),
    (N, num_classes). x: uint8 images (bin centres) or continuous images; prior uniform unless given."""
    if not model.conditional:
        raise ValueError("Bayes-rule classification needs a class-conditional model (num_classes set)")
    log_lik = model.class_log_probs(model._continuous(x))
    if log_prior is None:
        log_prior = torch.full((model.num_classes,), -math.log(model.num_classes), device=log_lik.device)
    return torch.log_softmax(log_lik + log_prior.to(log_lik), dim=1)


def bayes_posterior(model: FlowModel, x: Tensor, log_prior: Tensor | None = None) -> Tensor:
    return bayes_log_posterior(model, x, log_prior).exp()


def bayes_predict(model: FlowModel, x: Tensor, log_prior: Tensor | None = None) -> Tensor:
    """argmax_y p(x | y) p(y): int64 labels (N,)."""
    return bayes_log_posterior(model, x, log_prior).argmax(dim=1)
