"""Training NFGAN: ``NFGANTrainer`` (what ``training.run_training`` drives), Algorithm 1 of the paper.

One step, on a batch of (expressive input x, neutral target y) pairs:

1. x~ = Dec(Enc(x)).
2. The generator's losses: the shared part L_feat + lambda_1 L_id + lambda_2 L_pixel reaches Enc and Dec; the
   decoder-only part eta L_GAN-Dec + lambda_3 L_sym reaches Dec alone (section 4.6: "the error signal from adversarial
   loss and symmetry loss will not back-propagate to Enc"), done with a second backward restricted to the decoder's
   parameters. The feature networks are frozen; the discriminator's gradients from L_GAN-Dec are never used.
3. The discriminator minimises only its own loss L_GAN-Dis, real images g against x~ (detached, from step 1).
   The guiding set g of the paper (frontal neutral faces) is the batch's neutral targets y.
4. Both sides step (Adam, betas (0.5, 0.999)); a non-finite loss or gradient skips the whole step.

Every random choice is a pure function of (seed, step) (``training.seeds``): the batch (an epoch permutation of the
pairs) and each pair's horizontal flip (input and target mirrored together: a mirrored face is the same person), so
a resumed run computes what an uninterrupted run computes. ``validate`` measures the held-out pairs (other people):
``val_l1`` is eq. 7 on the [-1, 1] scale, ``val_l1_input`` the same for the do-nothing answer (the input itself).

Loss weights, measured (``params.nfgan.losses``): JAFFE 64x64 pairs (256 train, 57 val of another poser), narrow
networks (Tables 1-3 at 1/4 to 1/8 of the filters), an identity network trained 80 steps, batch 16, lr 2e-4, 300 steps
on one CPU core; held-out L1 from 0.53 at initialisation (dlib distance input -> true neutral: median 0.28):

==========================================  =======  =======  =====  ==============================
weights (perceptual, identity, pixel)       val L1   L_feat   L_id   dlib median output <-> input
==========================================  =======  =======  =====  ==============================
the paper's (1, 3e-3, 1e-3)                 0.594    27.5     449    0.83
(1e-2, 1e-3, 1)                             0.541    35.8     282    0.81
(1e-3, 1e-4, 1): the default                0.399    33.2     501    0.76
pixel only (0, 0, 1)                        0.397    --       --     0.60
==========================================  =======  =======  =====  ==============================

(symmetry 0.3 and adversarial 0.1 throughout). A short budget favours the pixel loss; whether the feature losses pay
off over the paper's long training is not measured here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adversarial.nfgan.identity import IdentityFeatures, IdentityNetwork, to_generator_scale
from adversarial.nfgan.losses import (
    ExternalFeatures,
    discriminator_loss,
    generator_adversarial_loss,
    identity_loss,
    perceptual_loss,
    pixel_loss,
    symmetry_loss,
)
from adversarial.nfgan.networks import Discriminator, Generator, weights_digest
from training.checkpoints import jsonable, load_checkpoint
from training.devices import resolve_device
from training.loop import LoopConfig, StepReport, TrainResult, run_training
from training.schedule import WarmupSchedule, make_optimizer
from training.seeds import EpochBatches, uniform


@dataclass
class PairSet:
    """(input, target) faces, uint8 (N, 1, H, W) each, with the pairs' subjects ("source/subject")."""

    inputs: Tensor
    targets: Tensor
    name: str
    subjects: list[str]

    def __post_init__(self) -> None:
        for t in (self.inputs, self.targets):
            if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.dim() != 4 or t.shape[1] != 1:
                raise ValueError(f"{self.name}: inputs and targets must be uint8 tensors (N, 1, H, W)")
        if self.inputs.shape != self.targets.shape or len(self.subjects) != len(self.inputs):
            raise ValueError(f"{self.name}: inputs, targets and subjects must have one entry per pair")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.inputs.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> dict:
        import hashlib

        digest = hashlib.sha256()
        for t in (self.inputs, self.targets):
            digest.update(np.ascontiguousarray(t.numpy()).data)
        return {"name": self.name, "count": len(self), "shape": list(self.image_shape), "sha256": digest.hexdigest()}


