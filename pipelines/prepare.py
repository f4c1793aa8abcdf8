"""The data half end to end: raw files → staged source rows → the assembled, versioned EmotionSet.

Two steps, so that the expensive one (face detection) is done once per source and re-used:

1. ``stage_source``: read one source, harmonise labels, detect and align faces, truncate singular values, and
   write its rows and quarantine to ``<home>/staging/<source>/<source version>/``. The version hashes the raw
   files, the params that shape this source's rows and the code; a finished version is re-used as is.
2. ``assemble_emotionset``: assign subject-independent splits and folds, and write the shard set
   ``<shards root>/<version>/`` partitioned by split and source, with its quarantine table and manifest.

Dagster assets, DVC stages and the CLI all call these two functions; nothing else writes shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.labels import EMOTIONS, harmonize_label
from pipelines.params import DataParams
from pipelines.readers import LAYOUTS, MissingDatasetError, read_source
from pipelines.records import FaceRecord, Quarantined, RawRecord
from pipelines.shards import (
    QUARANTINE_SCHEMA,
    RATING_COLUMNS,
    SHARD_SCHEMA,
    STAGED_SCHEMA,
    BatchedParquetWriter,
    PartitionedShardWriter,
    ShardCounts,
    publish_dir,
    schema_description,
    write_json_atomic,
)
from pipelines.splits import assign_subject_folds, assign_subject_splits
from pipelines.svd import truncate_singular_values
from pipelines.versioning import code_version, emotionset_version, hash_raw_inputs, source_version

ProgressCallback = Callable[[dict], None]
SVD_BATCH = 256
PROGRESS_SECONDS = 0.5  # how often the progress callback hears about a running source


class MissingDatasetsError(FileNotFoundError):
    """Some requested sources have no folder; lists each one's expected layouts and where to obtain it."""

    def __init__(self, missing: Sequence[tuple[str, Path]]):
        self.missing = list(missing)
        lines = [f"dataset folder(s) not found for: {', '.join(s for s, _ in self.missing)}", ""]
        for source, folder in self.missing:
            lines += [f"{source}: expected at {folder}", f"  {LAYOUTS[source]}", ""]
        lines.append(
            "Put each dataset under the raw root (params data.raw_root, or --raw-root), or choose sources with --sources."
        )
        super().__init__("\n".join(lines))


class ConservationError(RuntimeError):
    """Rows in != rows out + rows quarantined: a bug, never a data problem."""


@dataclass(frozen=True)
class StagedSource:
    source: str
    version: str
    path: Path
    manifest: dict
    reused: bool

    @property
    def rows_file(self) -> Path:
        return self.path / "rows.parquet"

    @property
    def quarantine_file(self) -> Path:
        return self.path / "quarantine.parquet"


@dataclass(frozen=True)
class ShardSet:
    version: str
    path: Path
    manifest: dict
    reused: bool


def row_id(source: str, raw_path: str) -> str:
    return f"{source}-{hashlib.sha256(f'{source}|{raw_path}'.encode()).hexdigest()[:16]}"


def _quarantine_row(q: Quarantined) -> dict:
    return {
        "source": q.source,
        "raw_path": q.raw_path,
        "reason": q.reason,
        "detail": q.detail,
        "stage": q.stage,
        "subject": q.subject,
        "sequence": q.sequence,
        "frame": q.frame,
        "source_label": q.source_label,
        "content_hash": q.content_hash,
    }


def _label_quarantine(record: RawRecord, reason: str, detail: str) -> Quarantined:
    return Quarantined(
        source=record.source,
        raw_path=record.raw_path,
        reason=reason,
        detail=detail,
        stage="label",
        subject=record.subject,
        sequence=record.sequence,
        frame=record.frame,
        source_label=record.source_label,
        content_hash=record.content_hash,
    )


def harmonize_labels(stream: Iterable[RawRecord | Quarantined], data: DataParams) -> Iterator[RawRecord | Quarantined]:
    """Quarantine records whose label the scheme cannot take; pass the rest (and earlier quarantines) on."""
    policy = data.labels.outside_scheme
    for item in stream:
        if isinstance(item, RawRecord):
            decision = harmonize_label(item.source, item.source_label, policy)
            if decision.label is None:
                yield _label_quarantine(item, decision.reason or "unknown_label", decision.detail or "")
                continue
        yield item


