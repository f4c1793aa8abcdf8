"""Training a flow: ``FlowTrainer`` (what ``training.run_training`` drives) and ``train`` (the two together).

Every random choice is a pure function of (seed, step) (``training.seeds``), so a run interrupted after a
checkpoint and resumed computes what an uninterrupted run computes:

- data order: epoch e is a permutation drawn from (seed, "epoch", e); the last partial batch is dropped;
- dequantisation noise: drawn for the whole global batch from (seed, "noise", step);
- actnorm's data-dependent initialisation: ``init_batch`` images chosen by (seed, "init"), dequantised with
  noise seeded by (seed, "init-noise");
- the learning rate: linear warm-up to ``lr`` over ``warmup_steps``, then constant (``training.schedule``).

Distributed (torchrun): the *global* batch is ``batch_size``; rank r takes the r-th of N equal slices of every
global batch (indices and noise), so N processes compute what one process computes (DDP averages the equal
slices' gradients: the gradient of the global mean). Actnorm is initialised on rank 0 only; DDP's constructor
broadcasts rank 0's parameters and buffers (the "initialized" flags included), and ``_verify_replicas`` checks
that every rank then holds the same weights and read the same data before the first step.

bf16 (``train.bf16``): the conditioners' convolutions run under bf16 autocast; the 1x1 convolutions and every
log-determinant stay float32 (the layers take care of it), and so does the loss.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowmodels.data import ImageSet
from flowmodels.layers.actnorm import ActNorm
from flowmodels.model import FlowModel
from flowmodels.scoring import dataset_bits_per_dim
from pipelines.params import TrainParams
from training.checkpoints import load_checkpoint, state_digest
from training.devices import any_rank, distributed_context, mean_over_ranks, resolve_device
from training.loop import LoopConfig, StepReport, TrainResult, run_training
from training.schedule import WarmupSchedule, make_optimizer
from training.seeds import EpochBatches, derive_seed, generator, seeded, uniform

log = logging.getLogger(__name__)


def build_seeded_model(seed: int, variant: str, image_shape, num_classes: int | None = None, **hparams) -> FlowModel:
    """``build_model`` with its random initialisation (the 1x1 convolutions' rotations) drawn from ``seed``,
    leaving the global RNG as it was: two calls with the same arguments give the same weights."""
    from flowmodels.variants import build_model

    with seeded(derive_seed(seed, "model")):
        return build_model(variant, tuple(image_shape), num_classes, **hparams)


def model_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> FlowModel:
    """Rebuild the flow of a checkpoint (``build_model(**config)``) and load its weights, actnorm's
    "initialized" flags included; returned in eval mode on ``device``."""
    from flowmodels.variants import build_model

    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict)
    if state.get("kind") != FlowTrainer.kind:
        raise ValueError(f"not a flow training checkpoint (kind {state.get('kind')!r}, format {state.get('format')!r})")
    config = dict(state["trainer"]["model_config"])
    config["image_shape"] = tuple(config["image_shape"])
    model = build_model(**config)
    model.load_state_dict(state["trainer"]["model"])
    return model.to(device).eval()


class _Objective(nn.Module):
    """What DDP wraps: (the loss to minimise, the terms to report) for a batch with given dequantisation noise
    (so the forward pass goes through DDP's wrapper, as DDP requires, while the noise stays a function of
    (seed, step)). A flow minimises and reports its mean bits/dim."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None, noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        bpd = self.model.bits_per_dim(x, y, noise=noise).mean().float()
        return bpd, {"bpd": bpd}


def _all_initialised(model: nn.Module) -> bool:
    return all(bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm))


