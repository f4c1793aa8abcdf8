"""Assembling the EmotionSet from staged sources: splits and folds, the data audit, the versioned shard set.

``assemble_emotionset(staged, data, shards_root)`` reads the staged rows twice, streaming:

1. the audit's columns (subjects, labels, perceptual hashes, digests of the pixels and of the raw file) with
   each row's split, to find duplicate groups and decide, by the policy in ``data.audit.duplicates``, which members are
   quarantined (``pipelines.audit``), plus the opt-in density outliers;
2. every column, writing the kept rows to ``split=<s>/source=<src>/`` files and the removed ones to the
   quarantine table (stage ``audit``), so rows in = rows out + rows quarantined still holds per source.

The shard set also holds ``duplicate_groups.parquet`` (every row of every group, with the decision taken) and
``audit_duplicates.png`` (example groups); the manifest's ``audit`` section is the report.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.audit.pictures import duplicate_groups_png
from pipelines.audit.shard_audit import ShardAudit, audit_rows
from pipelines.labels import EMOTIONS
from pipelines.params import DataParams, project_path
from pipelines.records import QuarantineReason
from pipelines.shards import (
    QUARANTINE_SCHEMA,
    SHARD_SCHEMA,
    BatchedParquetWriter,
    PartitionedShardWriter,
    ShardCounts,
    publish_dir,
    schema_description,
    write_json_atomic,
)
from pipelines.splits import assign_subject_folds, assign_subject_splits
from pipelines.versioning import code_version, emotionset_version

if TYPE_CHECKING:
    from pipelines.prepare import StagedSource

AUDIT_STAGE = "audit"
BATCH_ROWS = 4096


class ConservationError(RuntimeError):
    """Rows in != rows out + rows quarantined: a bug, never a data problem."""


@dataclass(frozen=True)
class ShardSet:
    version: str
    path: Path
    manifest: dict
    reused: bool


def _splits_for(staged: StagedSource, data: DataParams) -> tuple[dict[str, str], dict[str, int] | None]:
    """Per-subject split (for subjects without the dataset's own split) and fold maps for one source."""
    meta = pq.read_table(staged.rows_file, columns=["subject", "split_hint"])
    subjects = meta.column("subject").to_pylist()
    hints = meta.column("split_hint").to_pylist()
    unhinted = {s for s, h in zip(subjects, hints) if h is None}
    split_map = assign_subject_splits(staged.source, unhinted, data.splits, data.seed)
    fold_map = assign_subject_folds(staged.source, subjects, data.folds, data.seed) if data.folds else None
    return split_map, fold_map


def _split_column(batch: pa.RecordBatch, split_map: dict[str, str]) -> list[str]:
    subjects = batch.column("subject").to_pylist()
    hints = batch.column("split_hint").to_pylist()
    return [h if h is not None else split_map[s] for s, h in zip(subjects, hints)]


def _with_splits(batch: pa.RecordBatch, split_map: dict[str, str], fold_map: dict[str, int] | None) -> pa.Table:
    table = pa.Table.from_batches([batch])
    subjects = table.column("subject").to_pylist()
    split = pa.array(_split_column(batch, split_map), pa.string())
    fold = pa.array([fold_map[s] for s in subjects] if fold_map else [None] * len(subjects), pa.int8())
    table = table.drop_columns(["split_hint"]).append_column("split", split).append_column("fold", fold)
    return table.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)


def _audit(staged: Sequence[StagedSource], maps: dict, data: DataParams) -> ShardAudit:
    """The audit over the staged rows in assembly order (sources by name, each file in order)."""

    def batches(columns: list[str]):
        for source in staged:
            split_map, _ = maps[source.source]
            for batch in pq.ParquetFile(source.rows_file).iter_batches(
                batch_size=BATCH_ROWS, columns=list(dict.fromkeys([*columns, "subject", "split_hint"]))
            ):
                yield batch, _split_column(batch, split_map)

    outliers = data.audit.density_outliers
    density = None
    if outliers.scores_file and outliers.fraction > 0:
        density = (project_path(outliers.scores_file), outliers.fraction)
    return audit_rows(batches, data.audit, density)


def _audit_quarantine(table: pa.Table, why: list[tuple[str, str]]) -> pa.Table:
    reasons = [r for r, _ in why]
    details = [d for _, d in why]
    columns = {name: table.column(name) for name in QUARANTINE_SCHEMA.names if name in table.column_names}
    columns.update(
        reason=pa.array(reasons, pa.string()),
        detail=pa.array(details, pa.string()),
        stage=pa.array([AUDIT_STAGE] * len(why), pa.string()),
    )
    return pa.table({name: columns[name] for name in QUARANTINE_SCHEMA.names}).cast(QUARANTINE_SCHEMA)


