"""Which torch device to run on: one answer for face detection, training and evaluation."""

from __future__ import annotations

import os


def resolve_device(name: str = "auto", rank: int = 0):
    """A ``torch.device``: "auto" is CUDA when present (in a distributed run the GPU of LOCAL_RANK), else the
    CPU; "cuda" without a GPU is an error (asking for a GPU and silently running on the CPU hides a broken
    setup)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA GPU")
        local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
        return torch.device("cuda", local)
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:<n> or mps") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return device
