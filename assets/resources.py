"""Dagster resources: thin handles on emoflow's configuration (params.yaml and the home folder)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from dagster import ConfigurableResource

from pipelines.params import DEFAULT_PARAMS_PATH, DataParams, Params, emoflow_home, load_params


def default_params_path() -> str:
    """EMOFLOW_PARAMS when set (tests and alternative configurations), else the project's params.yaml."""
    return os.environ.get("EMOFLOW_PARAMS", str(DEFAULT_PARAMS_PATH))


class EmoflowConfig(ConfigurableResource):
    """Where params come from and where emoflow writes; empty fields fall back to params/EMOFLOW_HOME."""

    params_path: str = ""
    home: str = ""
    raw_root: str = ""
    sources: list[str] = []
    mnist_root: str = ""
    shards: str = ""  # a shard set (or shards root) to train on instead of the instance's latest emotionset_shards
    max_steps: int = 0  # > 0 overrides params train.max_steps (quick runs: `emoflow run --max-steps`)
    progress_bars: bool = False  # tqdm on the terminal (the CLI turns it on)

    def params(self) -> Params:
        return load_params(self.params_path or default_params_path())

    def data(self) -> DataParams:
        data = self.params().data
        if self.raw_root:
            data = dataclasses.replace(data, raw_root=str(Path(self.raw_root).resolve()))
        return data

    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else emoflow_home()

    def enabled_sources(self) -> list[str]:
        return list(self.sources) if self.sources else list(self.data().sources)

    def shards_root(self) -> Path:
        return self.home_path() / "shards"

    def mnist_root_path(self) -> Path:
        return Path(self.mnist_root).resolve() if self.mnist_root else self.params().mnist.root_path()

    def train_overrides(self) -> dict:
        return {"max_steps": self.max_steps} if self.max_steps > 0 else {}
