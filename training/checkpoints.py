"""Checkpoint files: written atomically, ``last.pt`` published as the newest, old ones pruned.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, loaded with ``weights_only=True``
(no pickled code runs on load).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def to_cpu(obj: Any) -> Any:
    """A nested structure with every tensor detached and on the CPU (what a checkpoint holds)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


def jsonable(obj: Any) -> Any:
    """Tuples as lists, recursively: a config compares equal to itself after a round trip through a file."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def state_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): equal digests = identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1) first: a 0-dim tensor (batch norm's num_batches_tracked) cannot be viewed as bytes
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def checkpoint_path(checkpoint_dir: Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"step-{step:07d}.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def publish_last(step_path: Path, last: Path) -> None:
    """``last.pt`` := the step file, atomically (a hard link when the filesystem allows, else a copy)."""
    tmp = last.with_name(f".{last.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(step_path, tmp)
    except OSError:
        shutil.copyfile(step_path, tmp)
    os.replace(tmp, last)


def prune(checkpoint_dir: Path, keep: int | None) -> None:
    """Keep the newest ``keep`` step files (None: all); ``last.pt`` always stays."""
    if keep is None:
        return
    files = sorted(Path(checkpoint_dir).glob("step-*.pt"))
    for old in files[:-keep]:
        old.unlink(missing_ok=True)


def load_checkpoint(path) -> dict:
    """A checkpoint written by ``training.run_training`` (``weights_only=True``), on the CPU."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
