"""Jobs, built from object selections only (Dagster's string selection parser clashes with DVC's antlr pin)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from assets.data_assets import emotionset_shards, staged_source
from assets.model_assets import EVALUATE_ASSETS, TRAIN_ASSETS, ablation_table, mnist_digits

# Stages one source per run (partitioned: launch one run per source, or a backfill of all).
stage_sources_job = define_asset_job("stage_sources", selection=AssetSelection.assets(staged_source))
# Builds the EmotionSet and runs its blocking checks (stages any source not staged yet).
prepare_emotionset_job = define_asset_job("prepare_emotionset", selection=AssetSelection.assets(emotionset_shards))
# Trains and evaluates variants on one dataset partition; schedules and sensors narrow it to the variants they
# retrain with each RunRequest's asset_selection.
train_and_evaluate_job = define_asset_job(
    "train_and_evaluate", selection=AssetSelection.assets(*TRAIN_ASSETS, *EVALUATE_ASSETS)
)
ablation_job = define_asset_job("ablation", selection=AssetSelection.assets(mnist_digits, ablation_table))
