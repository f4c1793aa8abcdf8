"""Which device to train on, and the few collective operations a distributed (torchrun) run needs."""

from __future__ import annotations

from typing import Any

import torch

from pipelines.devices import resolve_device  # noqa: F401  (training's device choice is the pipeline's)


def distributed_context() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (every rank gets the same answer); ``flag`` in one process."""
    _, world = distributed_context()
    if world == 1:
        return bool(flag)
    box = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(box)
    return bool(box.item() > 0)


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of ``value`` over the ranks; ``value`` itself in one process."""
    _, world = distributed_context()
    if world == 1:
        return float(value)
    box = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(box)
    return float(box.item()) / world


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    _, world = distributed_context()
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
