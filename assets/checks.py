"""Blocking asset checks on the EmotionSet shards: the Great Expectations suites of pipelines.validation."""

import json
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset_check,
)

from pipelines.validation import (
    shard_metadata_frame,
    validate_conservation,
    validate_duplicates,
    validate_rows,
    validate_schema,
    validate_subjects,
)

SHARDS = "emotionset_shards"


def _manifest(path: str) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def _failures_table(failures: list[dict]) -> MetadataValue:
    """The failed expectations as a Dagster table: one row each, its details as JSON text."""
    schema = TableSchema(columns=[TableColumn("expectation", "string"), TableColumn("details", "string")])
    rows = [
        TableRecord(
            {
                "expectation": str(f.get("expectation", "")),
                "details": json.dumps({k: v for k, v in f.items() if k != "expectation"}, default=str),
            }
        )
        for f in failures
    ]
    return MetadataValue.table(rows, schema=schema)


def _result(outcome) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.success,
        metadata={
            "expectations": len(outcome.expectations),
            "failed": len(outcome.failures),
            "failures": _failures_table(outcome.failures),
            **{k: v for k, v in outcome.stats.items()},
        },
    )


@asset_check(asset=SHARDS, blocking=True, description="Every file has the documented schema.")
def shards_schema(emotionset_shards: str) -> AssetCheckResult:
    return _result(validate_schema(Path(emotionset_shards)))


@asset_check(
    asset=SHARDS,
    blocking=True,
    description="No nulls, labels in the 7-emotion scheme, pixel bytes = H*W, faces of the params' size, unique ids.",
)
def shards_rows(emotionset_shards: str) -> AssetCheckResult:
    frame = shard_metadata_frame(Path(emotionset_shards))
    return _result(validate_rows(frame, tuple(_manifest(emotionset_shards)["image_size"])))


@asset_check(asset=SHARDS, blocking=True, description="No subject appears in two splits.")
def shards_subject_independent(emotionset_shards: str) -> AssetCheckResult:
    return _result(validate_subjects(shard_metadata_frame(Path(emotionset_shards))))


@asset_check(asset=SHARDS, blocking=True, description="Rows in = rows out + rows quarantined.")
def shards_rows_conserved(emotionset_shards: str) -> AssetCheckResult:
    return _result(validate_conservation(Path(emotionset_shards), _manifest(emotionset_shards)))


@asset_check(
    asset=SHARDS,
    blocking=True,
    description="No duplicate group (identical or near-copy faces, found again on the written rows) spans splits.",
)
def shards_no_duplicates_across_splits(emotionset_shards: str) -> AssetCheckResult:
    return _result(validate_duplicates(Path(emotionset_shards), _manifest(emotionset_shards)))


SHARD_CHECKS: list[AssetChecksDefinition] = [
    shards_schema,
    shards_rows,
    shards_subject_independent,
    shards_rows_conserved,
    shards_no_duplicates_across_splits,
]
