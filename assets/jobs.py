"""Jobs, by string selection (Dagster's selection syntax)."""

from __future__ import annotations

from dagster import define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def build_jobs() -> dict[str, UnresolvedAssetJobDefinition]:
    return {
        # Stages one source per run (partitioned: launch one run per source, or a backfill of all).
        "stage_sources": define_asset_job("stage_sources", selection="staged_source"),
        # Builds the EmotionSet and runs its blocking checks (stages any source not staged yet).
        "prepare_emotionset": define_asset_job("prepare_emotionset", selection="emotionset_shards"),
        # Trains and evaluates models on one dataset partition; schedules and sensors narrow it to the variants
        # they retrain with each RunRequest's asset_selection.
        "train_and_evaluate": define_asset_job(
            "train_and_evaluate", selection='key:"training_data" or key:"train_*" or key:"evaluate_*"'
        ),
        "ablation": define_asset_job("ablation", selection='key:"mnist_digits" or key:"ablation_table"'),
    }