class FlowTrainer:
    """One flow, its optimizer and warm-up, and its data: the ``training.Trainer`` of the flow family."""

    kind = "flow"
    model_type: type[nn.Module] = FlowModel
    objective_type: type[nn.Module] = _Objective

    def __init__(self, model: FlowModel, train_set: ImageSet, val_set: ImageSet | None, config: TrainParams):
        if not isinstance(model, self.model_type):
            raise TypeError(f"{type(self).__name__} takes a {self.model_type.__name__}, got {type(model).__name__}")
        self.rank, self.world = distributed_context()
        self.device = resolve_device(config.device, self.rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.model, self.config = model, config
        self.train_set = train_set
        self.val_set = val_set if val_set is not None and len(val_set) else None
        self._check_data()
        if config.batch_size % self.world:
            raise ValueError(
                f"batch_size {config.batch_size} (the global batch) must be divisible by the {self.world} processes"
            )
        self.local_batch = config.batch_size // self.world
        self.batches = EpochBatches(config.seed, len(train_set), config.batch_size)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.labels = train_set.labels if model.conditional else None
        self.data_prints = {
            "train": train_set.fingerprint(),
            "val": None if self.val_set is None else self.val_set.fingerprint(),
        }
        model.to(self.device).train()
        self.optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
        self.schedule = WarmupSchedule(self.optimizer, config.lr, config.warmup_steps)
        self.objective: nn.Module = self.objective_type(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_norm = config.grad_clip if config.grad_clip else math.inf

    def _check_data(self) -> None:
        model = self.model
        for s in (self.train_set, self.val_set):
            if s is None:
                continue
            if s.image_shape != tuple(model.image_shape):
                raise ValueError(f"model expects images {tuple(model.image_shape)}, {s.name} has {s.image_shape}")
            if model.conditional:
                if s.labels is None:
                    raise ValueError(f"a class-conditional model needs labels, and {s.name} has none")
                if len(s) and int(s.labels.max()) >= model.num_classes:
                    raise ValueError(
                        f"{s.name} has labels up to {int(s.labels.max())}; the model has {model.num_classes} classes"
                    )
        if len(self.train_set) < self.config.batch_size:
            raise ValueError(
                f"{self.train_set.name} has {len(self.train_set)} images, fewer than one batch of {self.config.batch_size}"
            )

    # --- the Trainer protocol -------------------------------------------------------------------------------
    def initialize(self) -> str:
        if _all_initialised(self.model):
            how = "given"
        else:
            how = "data"
            if self.rank == 0:  # the other ranks receive it through DDP's broadcast
                idx = torch.randperm(len(self.train_set), generator=generator(self.config.seed, "init"))[
                    : self.config.init_batch
                ]
                x0 = self.train_set.images[idx].to(self.device)
                y0 = self.labels[idx].to(self.device) if self.labels is not None else None
                with seeded(derive_seed(self.config.seed, "init-noise"), self.device):
                    self.model.initialize(x0, y0)
        self._wrap_distributed()
        return how

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self._wrap_distributed()

    def state_dict(self) -> dict[str, Any]:
        from training.checkpoints import jsonable

        return {
            "model_config": jsonable(self.model.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
        }

    def resume_key(self) -> dict[str, Any]:
        return {"train": self.config.trajectory(), "model": self.model.config, "data": self.data_prints}

    def train_step(self, step: int) -> StepReport:
        cfg, rank, local = self.config, self.rank, self.local_batch
        idx = self.batches(step)[rank * local : (rank + 1) * local]
        x = self.train_set.images[idx].to(self.device, non_blocking=True)
        y = self.labels[idx].to(self.device, non_blocking=True) if self.labels is not None else None
        noise = uniform(cfg.seed, "noise", step, (cfg.batch_size, *self.train_set.image_shape))[
            rank * local : (rank + 1) * local
        ]
        lr = self.schedule.apply(step)
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        )
        with autocast:
            loss, terms = self.objective(x, y, noise.to(self.device, non_blocking=True))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        loss_value = float(loss.detach())
        bad = any_rank(not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))), self.device)
        reported = {name: mean_over_ranks(float(value.detach()), self.device) for name, value in terms.items()}
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            detail = f"non-finite loss {mean_over_ranks(loss_value, self.device)} or gradient norm {float(grad_norm)}"
            return StepReport(reported, cfg.batch_size, {"lr": lr}, skipped=True, detail=detail)
        self.optimizer.step()
        return StepReport(reported, cfg.batch_size, {"lr": lr})

    def validate(self, step: int) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        self.model.eval()
        value = dataset_bits_per_dim(
            self.model,
            self.val_set,
            batch_size=max(self.local_batch, 64),
            seed=derive_seed(self.config.seed, "val"),
            device=self.device,
            rank=self.rank,
            world=self.world,
        )["standard"]
        self.model.train()
        return {"val_bpd": value}

    def divergence_advice(self) -> str:
        cfg, model = self.config, self.model
        hints = [f"a lower learning rate (lr is {cfg.lr:g})", f"a longer warm-up (warmup_steps is {cfg.warmup_steps})"]
        if not cfg.grad_clip:
            hints.append("gradient clipping (grad_clip: 50)")
        if str(model.config.get("variant", "")).startswith("glow") and model.config.get("glow_coupling") != "additive":
            hints.append("additive coupling (model hparams glow_coupling: additive), which is more stable than affine")
        else:
            hints.append("a Glow variant with additive coupling (glow_coupling: additive)")
        if cfg.bf16:
            hints.append("bf16 off (bf16: false)")
        return ", ".join(hints)

    # --- distributed -----------------------------------------------------------------------------------------
    def _wrap_distributed(self) -> None:
        if self.world == 1 or isinstance(self.objective, nn.parallel.DistributedDataParallel):
            return
        self.objective = nn.parallel.DistributedDataParallel(
            self.objective_type(self.model),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # the constructor broadcasts rank 0's buffers (actnorm's "initialized" flags, the 1x1 convolutions'
            # permutations); they never change afterwards, so no re-broadcast before every forward
            forward_sync_buffers=False,
        )
        self._verify_replicas()

    def _verify_replicas(self) -> None:
        """After DDP's constructor every rank must hold rank 0's weights and "initialized" flags (a rank that
        still says "not initialised" would re-initialise from its own slice: the scrambled initialisation
        public Glow ports hit), and must have loaded the same training images."""
        digests: list[Any] = [None] * self.world
        mine = (_all_initialised(self.model), state_digest(self.model), self.data_prints["train"]["sha256"])
        torch.distributed.all_gather_object(digests, mine)
        problems = []
        if any(not flag for flag, _, _ in digests):
            problems.append(f"actnorm not initialised on rank(s) {[r for r, d in enumerate(digests) if not d[0]]}")
        if any(d[1] != digests[0][1] for d in digests):
            problems.append("some ranks hold other weights than rank 0 after DDP's broadcast")
        if any(d[2] != digests[0][2] for d in digests):
            problems.append("some ranks loaded other training images than rank 0 (sha256 differs)")
        if problems:
            raise RuntimeError("; ".join(problems))


def train(
    model: FlowModel,
    train_set: ImageSet,
    val_set: ImageSet | None,
    config: TrainParams,
    checkpoint_dir: Path,
    on_progress: Callable[[dict], None] | None = None,
    progress_bar: bool = False,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` in place (see the module docstring); the model is left on the training device.
    ``result.final["bpd"]`` is the last window's training bits/dim, ``result.val["val_bpd"]`` the validation's."""
    trainer = FlowTrainer(model, train_set, val_set, config)
    return run_training(
        trainer,
        LoopConfig.from_settings(config),
        Path(checkpoint_dir),
        on_progress=on_progress,
        progress_bar=progress_bar,
        resume=resume,
        description=f"train {model.config.get('variant', 'flow')}",
    )