def load_pair_set(shard_set_path, split: str, sources: Sequence[str] | None = None, column: str = "pixels") -> PairSet:
    """One split's pairs (``pipelines.pairs.neutral_pairs``) with their faces."""
    from pipelines.pairs import neutral_pairs, pair_images

    pairs = neutral_pairs(shard_set_path, sources)
    table = pairs.split(split)
    if not table.num_rows:
        raise ValueError(f"{pairs.shard_set}: no {split} pairs (counts by source and split: {pairs.counts()})")
    inputs, targets = pair_images(pairs.shard_set, table, column)
    subjects = [f"{a}/{b}" for a, b in zip(table.column("source").to_pylist(), table.column("subject").to_pylist())]
    return PairSet(
        torch.from_numpy(np.ascontiguousarray(inputs[:, None])),
        torch.from_numpy(np.ascontiguousarray(targets[:, None])),
        f"pairs/{pairs.shard_set.name}/{split}",
        subjects,
    )


def build_extractors(
    identity_network: IdentityNetwork, nfgan: Any, judge: nn.Module | None = None
) -> tuple[nn.Module, nn.Module]:
    """(perceptual, identity) feature extractors for the losses, as ``nfgan`` (``params.nfgan``) chooses:
    L_id on the identity network's last two layers; L_feat on its block ``perceptual_layer`` or on the emotion
    judge's ``features`` (any module with ``features(x in [0, 1])`` and ``image_shape`` (C, H, W))."""
    identity = IdentityFeatures(identity_network, (-2, -1))
    if nfgan.perceptual_features == "identity":
        if nfgan.perceptual_layer >= len(identity_network.blocks):
            raise ValueError(
                f"nfgan.perceptual_layer {nfgan.perceptual_layer}: the identity network has "
                f"{len(identity_network.blocks)} blocks"
            )
        return IdentityFeatures(identity_network, (nfgan.perceptual_layer,)), identity
    if judge is None:
        raise ValueError("nfgan.perceptual_features is 'judge': pass the trained emotion judge")
    return ExternalFeatures(judge, "features", tuple(judge.image_shape[1:])), identity


