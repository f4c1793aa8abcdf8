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
