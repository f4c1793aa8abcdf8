"""The judge tests' fixtures: one thread, and the real CK+48 crops as an ``ImageSet`` (``judge_faces``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from judge_faces import load_ckplus

from flowmodels.data import ImageSet


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors this small run fastest on one thread on a busy 2-core machine, and every test then sees one
    summation order (the bitwise resume comparison needs it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ck_faces(datasets_dir: Path) -> ImageSet:
    """All CK+48 crops in the 7-emotion scheme, 48x48."""
    return load_ckplus(datasets_dir)