def _face_rows(faces: list[FaceRecord], data: DataParams) -> list[dict]:
    """Label, SVD-truncate (batched) and flatten a batch of aligned faces into staged rows."""
    stack = np.stack([f.face for f in faces])
    truncated = truncate_singular_values(stack, rank=data.svd.rank, energy=data.svd.energy)
    policy = data.labels.outside_scheme
    rows = []
    for face, svd_face in zip(faces, truncated):
        raw = face.raw
        decision = harmonize_label(raw.source, raw.source_label, policy)
        h, w = face.face.shape
        row = {
            "id": row_id(raw.source, raw.raw_path),
            "source": raw.source,
            "subject": raw.subject,
            "sequence": raw.sequence,
            "frame": raw.frame,
            "split_hint": raw.split_hint,
            "label": decision.label,
            "label_name": decision.label_name,
            "source_label": raw.source_label,
            "pixels": np.ascontiguousarray(face.face).tobytes(),
            "pixels_svd": np.ascontiguousarray(svd_face).tobytes(),
            "height": h,
            "width": w,
            "detector": face.detector,
            "det_score": face.det_score,
            "box": [int(v) for v in face.box],
            "raw_path": raw.raw_path,
            "content_hash": raw.content_hash,
        }
        for column in RATING_COLUMNS:
            row[column] = raw.extras.get(column)
        rows.append(row)
    return rows