def assemble_emotionset(staged: Sequence[StagedSource], data: DataParams, shards_root: Path) -> ShardSet:
    """Write (or re-use) the versioned shard set built from staged sources."""
    if not staged:
        raise ValueError("no sources to assemble")
    staged = sorted(staged, key=lambda s: s.source)
    source_versions = {s.source: s.version for s in staged}
    shaping = data.assembly_shaping()
    version = emotionset_version(source_versions, shaping)
    shards_root = Path(shards_root)
    final = shards_root / version
    if (final / "manifest.json").exists():
        manifest = json.loads((final / "manifest.json").read_text())
        _set_current(shards_root, version)
        return ShardSet(version, final, manifest, reused=True)

    tmp = shards_root / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        maps = {s.source: _splits_for(s, data) for s in staged}
        audit = _audit(staged, maps, data)
        removed = np.asarray(sorted(audit.removed), dtype=np.int64)
        wanted = audit.example_rows()
        example_faces: dict[int, np.ndarray] = {}

        counts = ShardCounts()
        writer = PartitionedShardWriter(tmp, data.shards.compression, data.shards.rows_per_file)
        quarantine_writer = BatchedParquetWriter(tmp / "quarantine.parquet", QUARANTINE_SCHEMA, data.shards.compression)
        quarantined: dict[str, Counter] = {}
        rows_in = 0
        start = 0  # the row index of the batch's first row: the same order the audit read the rows in
        for source in staged:
            split_map, fold_map = maps[source.source]
            quarantined[source.source] = Counter(source.manifest["quarantined"])
            for batch in pq.ParquetFile(source.rows_file).iter_batches(batch_size=BATCH_ROWS):
                table = _with_splits(batch, split_map, fold_map)
                index = np.arange(start, start + table.num_rows)
                start += table.num_rows
                if wanted:
                    _keep_examples(table, index, wanted, example_faces)
                out = np.isin(index, removed)
                if out.any():
                    why = [audit.removed[int(i)] for i in index[out]]
                    quarantine_writer.write_table(_audit_quarantine(table.filter(pa.array(out)), why))
                    quarantined[source.source].update(r for r, _ in why)
                table = table.filter(pa.array(~out))
                for split in sorted(set(table.column("split").to_pylist())):
                    part = table.filter(pc.equal(table.column("split"), split))
                    writer.write_table(part)
                    counts.add(part)
            quarantine_writer.write_table(pq.read_table(source.quarantine_file))
            rows_in += source.manifest["rows_in"]
        writer.close()
        quarantine_writer.close()
        if start != len(audit.rows):  # the audit's row positions must be these rows': a bug, never a data problem
            raise ConservationError(f"EmotionSet: the audit read {len(audit.rows)} staged rows, assembly {start}")

        rows = sum(counts.by_source.values())
        total_quarantined = sum(sum(r.values()) for r in quarantined.values())
        if rows_in != rows + total_quarantined:
            raise ConservationError(
                f"EmotionSet: rows in {rows_in} != rows out {rows} + quarantined {total_quarantined}"
            )
        audit.write_groups(tmp / "duplicate_groups.parquet", data.shards.compression)
        (tmp / "audit_duplicates.png").write_bytes(duplicate_groups_png(audit, example_faces, tuple(data.image_size)))
        by_reason: Counter = Counter()
        for per_source in quarantined.values():
            by_reason.update(per_source)
        files = []
        for path in sorted(writer.files):
            files.append({"path": path.relative_to(tmp).as_posix(), "rows": pq.ParquetFile(path).metadata.num_rows})
        manifest = {
            "version": version,
            "image_size": list(data.image_size),
            "rows_in": rows_in,
            "rows": rows,
            "quarantined_rows": total_quarantined,
            "by_source": dict(sorted(counts.by_source.items())),
            "by_label": {name: counts.by_label[name] for name in EMOTIONS if counts.by_label[name]},
            "by_split": {s: counts.by_split[s] for s in ("train", "val", "test") if counts.by_split[s]},
            "by_source_split_label": {
                k: {name: v[name] for name in EMOTIONS if v[name]}
                for k, v in sorted(counts.by_source_split_label.items())
            },
            "quarantined": {s: dict(sorted(c.items())) for s, c in quarantined.items()},
            "audit": audit.report(_screened(staged), by_reason),
            "sources": {
                s.source: {
                    "version": s.version,
                    "raw_hash": s.manifest["raw_hash"],
                    "rows_in": s.manifest["rows_in"],
                    "detectors": s.manifest["detectors"],
                }
                for s in staged
            },
            "params": {"assembly": shaping, "sources": {s.source: s.manifest["shaping"] for s in staged}},
            "code_version": code_version(),
            "schema": schema_description(),
            "files": files,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _set_current(shards_root, version)
    return ShardSet(version, final, manifest, reused=False)


def _screened(staged: Sequence[StagedSource]) -> Counter:
    screened: Counter = Counter()
    for s in staged:
        for reason in (QuarantineReason.BLANK_IMAGE, QuarantineReason.IMAGE_TOO_LARGE):
            screened[reason] += s.manifest["quarantined"].get(reason, 0)
    return screened


def _keep_examples(table: pa.Table, index: np.ndarray, wanted: set[int], faces: dict[int, np.ndarray]) -> None:
    for k in np.flatnonzero(np.isin(index, np.fromiter(wanted, dtype=np.int64))):
        h, w = table.column("height")[k].as_py(), table.column("width")[k].as_py()
        faces[int(index[k])] = np.frombuffer(table.column("pixels")[k].as_py(), dtype=np.uint8).reshape(h, w)


def _set_current(shards_root: Path, version: str) -> None:
    """``<shards root>/current`` names the most recently built or re-used version (what training reads)."""
    tmp = shards_root / f"current.tmp-{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, shards_root / "current")
