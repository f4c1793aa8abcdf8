"""The data half end to end: raw files → staged source rows → the assembled, versioned EmotionSet.

Two steps, so that the expensive one (face detection) is done once per source and re-used:

1. ``stage_source``: read one source, harmonise labels, screen out blank and oversized images
   (``pipelines.audit.screening``), detect and align faces, truncate singular values, hash each face
   (``pipelines.audit.hashing``), and write its rows and quarantine to ``<home>/staging/<source>/<source
   version>/``. The version hashes the raw files, the params that shape this source's rows and the code; a
   finished version is re-used as is.
2. ``assemble_emotionset`` (``pipelines.assembly``): assign subject-independent splits and folds, audit duplicates
   and leakage, and write the shard set ``<shards root>/<version>/`` partitioned by split and source, with its
   quarantine table and manifest.

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

from pipelines.assembly import ConservationError, ShardSet, assemble_emotionset
from pipelines.audit.hashing import perceptual_hash
from pipelines.audit.screening import screen_images
from pipelines.labels import EMOTIONS, harmonize_label
from pipelines.params import DataParams
from pipelines.readers import LAYOUTS, MissingDatasetError, read_source
from pipelines.records import FaceRecord, Quarantined, RawRecord
from pipelines.shards import (
    QUARANTINE_SCHEMA,
    RATING_COLUMNS,
    STAGED_SCHEMA,
    BatchedParquetWriter,
    publish_dir,
    write_json_atomic,
)
from pipelines.svd import truncate_singular_values
from pipelines.versioning import code_version, hash_raw_inputs, source_version

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


def harmonize_labels(stream: Iterable[RawRecord | Quarantined], data: DataParams) -> Iterator[RawRecord | Quarantined]:
    """Quarantine records whose label the scheme cannot take; pass the rest (and earlier quarantines) on."""
    policy = data.labels.outside_scheme
    for item in stream:
        if isinstance(item, RawRecord):
            decision = harmonize_label(item.source, item.source_label, policy)
            if decision.label is None:
                yield Quarantined.of_record(item, decision.reason or "unknown_label", decision.detail or "", "label")
                continue
        yield item


def _face_rows(faces: list[FaceRecord], data: DataParams) -> list[dict]:
    """Label, SVD-truncate (batched) and flatten a batch of aligned faces into staged rows."""
    stack = np.stack([f.face for f in faces])
    truncated = truncate_singular_values(stack, rank=data.svd.rank, energy=data.svd.energy)
    hashes = perceptual_hash(stack)
    policy = data.labels.outside_scheme
    rows = []
    for face, svd_face, phash in zip(faces, truncated, hashes):
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
            "phash": int(phash),
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
        labelled = screen_images(harmonize_labels(counted(read_source(source, folder, data)), data), data.audit)
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
