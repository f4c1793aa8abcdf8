"""Data assets: raw datasets -> staged source rows (partitioned by source) -> the versioned EmotionSet shards,
and MNIST's idx files (the second dataset of the BPLF paper's Table 3)."""

import time
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    StaticPartitionsDefinition,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.pictures import png_metadata
from assets.resources import EmoflowRuntime
from pipelines.assembly import assemble_emotionset
from pipelines.audit.shard_audit import REPORT_COUNTS
from pipelines.params import Params
from pipelines.prepare import stage_source
from pipelines.versioning import code_version, hash_raw_inputs

LOG_EVERY_SECONDS = 5.0  # the Dagster run log hears about a running source this often (and when it ends)


class _Progress:
    """Per-source progress in the Dagster run log (throttled) and, when the CLI asks, tqdm bars on the terminal."""

    def __init__(self, context: AssetExecutionContext, runtime: EmoflowRuntime):
        self._context = context
        self._last: dict[str, float] = {}
        self._bars = None
        if runtime.progress_bars:
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


def counts_table(counts: dict, key: str = "key", value: str = "rows") -> MetadataValue:
    """A {name: count} mapping as a Dagster table."""
    schema = TableSchema(columns=[TableColumn(key, "string"), TableColumn(value, "int")])
    return MetadataValue.table([TableRecord({key: str(k), value: int(v)}) for k, v in counts.items()], schema=schema)


def audit_metadata(shard_set_path, audit: dict) -> dict:
    """The manifest's audit section as Dagster metadata: its counts, the quarantine by reason, example groups."""
    metadata = {
        "audit": counts_table({k: audit[k] for k in REPORT_COUNTS}, "finding", "count"),
        "quarantined_by_reason": counts_table(audit["quarantined_by_reason"], "reason"),
        "audit_settings": MetadataValue.json(
            {"near_distance": audit["near_distance"], "max_cell_error": audit["max_cell_error"]}
        ),
    }
    picture = Path(shard_set_path) / "audit_duplicates.png"
    if picture.exists():
        metadata["audit_duplicate_groups"] = png_metadata(picture.read_bytes(), "example duplicate groups")
    return metadata


def build_data_assets(settings: Params) -> list[AssetsDefinition]:
    data = settings.data
    sources = StaticPartitionsDefinition(list(data.sources))

    @asset(
        partitions_def=sources,
        group_name="data",
        kinds={"python", "parquet"},
        code_version=code_version(),
        description="One source read, labels harmonised, faces detected and aligned, SVD-truncated: staged rows and "
        "quarantine under $EMOFLOW_HOME/staging/<source>/<version>.",
    )
    def staged_source(context: AssetExecutionContext, runtime: EmoflowRuntime) -> MaterializeResult:
        source = context.partition_key
        progress = _Progress(context, runtime)
        try:
            staged = stage_source(source, data, runtime.home_path(), on_progress=progress)
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
                "by_label": counts_table(m["by_label"], "label"),
                "quarantined": counts_table(m["quarantined"], "reason"),
                "detectors": counts_table(m["detectors"], "detector"),
                "seconds": m["seconds"],
            },
            data_version=DataVersion(staged.version),
        )

    @asset(
        deps=[staged_source],
        group_name="data",
        kinds={"python", "parquet"},
        code_version=code_version(),
        description="The merged, versioned EmotionSet: Parquet shards partitioned by split and source, with manifest "
        "and quarantine table. Re-uses each source's staged rows when that source's version is unchanged.",
    )
    def emotionset_shards(context: AssetExecutionContext, runtime: EmoflowRuntime) -> Output[str]:
        home = runtime.home_path()
        progress = _Progress(context, runtime)
        try:
            staged = [stage_source(s, data, home, on_progress=progress) for s in data.sources]
        finally:
            progress.close()
        shard_set = assemble_emotionset(staged, data, home / "shards")
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
                "by_source": counts_table(m["by_source"], "source"),
                "by_split": counts_table(m["by_split"], "split"),
                "by_label": counts_table(m["by_label"], "label"),
                "quarantined": MetadataValue.json(m["quarantined"]),
                "image_size": MetadataValue.json(m["image_size"]),
                **audit_metadata(shard_set.path, m["audit"]),
            },
            data_version=DataVersion(shard_set.version),
        )

    @asset(
        group_name="data",
        kinds={"python"},
        description="MNIST's four idx files (the second dataset of the BPLF paper's Table 3), checked and versioned by content.",
    )
    def mnist_digits(context: AssetExecutionContext) -> MaterializeResult:
        from pipelines.readers.mnist import load_mnist

        root = settings.mnist.root_path()
        counts = {split: int(load_mnist(root, split)[1].shape[0]) for split in ("train", "test")}
        version = hash_raw_inputs(root)[:16]
        return MaterializeResult(
            metadata={
                "version": version,
                "root": MetadataValue.path(str(root)),
                **{f"{k}_images": v for k, v in counts.items()},
            },
            data_version=DataVersion(version),
        )

    return [staged_source, emotionset_shards, mnist_digits]
