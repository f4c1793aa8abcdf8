"""Jobs, built from object selections only (Dagster's string selection parser clashes with DVC's antlr pin)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from assets.data_assets import emotionset_shards, staged_source

# Stages one source per run (partitioned: launch one run per source, or a backfill of all).
stage_sources_job = define_asset_job("stage_sources", selection=AssetSelection.assets(staged_source))
# Builds the EmotionSet and runs its blocking checks (stages any source not staged yet).
prepare_emotionset_job = define_asset_job("prepare_emotionset", selection=AssetSelection.assets(emotionset_shards))
