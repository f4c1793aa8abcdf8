"""Shared fixtures. Real datasets are read in place from EMOFLOW_DATASETS (default ../shared/datasets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def datasets_root() -> Path:
    return Path(os.environ.get("EMOFLOW_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets")).resolve()


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    root = datasets_root()
    if not root.is_dir():
        pytest.fail(
            f"real datasets not found at {root}: set EMOFLOW_DATASETS to the folder holding jaffe/, ckplus48/, "
            "fer2013/, faces/, mnist/"
        )
    return root


def pytest_collection_modifyitems(config, items):
    """``cuda`` tests need a GPU: on a machine without one they are reported skipped, saying why."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here): bench/gpu_check.sh runs these on one")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def emotionset(tmp_path_factory, datasets_dir):
    """One real EmotionSet shard set for the model families' tests: JAFFE (through MTCNN), CK+48 and the FER2013
    train zip, 48x48, subject-independent splits and 10 folds (``pipelines.shards.ShardSet``; ``.path`` is the
    version folder). Built once per session: about half a minute on two cores."""
    from pipelines.prepare import prepare

    from fixtures.rawroots import data_params, make_raw_root

    root = tmp_path_factory.mktemp("emotionset")
    raw = make_raw_root(root / "raw", datasets_dir, fer=True)
    return prepare(data_params(raw, sources=("jaffe", "ckplus", "fer2013")), root / "home")
