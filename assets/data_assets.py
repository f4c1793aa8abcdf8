"""Data assets: raw datasets → staged source rows (partitioned by source) → the versioned EmotionSet shards."""

import json
import time

from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    StaticPartitionsDefinition,
    asset,
)

from assets.resources import EmoflowConfig, default_params_path
from pipelines.params import load_params
from pipelines.prepare import assemble_emotionset, stage_source

# Partitions are the sources enabled in params.yaml when the definitions load.
SOURCE_PARTITIONS = StaticPartitionsDefinition(list(load_params(default_params_path()).data.sources))

LOG_EVERY_SECONDS = 5.0  # the Dagster run log hears about a running source this often (and when it ends)


class _Progress:
    """Per-source progress in the Dagster run log (throttled) and, when the CLI asks, tqdm bars on the terminal."""

    def __init__(self, context: AssetExecutionContext, emoflow: EmoflowConfig):
        self._context = context
        self._last: dict[str, float] = {}
        self._bars = None
        if emoflow.progress_bars:
            from pipelines.progress import SourceProgressBars

            self._bars = SourceProgressBars()

    def __call__(self, event: dict) -> None:
        if self._bars is not None:
            self._bars(event)
        now = time.monotonic()
        if event.get("done") or now - self._last.get(event["source"], 0.0) >= LOG_EVERY_SECONDS:
            self._last[event["source"]] = now
            self._context.log.info(
                f"{event['source']}: {event['rows_in']} rows read, {event['rows_out']} kept, "
                f"{event['quarantined']} quarantined ({event['seconds']} s)"
            )

    def close(self) -> None:
        if self._bars is not None:
            self._bars.close()

def _counts_table(counts: dict) -> str:
    return "| key | rows |\n|---|---:|\n" + "\n".join(f"| {k} | {v} |" for k, v in counts.items())

@asset(
    partitions_def=SOURCE_PARTITIONS,
    group_name="data",
    kinds={"python", "parquet"},
    description="One source read, labels harmonised, faces detected and aligned, SVD-truncated: staged rows and "
    "quarantine under $EMOFLOW_HOME/staging/<source>/<version>.",
)
def staged_source(context: AssetExecutionContext, emoflow: EmoflowConfig) -> MaterializeResult:
    source = context.partition_key
    progress = _Progress(context, emoflow)
    try:
        staged = stage_source(source, emoflow.data(), emoflow.home_path(), on_progress=progress)
    finally:
        progress.close()
    m = staged.manifest
    return MaterializeResult(
        metadata={
            "version": staged.version,
            "reused": staged.reused,
            "staged_path": MetadataValue.path(str(staged.path)),
            "rows_in": m["rows_in"],
            "rows_out": m["rows_out"],
            "rows_quarantined": sum(m["quarantined"].values()),
            "by_label": MetadataValue.md(_counts_table(m["by_label"])),
            "quarantined": MetadataValue.json(m["quarantined"]),
            "detectors": MetadataValue.json(m["detectors"]),
            "seconds": m["seconds"],
        },
        data_version=DataVersion(staged.version),
    )

@asset(
    deps=[staged_source],
    group_name="data",
    kinds={"python", "parquet"},
    description="The merged, versioned EmotionSet: Parquet shards partitioned by split and source, with manifest "
    "and quarantine table. Re-uses each source's staged rows when that source's version is unchanged.",
)
def emotionset_shards(context: AssetExecutionContext, emoflow: EmoflowConfig) -> Output[str]:
    data = emoflow.data()
    home = emoflow.home_path()
    progress = _Progress(context, emoflow)
    try:
        staged = [stage_source(s, data, home, on_progress=progress) for s in emoflow.enabled_sources()]
    finally:
        progress.close()
    shard_set = assemble_emotionset(staged, data, emoflow.shards_root())
    m = shard_set.manifest
    return Output(
        str(shard_set.path),
        metadata={
            "version": shard_set.version,
            "reused": shard_set.reused,
            # not "path": the IO manager records its own pickle's location under that key
            "shard_set_path": MetadataValue.path(str(shard_set.path)),
            "rows": m["rows"],
            "rows_in": m["rows_in"],
            "rows_quarantined": m["quarantined_rows"],
            "by_source": MetadataValue.md(_counts_table(m["by_source"])),
            "by_split": MetadataValue.md(_counts_table(m["by_split"])),
            "by_label": MetadataValue.md(_counts_table(m["by_label"])),
            "quarantined": MetadataValue.json(m["quarantined"]),
            "image_size": json.dumps(m["image_size"]),
        },
        data_version=DataVersion(shard_set.version),
    )
