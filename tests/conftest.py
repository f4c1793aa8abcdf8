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