def stage_source(
    source: str,
    data: DataParams,
    home: Path,
    on_progress: ProgressCallback | None = None,
    face_aligner=None,
) -> StagedSource:
    """Build (or re-use) one source's staged rows. Raises MissingDatasetError when its folder is absent."""
    folder = data.source_dir(source)
    if not folder.is_dir():
        raise MissingDatasetError(source, folder)
    started = time.monotonic()
    raw_hash = hash_raw_inputs(folder)
    shaping = data.source_shaping(source)
    version = source_version(source, raw_hash, shaping)
    base = Path(home) / "staging" / source
    final = base / version
    if (final / "manifest.json").exists():
        manifest = json.loads((final / "manifest.json").read_text())
        return StagedSource(source, version, final, manifest, reused=True)

    tmp = base / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if face_aligner is None:
        from pipelines.faces import FaceAligner

        face_aligner = FaceAligner(data.faces, tuple(data.image_size))

    rows_in = 0
    quarantined: Counter = Counter()
    quarantined_by_stage: Counter = Counter()
    by_label: Counter = Counter()
    detectors: Counter = Counter()
    rows_writer = BatchedParquetWriter(tmp / "rows.parquet", STAGED_SCHEMA, data.shards.compression)
    quarantine_writer = BatchedParquetWriter(tmp / "quarantine.parquet", QUARANTINE_SCHEMA, data.shards.compression)

    def counted(stream):
        nonlocal rows_in
        for item in stream:
            rows_in += 1
            yield item

    def report(done: bool = False):
        if on_progress is not None:
            on_progress(
                {
                    "source": source,
                    "rows_in": rows_in,
                    "rows_out": rows_writer.rows + len(rows_writer._buffer),
                    "quarantined": sum(quarantined.values()),
                    "seconds": round(time.monotonic() - started, 1),
                    "done": done,
                }
            )

    def quarantine(q: Quarantined) -> None:
        quarantine_writer.write(_quarantine_row(q))
        quarantined[q.reason] += 1
        quarantined_by_stage[q.stage] += 1

    def faces_only(stream):
        """Route quarantine records straight to the writer; hand the aligner only records."""
        for item in stream:
            if isinstance(item, Quarantined):
                quarantine(item)
            else:
                yield item

    try:
        labelled = harmonize_labels(counted(read_source(source, folder, data)), data)
        pending: list[FaceRecord] = []
        last_report = time.monotonic()
        for item in face_aligner.process(faces_only(labelled)):
            if isinstance(item, Quarantined):
                quarantine(item)
            else:
                pending.append(item)
                if len(pending) >= SVD_BATCH:
                    for row in _face_rows(pending, data):
                        rows_writer.write(row)
                        by_label[row["label_name"]] += 1
                        detectors[row["detector"]] += 1
                    pending = []
            if time.monotonic() - last_report >= PROGRESS_SECONDS:
                last_report = time.monotonic()
                report()
        if pending:
            for row in _face_rows(pending, data):
                rows_writer.write(row)
                by_label[row["label_name"]] += 1
                detectors[row["detector"]] += 1
        rows_writer.close()
        quarantine_writer.close()
        report(done=True)

        rows_out = rows_writer.rows
        total_quarantined = sum(quarantined.values())
        if rows_in != rows_out + total_quarantined:
            raise ConservationError(
                f"{source}: rows in {rows_in} != rows out {rows_out} + quarantined {total_quarantined}"
            )
        manifest = {
            "source": source,
            "version": version,
            "folder": str(folder),
            "raw_hash": raw_hash,
            "shaping": shaping,
            "code_version": code_version(),
            "rows_in": rows_in,
            "rows_out": rows_out,
            "quarantined": dict(sorted(quarantined.items())),
            "quarantined_by_stage": dict(sorted(quarantined_by_stage.items())),
            "by_label": {name: by_label[name] for name in EMOTIONS if by_label[name]},
            "detectors": dict(sorted(detectors.items())),
            "seconds": round(time.monotonic() - started, 2),
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StagedSource(source, version, final, manifest, reused=False)


def _splits_for(staged: StagedSource, data: DataParams) -> tuple[dict[str, str], dict[str, int] | None]:
    """Per-subject split (for subjects without the dataset's own split) and fold maps for one source."""
    meta = pq.read_table(staged.rows_file, columns=["subject", "split_hint"])
    subjects = meta.column("subject").to_pylist()
    hints = meta.column("split_hint").to_pylist()
    unhinted = {s for s, h in zip(subjects, hints) if h is None}
    split_map = assign_subject_splits(staged.source, unhinted, data.splits, data.seed)
    fold_map = assign_subject_folds(staged.source, subjects, data.folds, data.seed) if data.folds else None
    return split_map, fold_map


def _with_splits(batch: pa.RecordBatch, split_map: dict[str, str], fold_map: dict[str, int] | None) -> pa.Table:
    table = pa.Table.from_batches([batch])
    subjects = table.column("subject").to_pylist()
    hints = table.column("split_hint").to_pylist()
    split = pa.array([h if h is not None else split_map[s] for s, h in zip(subjects, hints)], pa.string())
    fold = pa.array([fold_map[s] for s in subjects] if fold_map else [None] * len(subjects), pa.int8())
    table = table.drop_columns(["split_hint"]).append_column("split", split).append_column("fold", fold)
    return table.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)


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
        counts = ShardCounts()
        writer = PartitionedShardWriter(tmp, data.shards.compression, data.shards.rows_per_file)
        quarantine_writer = BatchedParquetWriter(tmp / "quarantine.parquet", QUARANTINE_SCHEMA, data.shards.compression)
        quarantined: dict[str, dict[str, int]] = {}
        rows_in = 0
        for source in staged:
            split_map, fold_map = _splits_for(source, data)
            for batch in pq.ParquetFile(source.rows_file).iter_batches(batch_size=4096):
                table = _with_splits(batch, split_map, fold_map)
                for split in sorted(set(table.column("split").to_pylist())):
                    part = table.filter(pc.equal(table.column("split"), split))
                    writer.write_table(part)
                    counts.add(part)
            quarantine_writer.write_table(pq.read_table(source.quarantine_file))
            quarantined[source.source] = dict(source.manifest["quarantined"])
            rows_in += source.manifest["rows_in"]
        writer.close()
        quarantine_writer.close()

        rows = sum(counts.by_source.values())
        total_quarantined = sum(sum(r.values()) for r in quarantined.values())
        if rows_in != rows + total_quarantined:
            raise ConservationError(
                f"EmotionSet: rows in {rows_in} != rows out {rows} + quarantined {total_quarantined}"
            )
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
            "quarantined": quarantined,
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


def _set_current(shards_root: Path, version: str) -> None:
    """``<shards root>/current`` names the most recently built or re-used version (what training reads)."""
    tmp = shards_root / f"current.tmp-{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, shards_root / "current")


def prepare(
    data: DataParams,
    home: Path,
    sources: Sequence[str] | None = None,
    shards_root: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> ShardSet:
    """Stage every requested source (default: those enabled in params) and assemble the EmotionSet.

    Every missing source folder is reported at once, before any work starts.
    """
    sources = list(sources or data.sources)
    missing = [(s, data.source_dir(s)) for s in sources if not data.source_dir(s).is_dir()]
    if missing:
        raise MissingDatasetsError(missing)
    from pipelines.faces import FaceAligner

    aligner = FaceAligner(data.faces, tuple(data.image_size))  # one detector for all sources, loaded on first use
    staged = [stage_source(s, data, Path(home), on_progress, face_aligner=aligner) for s in sources]
    return assemble_emotionset(staged, data, Path(shards_root) if shards_root else Path(home) / "shards")
