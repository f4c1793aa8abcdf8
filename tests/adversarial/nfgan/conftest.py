"""Fixtures of the NFGAN tests: real JAFFE faces at the paper's 64x64 (a JAFFE-only shard set built through MTCNN
once per session, about 15 s), and one thread per test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors run fastest on one thread on a busy 2-core machine, and the tests see one summation order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def jaffe64(tmp_path_factory, datasets_dir):
    """Real JAFFE through the face stage at 64x64, subject-independent splits, no folds (``ShardSet``)."""
    from pipelines.prepare import prepare

    from fixtures.rawroots import data_params

    root = tmp_path_factory.mktemp("jaffe64")
    raw = root / "raw"
    raw.mkdir()
    (raw / "jaffe").symlink_to(datasets_dir / "jaffe")
    return prepare(data_params(raw, sources=("jaffe",), image_size=(64, 64), folds=0), root / "home")
