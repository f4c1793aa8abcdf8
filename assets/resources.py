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
