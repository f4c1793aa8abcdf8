"""Training BiCoGAN: ``BiCoGANTrainer`` (what ``training.run_training`` drives, kind "bicogan").

One step, on one batch of real faces x with labels c (mapped into the class set), augmented on the fly:

1. z ~ N(0, I); generated tuples (G(z, c), [z, c]) with c one-hot; real tuples (x, [E_z(x), E_c(x)]) with
   E_c(x) one-hot too (its most likely class; the softmax's gradient passes straight through: ``encoded_label``);
2. D's loss (``losses.discriminator_loss``) and G+E's loss (``losses.generator_encoder_loss`` +
   gamma * EFL(c, E_c(x))) from the same forward pass; both gradients taken, checked, then both optimizers step
   (a simultaneous step: one G and E forward per batch, and the non-finite guard is all-or-nothing);
3. gamma = min(alpha * e^(rho * t), phi) with t = step / steps_per_epoch, the epochs trained so far.

The batch's images c come from the batch's own labels (so G learns p(x | c) under the training label frequencies).
Every random number is a function of (seed, step) (``training.seeds``): the epoch's order, the augmentation, and
z from (seed, "z", step); the initial weights from (seed, "bicogan-model"). A resumed run therefore computes what
an uninterrupted one computes. A skipped (non-finite) step changes nothing, batch-norm running statistics
included. One process (no DDP); GPU when ``device`` is auto and one is present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adversarial.bicogan.classes import ClassMap
from adversarial.bicogan.losses import (
    AdversarialForm,
    EflSchedule,
    discriminator_loss,
    extrinsic_factor_loss,
    generator_encoder_loss,
)
from adversarial.bicogan.model import BiCoGANModel, to_model_scale
from adversarial.bicogan.networks import BiCoGANNetworks, build_seeded_bicogan
from flowmodels.data import ImageSet
from pipelines.model_params import BicoganParams, BicoganTrainParams
from training.checkpoints import jsonable
from training.devices import distributed_context, resolve_device
from training.loop import StepReport
from training.schedule import WarmupSchedule, make_optimizer
from training.seeds import EpochBatches, normal


def encoded_label(label_logits: Tensor) -> Tensor:
    """E_c(x) as D sees it: the one-hot of the most likely class in the forward pass, the softmax's gradient in
    the backward pass (straight-through). Generated tuples carry one-hot labels, so a soft vector would tell D
    "real" by its softness alone; this way D must judge whether the label fits the face."""
    probs = torch.softmax(label_logits.float(), dim=1)
    hard = F.one_hot(probs.argmax(dim=1), probs.shape[1]).to(probs.dtype)
    return hard + probs - probs.detach()


def step_losses(
    networks: BiCoGANNetworks, x: Tensor, c: Tensor, z: Tensor, gamma: float, form: AdversarialForm
) -> dict[str, Tensor]:
    """One batch's losses (in the networks' current modes): "d_loss", "ge_loss" (G and E's total: adversarial +
    gamma * EFL), "adversarial", "efl", D's mean probabilities "d_real" and "d_fake", and the encoder's
    "encoder_accuracy". x: images in [-1, 1], c: class labels, z: the generated tuples' latent codes."""
    onehot = F.one_hot(c, networks.num_classes).float()
    generated = networks.generator(z, onehot)
    z_hat, label_logits = networks.encoder(x)
    real = networks.discriminator(x, z_hat, encoded_label(label_logits))
    fake = networks.discriminator(generated, z, onehot)
    adversarial = generator_encoder_loss(real, fake, form)
    efl = extrinsic_factor_loss(label_logits, c)
    return {
        "d_loss": discriminator_loss(real, fake),
        "ge_loss": adversarial + gamma * efl,
        "adversarial": adversarial,
        "efl": efl,
        "d_real": torch.sigmoid(real.detach().float()).mean(),
        "d_fake": torch.sigmoid(fake.detach().float()).mean(),
        "encoder_accuracy": (label_logits.detach().argmax(1) == c).float().mean(),
    }


