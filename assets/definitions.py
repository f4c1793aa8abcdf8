"""The one Dagster ``Definitions`` for emoflow: `dagster dev -w workspace.yaml` loads this module."""

from __future__ import annotations

from dagster import Definitions

from assets.checks import SHARD_CHECKS
from assets.data_assets import emotionset_shards, staged_source
from assets.jobs import prepare_emotionset_job, stage_sources_job
from assets.resources import EmoflowConfig

defs = Definitions(
    assets=[staged_source, emotionset_shards],
    asset_checks=SHARD_CHECKS,
    jobs=[stage_sources_job, prepare_emotionset_job],
    resources={"emoflow": EmoflowConfig()},
)
