"""Training the emotion judge: ``JudgeTrainer`` (what ``training.run_training`` drives), early-stopped on val accuracy.

Every random choice is a pure function of (seed, step), so a resumed run computes what an uninterrupted one does:

- data order: ``training.seeds.EpochBatches`` (epoch e is a permutation drawn from (seed, "epoch", e));
- augmentation: ``config.augment`` drawn from (seed, "augment", step) (``training.augment``);
- dropout: the forward pass runs with the global RNG seeded from (seed, "dropout", step) and restored after;
- the learning rate: linear warm-up to ``lr`` over ``warmup_steps``, then constant (``training.schedule``).

The loss is cross-entropy with label smoothing and, with ``class_weighting: balanced``, class weights
n / (C * n_c) from the *training* label counts (a class absent from training weighs 0), the weights sklearn's
"balanced" uses: each class then contributes equally, whatever its share of the set (FER2013's disgust is 1.5% of
it, happiness 25%). Early stopping keeps a copy of the weights of the best validation accuracy in the trainer's
state (so it survives a resume); ``stop_reason`` ends the run after ``patience`` validations without a new best,
and ``final_model`` / ``judge_from_checkpoint`` give the model with those best weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flowmodels.data import ImageSet
from pipelines.model_params import JudgeTrainParams
from recognition.network import EmotionJudge, build_judge
from scoring.classification import classification_metrics, confusion_matrix
from training.checkpoints import jsonable, load_checkpoint
from training.devices import distributed_context, resolve_device
from training.loop import StepReport
from training.schedule import WarmupSchedule, make_optimizer
from training.seeds import EpochBatches, derive_seed, seeded


def balanced_class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """float32 (C,): n / (C * count_c) for every class in ``labels``, 0 for a class absent from them."""
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    if counts.numel() > num_classes:
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    n = float(counts.sum())
    weights = torch.where(counts > 0, n / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def judge_loss(logits: Tensor, labels: Tensor, class_weights: Tensor | None, label_smoothing: float) -> Tensor:
    """Weighted, label-smoothed cross-entropy (torch's definition): with weights w and smoothing e over C classes,
    sum_i [(1 - e) w_{y_i} (-log p_i,y_i) + (e / C) sum_c w_c (-log p_i,c)] / sum_i w_{y_i}."""
    return F.cross_entropy(logits.float(), labels, weight=class_weights, label_smoothing=label_smoothing)


class JudgeTrainer:
    """One ``EmotionJudge``, its optimizer, warm-up and data, and the early-stopping record: the ``training.Trainer``
    of the judge family (single process)."""

    kind = "judge"

    def __init__(self, model: EmotionJudge, train_set: ImageSet, val_set: ImageSet | None, config: JudgeTrainParams):
        if not isinstance(model, EmotionJudge):
            raise TypeError(f"JudgeTrainer takes an EmotionJudge (recognition.build_judge), got {type(model).__name__}")
        rank, world = distributed_context()
        if world > 1:
            raise NotImplementedError("the judge trains in one process (its batch norm is not synchronised)")
        self.device = resolve_device(config.device, rank)
        self.model, self.config = model, config
        self.train_set = train_set
        self.val_set = val_set if val_set is not None and len(val_set) else None
        self._check_data()
        self.batches = EpochBatches(config.seed, len(train_set), config.batch_size)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.augment = config.augment.build()
        self.class_weights = (
            balanced_class_weights(train_set.labels, model.num_classes).to(self.device)
            if config.class_weighting == "balanced"
            else None
        )
        self.data_prints = {
            "train": train_set.fingerprint(),
            "val": None if self.val_set is None else self.val_set.fingerprint(),
        }
        model.to(self.device).train()
        self.optimizer = make_optimizer(
            config.optimizer, model.parameters(), config.lr, weight_decay=config.weight_decay
        )
        self.schedule = WarmupSchedule(self.optimizer, config.lr, config.warmup_steps)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.best_accuracy: float | None = None
        self.best_step: int | None = None
        self.since_best = 0  # validations since the last new best
        self.best_weights: dict[str, Tensor] | None = None

    def _check_data(self) -> None:
        model = self.model
        for s in (self.train_set, self.val_set):
            if s is None:
                continue
            if s.image_shape != tuple(model.image_shape):
                raise ValueError(f"the judge expects images {tuple(model.image_shape)}, {s.name} has {s.image_shape}")
            if s.labels is None:
                raise ValueError(f"the judge learns from labels, and {s.name} has none")
            if len(s) and int(s.labels.max()) >= model.num_classes:
                raise ValueError(f"{s.name} has labels up to {int(s.labels.max())}; the judge has {model.num_classes}")
        if len(self.train_set) < self.config.batch_size:
            raise ValueError(
                f"{self.train_set.name} has {len(self.train_set)} images, fewer than one batch of {self.config.batch_size}"
            )

    # --- the Trainer protocol -------------------------------------------------------------------------------
    def initialize(self) -> str:
        return "random"  # no data-dependent initialisation: the weights are build_judge's

    def train_step(self, step: int) -> StepReport:
        cfg = self.config
        idx = self.batches(step)
        x = self.augment(self.train_set.images[idx], cfg.seed, step).to(self.device, non_blocking=True)
        y = self.train_set.labels[idx].to(self.device, non_blocking=True)
        lr = self.schedule.apply(step)
        self.optimizer.zero_grad(set_to_none=True)
        with seeded(derive_seed(cfg.seed, "dropout", step), self.device):
            logits = self.model(x)
        loss = judge_loss(logits, y, self.class_weights, cfg.label_smoothing)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, math.inf))
        loss_value = float(loss.detach())
        with torch.no_grad():
            accuracy = float((logits.argmax(1) == y).float().mean())
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            detail = f"non-finite loss {loss_value} or gradient norm {grad_norm}"
            return StepReport({"loss": loss_value}, cfg.batch_size, {"lr": lr}, skipped=True, detail=detail)
        self.optimizer.step()
        return StepReport({"loss": loss_value, "accuracy": accuracy}, cfg.batch_size, {"lr": lr})

    def validate(self, step: int) -> dict[str, float] | None:
        """val_accuracy, val_balanced_accuracy (mean recall over the classes present) and val_loss (plain
        cross-entropy: no weights, no smoothing); a new best accuracy is remembered with its weights."""
        if self.val_set is None:
            return None
        logits = self._val_logits()
        labels = self.val_set.labels
        predicted = logits.argmax(1)
        confusion = confusion_matrix(labels.numpy(), predicted.numpy(), self.model.num_classes)
        metrics = classification_metrics(confusion, self.val_set.class_names or [str(c) for c in range(len(confusion))])
        result = {
            "val_accuracy": metrics["accuracy"],
            "val_balanced_accuracy": metrics["balanced_accuracy"],
            "val_loss": float(F.cross_entropy(logits.double(), labels)),
        }
        if self.best_accuracy is None or result["val_accuracy"] > self.best_accuracy:
            self.best_accuracy, self.best_step, self.since_best = result["val_accuracy"], step, 0
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.since_best += 1
        return result

    def _val_logits(self) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        out = []
        batch = max(self.config.batch_size, 256)
        with torch.inference_mode():
            for start in range(0, len(self.val_set), batch):
                x = self.val_set.images[start : start + batch].to(self.device, non_blocking=True)
                out.append(self.model(x).float().cpu())
        self.model.train(was_training)
        return torch.cat(out)

    def stop_reason(self) -> str | None:
        patience = self.config.patience
        if patience is not None and self.since_best >= patience:
            return "early_stop"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "model_config": jsonable(self.model.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "early_stopping": {
                "best_accuracy": self.best_accuracy,
                "best_step": self.best_step,
                "since_best": self.since_best,
            },
            "best_model": self.best_weights,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        record = state["early_stopping"]
        self.best_accuracy, self.best_step = record["best_accuracy"], record["best_step"]
        self.since_best = int(record["since_best"])
        best = state.get("best_model")
        self.best_weights = None if best is None else {k: v.detach().to("cpu", copy=True) for k, v in best.items()}

    def resume_key(self) -> dict[str, Any]:
        return {"train": self.config.trajectory(), "model": self.model.config, "data": self.data_prints}

    def divergence_advice(self) -> str:
        cfg = self.config
        hints = [f"a lower learning rate (lr is {cfg.lr:g})", f"a longer warm-up (warmup_steps is {cfg.warmup_steps})"]
        if cfg.class_weighting == "balanced":
            hints.append("class_weighting: none (rare classes weigh up to ~10x in the balanced loss)")
        return ", ".join(hints)

    # --- the result ------------------------------------------------------------------------------------------
    def final_model(self) -> EmotionJudge:
        """A copy of the judge holding the best-validation-accuracy weights (the current ones when it never
        validated), in eval mode on the training device; the trainer's own model is left as it is."""
        model = copy.deepcopy(self.model)
        if self.best_weights is not None:
            model.load_state_dict(self.best_weights)
        return model.eval()


def judge_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> EmotionJudge:
    """Rebuild the judge of a training checkpoint (``last.pt``; ``build_judge(**model_config)``) with the weights of
    its best validation accuracy (its last weights when it never validated); in eval mode on ``device``."""
    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(Path(path_or_dict))
    if state.get("kind") != JudgeTrainer.kind:
        raise ValueError(
            f"not a judge training checkpoint (kind {state.get('kind')!r}, format {state.get('format')!r})"
        )
    trainer_state = state["trainer"]
    model = build_judge(**trainer_state["model_config"])
    best = trainer_state.get("best_model")
    model.load_state_dict(best if best is not None else trainer_state["model"])
    return model.to(device).eval()