def _total_norm(grads: list[Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


class BiCoGANTrainer:
    """G, E and D, their two Adam optimizers and warm-up, and the class-mapped data: the ``training.Trainer``
    of the BiCoGAN family. ``excluded``: images left out of each set (emotions outside the class set)."""

    kind = "bicogan"

    def __init__(
        self,
        model: BiCoGANNetworks,
        train_set: ImageSet,
        val_set: ImageSet | None,
        config: BicoganTrainParams,
        class_map: ClassMap,
        efl: EflSchedule,
    ):
        if not isinstance(model, BiCoGANNetworks):
            raise TypeError(f"BiCoGANTrainer takes BiCoGANNetworks (build_bicogan), got {type(model).__name__}")
        rank, world = distributed_context()
        if world > 1:
            raise NotImplementedError("BiCoGAN trains in one process (no torchrun)")
        self.device = resolve_device(config.device, rank)
        self.model, self.config, self.class_map, self.efl = model, config, class_map, efl
        self.train_set, dropped_train = class_map.apply(train_set)
        self.val_set, dropped_val = (None, 0) if val_set is None else class_map.apply(val_set)
        if self.val_set is not None and not len(self.val_set):
            self.val_set = None
        self.excluded = {"train": dropped_train, "val": dropped_val}
        self._check_data()
        self.batches = EpochBatches(config.seed, len(self.train_set), config.batch_size)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.augment = config.augment.build()
        self.data_prints = {
            "train": self.train_set.fingerprint(),
            "val": None if self.val_set is None else self.val_set.fingerprint(),
        }
        model.to(self.device).train()
        self.d_params = list(model.discriminator.parameters())
        self.ge_params = list(model.generator.parameters()) + list(model.encoder.parameters())
        self.d_optimizer = make_optimizer("adam", self.d_params, config.lr, config.betas)
        self.ge_optimizer = make_optimizer("adam", self.ge_params, config.lr, config.betas)
        self.schedule = WarmupSchedule([self.d_optimizer, self.ge_optimizer], config.lr, config.warmup_steps)

    def _check_data(self) -> None:
        k, shape = self.model.num_classes, self.model.image_shape
        if k != len(self.class_map.names):
            raise ValueError(f"the networks have {k} classes, the class set {list(self.class_map.names)}")
        for s in (self.train_set, self.val_set):
            if s is not None and s.image_shape != shape:
                raise ValueError(f"the networks expect images {shape}, {s.name} has {s.image_shape}")
        if len(self.train_set) < self.config.batch_size:
            raise ValueError(
                f"{self.train_set.name} has {len(self.train_set)} images in the class set, "
                f"fewer than one batch of {self.config.batch_size}"
            )

    # --- one step ---------------------------------------------------------------------------------------------
    def training_batch(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """Step ``step``'s (augmented images in [-1, 1], class labels, z), on the training device."""
        idx = self.batches(step)
        pixels = self.augment(self.train_set.images[idx], self.config.seed, step)
        x = to_model_scale(pixels).to(self.device, non_blocking=True)
        c = self.train_set.labels[idx].to(self.device, non_blocking=True)
        z = normal(self.config.seed, "z", step, (len(idx), self.model.z_dim)).to(self.device, non_blocking=True)
        return x, c, z

    def efl_weight(self, step: int) -> float:
        """gamma at step ``step``: epochs trained so far = step / steps_per_epoch."""
        return self.efl(step / self.steps_per_epoch)

    def losses(self, x: Tensor, c: Tensor, z: Tensor, gamma: float) -> dict[str, Tensor]:
        """``step_losses`` of the trained networks."""
        return step_losses(self.model, x, c, z, gamma, self.config.adversarial_loss)

    def _batch_norm_buffers(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.model.state_dict().items() if "running_" in k or "num_batches" in k}

    def train_step(self, step: int) -> StepReport:
        x, c, z = self.training_batch(step)
        lr = self.schedule.apply(step)
        gamma = self.efl_weight(step)
        gauges = {"lr": lr, "gamma": gamma}
        buffers = self._batch_norm_buffers()
        losses = self.losses(x, c, z, gamma)
        d_grads = torch.autograd.grad(losses["d_loss"], self.d_params, retain_graph=True)
        ge_grads = torch.autograd.grad(losses["ge_loss"], self.ge_params)
        values = {k: float(v.detach()) for k, v in losses.items()}
        d_norm, ge_norm = _total_norm(list(d_grads)), _total_norm(list(ge_grads))
        report = {k: values[k] for k in ("d_loss", "ge_loss", "efl", "d_real", "d_fake", "encoder_accuracy")}
        if not all(math.isfinite(v) for v in (*values.values(), d_norm, ge_norm)):
            self.model.load_state_dict(buffers, strict=False)  # the forward's batch-norm statistics are undone too
            detail = (
                f"non-finite loss or gradient norm (d_loss {values['d_loss']}, ge_loss {values['ge_loss']}, "
                f"|grad D| {d_norm}, |grad G,E| {ge_norm})"
            )
            return StepReport(report, len(c), gauges, skipped=True, detail=detail)
        for params, grads in ((self.d_params, d_grads), (self.ge_params, ge_grads)):
            for p, g in zip(params, grads):
                p.grad = g
        self.d_optimizer.step()
        self.ge_optimizer.step()
        self.d_optimizer.zero_grad(set_to_none=True)
        self.ge_optimizer.zero_grad(set_to_none=True)
        return StepReport(report, len(c), gauges)

    # --- the Trainer protocol ---------------------------------------------------------------------------------
    def initialize(self) -> str:
        return "random"  # DCGAN initialisation, drawn from the seed when the networks were built

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float] | None:
        """On the validation set (no augmentation; G and E in eval mode; z from (seed, "val")): the encoder's
        label accuracy and EFL, D's loss and mean probabilities on real and generated tuples."""
        if self.val_set is None:
            return None
        net, n = self.model, len(self.val_set)
        net.eval()
        z_all = normal(self.config.seed, "val", 0, (n, net.z_dim))
        sums = dict.fromkeys(("val_encoder_accuracy", "val_efl", "val_d_loss", "val_d_real", "val_d_fake"), 0.0)
        chunk = max(self.config.batch_size, 128)
        for i in range(0, n, chunk):
            x = to_model_scale(self.val_set.images[i : i + chunk]).to(self.device)
            c = self.val_set.labels[i : i + chunk].to(self.device)
            out = self.losses(x, c, z_all[i : i + chunk].to(self.device), 0.0)
            for name in ("encoder_accuracy", "efl", "d_loss", "d_real", "d_fake"):
                sums[f"val_{name}"] += float(out[name]) * len(c)
        net.train()
        return {k: v / n for k, v in sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model_config": jsonable(self.model.config),
            "class_names": list(self.class_map.names),
            "model": self.model.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "ge_optimizer": self.ge_optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.ge_optimizer.load_state_dict(state["ge_optimizer"])
        self.schedule.load_state_dict(state["scheduler"])

    def resume_key(self) -> dict[str, Any]:
        return {
            "train": self.config.trajectory(),
            "efl": {"alpha": self.efl.alpha, "rho": self.efl.rho, "phi": self.efl.phi},
            "classes": list(self.class_map.names),
            "model": self.model.config,
            "data": self.data_prints,
        }

    def divergence_advice(self) -> str:
        cfg = self.config
        hints = [
            f"a lower learning rate (lr is {cfg.lr:g})",
            f"a warm-up (warmup_steps is {cfg.warmup_steps})",
            f"a lower EFL weight cap (phi is {self.efl.phi:g})",
        ]
        if cfg.adversarial_loss == "minimax":
            hints.append("the non-saturating adversarial loss (adversarial_loss: non_saturating)")
        return ", ".join(hints)

    # --- results -----------------------------------------------------------------------------------------------
    def data_summary(self) -> dict[str, Any]:
        """Class set, images per class and images left out, per set (for tracking)."""
        summary: dict[str, Any] = {"classes": list(self.class_map.names), "dropped": list(self.class_map.dropped)}
        for name, s in (("train", self.train_set), ("val", self.val_set)):
            counts = [] if s is None else torch.bincount(s.labels, minlength=len(self.class_map.names)).tolist()
            summary[name] = {"count": 0 if s is None else len(s), "per_class": counts, "excluded": self.excluded[name]}
        return summary

    def final_model(self) -> BiCoGANModel:
        """A CPU copy of the trained G and E with the class names, in eval mode: what is registered."""
        model = BiCoGANModel.from_config({**self.model.config, "class_names": list(self.class_map.names)})
        weights = {
            k: v.detach().cpu() for k, v in self.model.state_dict().items() if not k.startswith("discriminator.")
        }
        model.load_state_dict(weights)
        return model.eval()


def trainer_from_params(params: BicoganParams, train_set: ImageSet, val_set: ImageSet | None) -> BiCoGANTrainer:
    """The trainer of a ``BicoganParams`` section on 7-emotion image sets: the class set, seeded networks sized
    for the training images, the EFL schedule and the training settings."""
    class_map = ClassMap.named(params.classes)
    networks = build_seeded_bicogan(
        params.train.seed,
        image_shape=train_set.image_shape,
        num_classes=len(class_map.names),
        z_dim=params.z_dim,
        widths=params.widths,
        latent_width=params.latent_width,
        joint_width=params.joint_width,
    )
    efl = EflSchedule(params.alpha, params.rho, params.phi)
    return BiCoGANTrainer(networks, train_set, val_set, params.train, class_map, efl)