class NFGANNormalizer(nn.Module):
    """A trained NFGAN generator as a face normalizer: uint8 faces (N, 1, H, W) -> their neutral faces, uint8."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    @property
    def image_size(self) -> tuple[int, int]:
        return self.generator.image_size

    @property
    def config(self) -> dict[str, Any]:
        return self.generator.config

    @torch.no_grad()
    def forward(self, faces: Tensor) -> Tensor:
        if faces.dtype != torch.uint8 or faces.dim() != 4 or tuple(faces.shape[1:]) != (1, *self.image_size):
            raise ValueError(f"normalize takes uint8 faces (N, 1, {self.image_size[0]}, {self.image_size[1]})")
        out = self.generator(to_generator_scale(faces))
        return ((out + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    normalize = forward


def nfgan_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> NFGANNormalizer:
    """The normalizer of a kind-"nfgan" training checkpoint, in eval mode on ``device``."""
    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict)
    if state.get("kind") != NFGANTrainer.kind:
        raise ValueError(f"not an NFGAN training checkpoint (kind {state.get('kind')!r})")
    generator = Generator(**state["trainer"]["generator_config"])
    generator.load_state_dict(state["trainer"]["generator"])
    return NFGANNormalizer(generator).to(device).eval()


def _frozen(module: nn.Module | None, device: torch.device) -> nn.Module | None:
    return None if module is None else module.to(device).eval().requires_grad_(False)


class NFGANTrainer:
    """Generator (Enc + Dec), discriminator, their optimizers and the pairs: the ``training.Trainer`` of NFGAN."""

    kind = "nfgan"

    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        train_pairs: PairSet,
        val_pairs: PairSet | None,
        nfgan: Any,
        perceptual: nn.Module | None = None,
        identity: nn.Module | None = None,
    ):
        self.config, self.weights = nfgan.train, nfgan.losses
        if self.weights.perceptual > 0 and perceptual is None:
            raise ValueError("losses.perceptual > 0 needs a perceptual feature extractor (build_extractors)")
        if self.weights.identity > 0 and identity is None:
            raise ValueError("losses.identity > 0 needs an identity feature extractor (build_extractors)")
        self.device = resolve_device(self.config.device)
        self.generator = generator.to(self.device).train()
        self.discriminator = discriminator.to(self.device).train()
        self.perceptual, self.identity = _frozen(perceptual, self.device), _frozen(identity, self.device)
        expected = (1, *generator.image_size)
        for pairs in (train_pairs, val_pairs):
            if pairs is not None and pairs.image_shape != expected:
                raise ValueError(
                    f"{pairs.name} holds {pairs.image_shape[1]}x{pairs.image_shape[2]} faces; the networks take "
                    f"{expected[1]}x{expected[2]} (build the shards with data.image_size: {list(expected[1:])})"
                )
        if len(train_pairs) < self.config.batch_size:
            raise ValueError(
                f"{train_pairs.name}: {len(train_pairs)} pairs, fewer than one batch of {self.config.batch_size}"
            )
        self.train_pairs = train_pairs
        self.val_pairs = val_pairs if val_pairs is not None and len(val_pairs) else None
        self.batches = EpochBatches(self.config.seed, len(train_pairs), self.config.batch_size)
        self.steps_per_epoch = self.batches.steps_per_epoch
        cfg = self.config
        self.opt_g = make_optimizer(cfg.optimizer, generator.parameters(), cfg.lr, betas=cfg.betas)
        self.opt_d = make_optimizer(cfg.optimizer, discriminator.parameters(), cfg.lr, betas=cfg.betas)
        self.schedule = WarmupSchedule([self.opt_g, self.opt_d], cfg.lr, cfg.warmup_steps)
        self.decoder_params = list(generator.decoder.parameters())
        self.max_norm = cfg.grad_clip if cfg.grad_clip else math.inf
        self.data_prints = {
            "train": train_pairs.fingerprint(),
            "val": None if self.val_pairs is None else self.val_pairs.fingerprint(),
        }

    # --- the Trainer protocol -------------------------------------------------------------------------------
    def initialize(self) -> str:
        return "random"

    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        idx = self.batches(step)
        x = to_generator_scale(self.train_pairs.inputs[idx])
        y = to_generator_scale(self.train_pairs.targets[idx])
        mirrored = (uniform(self.config.seed, "flip", step, (len(idx),)) < self.config.flip)[:, None, None, None]
        x = torch.where(mirrored, x.flip(-1), x)
        y = torch.where(mirrored, y.flip(-1), y)
        return x.to(self.device), y.to(self.device)

    def _shared_terms(self, fake: Tensor, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The losses that reach Enc and Dec (those whose weight is 0 are not computed, except the pixel loss)."""
        terms = {"pixel": pixel_loss(fake, y)}
        if self.weights.perceptual > 0:
            terms["perceptual"] = perceptual_loss(fake, y, self.perceptual)
        if self.weights.identity > 0:
            terms["identity"] = identity_loss(fake, x, self.identity)
        return terms

    def train_step(self, step: int) -> StepReport:
        w = self.weights
        self.generator.train()
        self.discriminator.train()
        x, y = self._batch(step)
        lr = self.schedule.apply(step)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)

        fake = self.generator(x)
        terms = self._shared_terms(fake, x, y)
        terms["symmetry"] = symmetry_loss(fake, w.symmetry_space)
        shared = w.pixel * terms["pixel"]
        shared = shared + w.perceptual * terms.get("perceptual", 0.0) + w.identity * terms.get("identity", 0.0)
        decoder_only = w.symmetry * terms["symmetry"]
        if w.adversarial > 0:
            terms["adversarial"] = generator_adversarial_loss(self.discriminator(fake))
            decoder_only = decoder_only + w.adversarial * terms["adversarial"]
        shared.backward(retain_graph=True)  # Enc and Dec
        torch.autograd.backward(decoder_only, inputs=self.decoder_params)  # Dec alone
        g_norm = torch.nn.utils.clip_grad_norm_(list(self.generator.parameters()), self.max_norm)

        real_logits = self.discriminator(y)
        fake_logits = self.discriminator(fake.detach())
        terms["discriminator"] = discriminator_loss(real_logits, fake_logits)
        terms["discriminator"].backward()
        d_norm = torch.nn.utils.clip_grad_norm_(list(self.discriminator.parameters()), self.max_norm)

        report = {name: float(value.detach()) for name, value in terms.items()}
        report["generator"] = float((shared + decoder_only).detach())
        gauges = {
            "lr": lr,
            "d_real": float(torch.sigmoid(real_logits.detach()).mean()),
            "d_fake": float(torch.sigmoid(fake_logits.detach()).mean()),
        }
        bad = [k for k, v in report.items() if not math.isfinite(v)]
        bad += [
            k
            for k, v in (("generator gradient", g_norm), ("discriminator gradient", d_norm))
            if not math.isfinite(float(v))
        ]
        if bad:
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            return StepReport(report, len(x), gauges, skipped=True, detail="non-finite " + ", ".join(bad))
        self.opt_g.step()
        self.opt_d.step()
        return StepReport(report, len(x), gauges)

    @torch.no_grad()
    def validate(self, step: int, batch_size: int = 128) -> dict[str, float] | None:
        pairs = self.val_pairs
        if pairs is None:
            return None
        self.generator.eval()
        sums: dict[str, float] = {}
        for start in range(0, len(pairs), batch_size):
            x = to_generator_scale(pairs.inputs[start : start + batch_size]).to(self.device)
            y = to_generator_scale(pairs.targets[start : start + batch_size]).to(self.device)
            fake = self.generator(x)
            terms = self._shared_terms(fake, x, y)
            terms["symmetry"] = symmetry_loss(fake, self.weights.symmetry_space)
            terms["l1_input"] = pixel_loss(x, y)
            for name, value in terms.items():  # every term is a batch mean: weight by the batch's size
                sums[name] = sums.get(name, 0.0) + float(value) * len(x)
        self.generator.train()
        means = {k: v / len(pairs) for k, v in sums.items()}
        means["l1"] = means.pop("pixel")
        return {f"val_{k}": v for k, v in sorted(means.items())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator_config": jsonable(self.generator.config),
            "discriminator_config": jsonable(self.discriminator.config),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "scheduler": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.schedule.load_state_dict(state["scheduler"])

    def resume_key(self) -> dict[str, Any]:
        return {
            "train": self.config.trajectory(),
            "losses": self.weights.model_dump(),
            "generator": self.generator.config,
            "discriminator": self.discriminator.config,
            "data": self.data_prints,
            "feature_networks": {
                "perceptual": None if self.perceptual is None else weights_digest(self.perceptual),
                "identity": None if self.identity is None else weights_digest(self.identity),
            },
        }

    def divergence_advice(self) -> str:
        cfg, hints = self.config, [f"a lower learning rate (lr is {self.config.lr:g})"]
        if not cfg.grad_clip:
            hints.append("gradient clipping (grad_clip: 10)")
        hints.append(f"a smaller adversarial weight (losses.adversarial is {self.weights.adversarial:g})")
        return ", ".join(hints)

    def final_model(self) -> NFGANNormalizer:
        return NFGANNormalizer(self.generator).eval()


def train_nfgan(
    generator: Generator,
    discriminator: Discriminator,
    train_pairs: PairSet,
    val_pairs: PairSet | None,
    nfgan: Any,
    checkpoint_dir: Path,
    perceptual: nn.Module | None = None,
    identity: nn.Module | None = None,
    on_progress: Callable[[dict], None] | None = None,
    progress_bar: bool = False,
    resume: bool = True,
) -> tuple[TrainResult, NFGANNormalizer]:
    """Train in place (module docstring) through ``training.run_training``; the result and the normalizer."""
    trainer = NFGANTrainer(generator, discriminator, train_pairs, val_pairs, nfgan, perceptual, identity)
    result = run_training(
        trainer,
        LoopConfig.from_settings(nfgan.train),
        Path(checkpoint_dir),
        on_progress=on_progress,
        progress_bar=progress_bar,
        resume=resume,
        description="train nfgan",
    )
    return result, trainer.final_model()
