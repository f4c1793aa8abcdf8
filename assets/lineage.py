"""What the Dagster instance knows about the data: the latest shard set and whether its blocking checks passed.

Training reads the shard set that the instance last materialized (true lineage), and retraining starts only for
a shard set whose blocking checks all passed in the run that built it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance, Failure

from assets.checks import SHARD_CHECKS

EMOTIONSET = AssetKey("emotionset_shards")
# every blocking check on the shards (one list: assets.checks): training and audits wait for all of them
SHARD_CHECK_NAMES = tuple(key.name for check in SHARD_CHECKS for key in check.check_keys)


@dataclass(frozen=True)
class ShardSetRecord:
    path: Path
    version: str
    run_id: str


def latest_shard_set(instance: DagsterInstance) -> ShardSetRecord | None:
    event = instance.get_latest_materialization_event(EMOTIONSET)
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    return ShardSetRecord(Path(str(metadata["shard_set_path"].value)), str(metadata["version"].value), event.run_id)


def shard_checks_passed(instance: DagsterInstance, shard_set: ShardSetRecord) -> tuple[bool, str]:
    """True when every blocking check on the emotionset ran in the run that built ``shard_set`` and passed."""
    problems = []
    for name in SHARD_CHECK_NAMES:
        record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(EMOTIONSET, name))
        if record is None or record.run_id != shard_set.run_id:
            problems.append(f"{name}: not evaluated for shard set {shard_set.version}")
        elif record.evaluation is None or not record.evaluation.passed:
            problems.append(f"{name}: failed")
    return (not problems, "; ".join(problems) or "all shard checks passed")


def ready_shard_set(instance: DagsterInstance) -> tuple[ShardSetRecord | None, str]:
    """The latest shard set when every blocking check passed on it; otherwise None and why."""
    record = latest_shard_set(instance)
    if record is None:
        return None, "no EmotionSet shards materialized yet: materialize emotionset_shards first"
    passed, detail = shard_checks_passed(instance, record)
    return (record, detail) if passed else (None, f"shard set {record.version} failed its checks: {detail}")


def checked_shard_set(instance: DagsterInstance) -> ShardSetRecord:
    """``ready_shard_set`` for an asset: the shard set, or a Failure saying what is missing."""
    record, why = ready_shard_set(instance)
    if record is None:
        raise Failure(why)
    return record


def latest_partition_metadata(instance: DagsterInstance, key: AssetKey, partition: str) -> dict | None:
    """The metadata of an asset partition's latest materialization, as plain values."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1)
    if not records.records:
        return None
    materialization = records.records[0].asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization else None
