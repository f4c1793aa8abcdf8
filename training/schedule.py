"""Optimizers by name and the learning-rate warm-up every family uses (a pure function of the step)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

OPTIMIZERS = ("adam", "adamax", "adamw")


def make_optimizer(
    name: str,
    params: Iterable,
    lr: float,
    betas: tuple[float, float] | None = None,
    weight_decay: float | None = None,
) -> torch.optim.Optimizer:
    """Adam, Adamax or AdamW at ``lr`` (``betas``: torch's defaults unless given; GANs use (0.5, 0.999)).
    ``weight_decay``: torch's default unless given (decoupled for AdamW, an L2 term for Adam and Adamax)."""
    kwargs: dict[str, Any] = {"lr": lr}
    if betas is not None:
        kwargs["betas"] = tuple(betas)
    if weight_decay is not None:
        kwargs["weight_decay"] = float(weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if name == "adamax":
        return torch.optim.Adamax(params, **kwargs)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """The learning rate of (0-based) step ``step``: linear from lr / warmup_steps to lr, then constant."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


class WarmupSchedule:
    """Sets the optimizers' learning rate to ``warmup_lr(step)`` before every step; ``state_dict`` for
    checkpoints (the rate is a pure function of the step, so the state is just the step)."""

    def __init__(self, optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer], lr: float, warmup_steps: int):
        self.optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.step_index = 0

    def apply(self, step: int) -> float:
        self.step_index = step
        lr = warmup_lr(step, self.lr, self.warmup_steps)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "linear_warmup_constant",
            "lr": self.lr,
            "warmup_steps": self.warmup_steps,
            "step": self.step_index,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_index = int(state["step"])
