"""Training paper 002's flow-latent classifier: ``FlowLatentTrainer``, the flow trainer with the classifier's
objective L_cond + lambda * L_class (``FlowLatentClassifier.loss``).

Everything else is the flow trainer's (``flowmodels.training``): data order, dequantisation noise and actnorm's
initialisation are pure functions of (seed, step), so resume equals an uninterrupted run; the same optimizer,
warm-up, clipping, non-finite guard and distributed slicing. Validation reports val_bpd (of log p(x | true
label), fixed-seed noise) and val_accuracy (eq. 4 with the model's class prior).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from flowmodels.classifier import FlowLatentClassifier, build_classifier
from flowmodels.data import ImageSet
from flowmodels.scoring import dataset_bits_per_dim
from flowmodels.training import FlowTrainer
from training.checkpoints import load_checkpoint
from training.seeds import derive_seed, seeded

KIND = "flow_latent_classifier"


class _ClassifierObjective(nn.Module):
    """(L_cond + lambda L_class, {"loss", "bpd" (L_cond in bits/dim), "class" (L_class)}) through DDP's wrapper."""

    def __init__(self, model: FlowLatentClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor, noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = self.model.loss(x, y, noise)
        total = terms["total"].float()
        return total, {"loss": total, "bpd": terms["cond"].float(), "class": terms["class"].float()}


class FlowLatentTrainer(FlowTrainer):
    """The ``training.Trainer`` of paper 002's classifier (see the module docstring)."""

    kind = KIND
    model_type = FlowLatentClassifier
    objective_type = _ClassifierObjective

    def validate(self, step: int) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        self.model.eval()
        bpd = dataset_bits_per_dim(
            self.model,
            self.val_set,
            batch_size=max(self.local_batch, 64),
            seed=derive_seed(self.config.seed, "val"),
            conventions=("standard",),
            device=self.device,
            rank=self.rank,
            world=self.world,
        )["standard"]
        predicted = predict_labels(self.model, self.val_set, max(self.local_batch, 64))
        self.model.train()
        accuracy = float((predicted == self.val_set.labels.numpy()).mean()) if len(predicted) else float("nan")
        return {"val_bpd": bpd, "val_accuracy": accuracy}

    def divergence_advice(self) -> str:
        return (
            f"a lower learning rate (lr is {self.config.lr:g}), a longer warm-up (warmup_steps is "
            f"{self.config.warmup_steps}), gradient clipping, or additive coupling in f (model hparams glow_coupling)"
        )


def build_seeded_classifier(seed: int, **spec) -> FlowLatentClassifier:
    """``build_classifier(**spec)`` with its random initialisation drawn from ``seed`` (the global RNG left as
    it was). ``spec["class_prior"]``, when present, is the list of p(y) (training label frequencies)."""
    spec = dict(spec)
    prior = spec.pop("class_prior", None)
    with seeded(derive_seed(seed, "model")):
        model = build_classifier(**{**spec, "image_shape": tuple(spec["image_shape"])})
    if prior is not None:
        model.log_class_prior.copy_(torch.log(torch.as_tensor(prior, dtype=torch.float32)))
        model.config["class_prior"] = [float(p) for p in prior]
    return model


def classifier_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> FlowLatentClassifier:
    """Rebuild the classifier of a ``FlowLatentTrainer`` checkpoint and load its weights (eval mode)."""
    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict)
    if state.get("kind") != KIND:
        raise ValueError(f"not a flow-latent classifier checkpoint (kind {state.get('kind')!r})")
    config = dict(state["trainer"]["model_config"])
    model = build_seeded_classifier(0, **config)  # the weights below replace the seeded initialisation
    model.load_state_dict(state["trainer"]["model"])
    return model.to(device).eval()


@torch.inference_mode()
def class_log_posteriors(model: FlowLatentClassifier, images: ImageSet, batch_size: int = 128) -> np.ndarray:
    """log p(y | x) for every image (N, C): one pass of f and a batched pass of h per batch (bin centres)."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        model.log_posterior(images.images[b : b + batch_size].to(device)).double().cpu()
        for b in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes))


def predict_labels(model: FlowLatentClassifier, images: ImageSet, batch_size: int = 128) -> np.ndarray:
    """argmax_y p(x | y) p(y) (paper 002, eq. 4) for every image: int64 (N,)."""
    return class_log_posteriors(model, images, batch_size).argmax(axis=1).astype(np.int64)
