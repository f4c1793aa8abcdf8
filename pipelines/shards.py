"""The EmotionSet shard format: a fixed Parquet schema, streaming writers, and readers.

A shard set lives in ``<shards root>/<version>/``::

    manifest.json                                  counts, quarantine, schema, version, files
    split=train/source=jaffe/part-00000.parquet    rows (zstd), the full schema below in every file
    ...
    quarantine.parquet                             every candidate row that did not make it, with its reason

Every file carries every column (split and source included), so one file is self-describing; the folder names
are for people and for picking files without opening them (``shard_files``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RATING_COLUMNS = (
    "rating_happiness",
    "rating_sadness",
    "rating_surprise",
    "rating_anger",
    "rating_disgust",
    "rating_fear",
)

# Rows as staged per source, before the EmotionSet assigns splits and folds.
STAGED_FIELDS = [
    pa.field("id", pa.string(), nullable=False),  # <source>-<16 hex>, stable across runs
    pa.field("source", pa.string(), nullable=False),
    pa.field("subject", pa.string(), nullable=False),  # the dataset's own id, scoped by source
    pa.field("sequence", pa.string()),  # CK+/MMI sequence, BU-EEG video+segment; null where none
    pa.field("frame", pa.int32()),  # frame number in the sequence or video; null where none
    pa.field("split_hint", pa.string()),  # the dataset's own split (FER2013 Usage); null where none
    pa.field("label", pa.int8(), nullable=False),  # 0..6 in pipelines.labels.EMOTIONS
    pa.field("label_name", pa.string(), nullable=False),
    pa.field("source_label", pa.string(), nullable=False),  # the label exactly as the dataset writes it
    pa.field("pixels", pa.binary(), nullable=False),  # aligned face, uint8, row-major height*width bytes
    pa.field("pixels_svd", pa.binary(), nullable=False),  # its SVD-truncated reconstruction, same layout
    pa.field("height", pa.int16(), nullable=False),
    pa.field("width", pa.int16(), nullable=False),
    pa.field("detector", pa.string(), nullable=False),  # mtcnn | haar | none (pre-cropped pass-through)
    pa.field("det_score", pa.float32()),  # detector confidence; null for pass-through and Haar
    pa.field("box", pa.list_(pa.int32(), 4), nullable=False),  # x0, y0, x1, y1 in the raw image
    pa.field("raw_path", pa.string(), nullable=False),  # relative to the source folder (see RawRecord)
    pa.field("content_hash", pa.string(), nullable=False),  # sha256 of the raw bytes
    pa.field("phash", pa.int64(), nullable=False),  # 63-bit perceptual hash of the aligned face (pipelines.audit)
    *[pa.field(name, pa.float32()) for name in RATING_COLUMNS],  # JAFFE semantic ratings; null elsewhere
]
STAGED_SCHEMA = pa.schema(STAGED_FIELDS)

SHARD_SCHEMA = pa.schema(
    [f for f in STAGED_FIELDS if f.name != "split_hint"][:6]
    + [
        pa.field("split", pa.string(), nullable=False),  # train | val | test
        pa.field("fold", pa.int8()),  # subject-independent fold 0..k-1; null when folds are off
    ]
    + [f for f in STAGED_FIELDS if f.name != "split_hint"][6:]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("raw_path", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("subject", pa.string()),
        pa.field("sequence", pa.string()),
        pa.field("frame", pa.int32()),
        pa.field("source_label", pa.string()),
        pa.field("content_hash", pa.string()),
    ]
)

# Columns that must never be null (validated by the shard checks).
REQUIRED_COLUMNS = tuple(f.name for f in SHARD_SCHEMA if not f.nullable)
NULLABLE_COLUMNS = tuple(f.name for f in SHARD_SCHEMA if f.nullable)


def schema_description(schema: pa.Schema = SHARD_SCHEMA) -> list[dict[str, object]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


class BatchedParquetWriter:
    """Appends rows (dicts) to one Parquet file, flushing every ``batch_rows`` so memory stays flat."""

    def __init__(self, path: Path, schema: pa.Schema, compression: str = "zstd", batch_rows: int = 2048):
        self.path = Path(path)
        self.schema = schema
        self.compression = compression
        self.batch_rows = batch_rows
        self.rows = 0
        self._buffer: list[dict] = []
        self._writer: pq.ParquetWriter | None = None

    def write(self, row: dict) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_rows:
            self.flush()

    def write_table(self, table: pa.Table) -> None:
        self.flush()
        self._open().write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self.schema, compression=self.compression)
        return self._writer

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._open().write_table(table)
        self.rows += len(self._buffer)
        self._buffer = []

    def close(self) -> None:
        """Flush and close; an empty writer still leaves a valid (empty) file, so readers find the schema."""
        self.flush()
        self._open().close()


class PartitionedShardWriter:
    """Writes rows into ``split=<s>/source=<src>/part-NNNNN.parquet``, rolling files every ``rows_per_file``."""

    def __init__(self, root: Path, compression: str = "zstd", rows_per_file: int = 20000):
        self.root = Path(root)
        self.compression = compression
        self.rows_per_file = rows_per_file
        self._writers: dict[tuple[str, str], BatchedParquetWriter] = {}
        self._parts: Counter = Counter()
        self.files: list[Path] = []

    def _writer_for(self, split: str, source: str) -> BatchedParquetWriter:
        key = (split, source)
        writer = self._writers.get(key)
        if writer is not None and writer.rows + len(writer._buffer) >= self.rows_per_file:
            writer.close()
            writer = None
        if writer is None:
            part = self._parts[key]
            self._parts[key] += 1
            path = self.root / f"split={split}" / f"source={source}" / f"part-{part:05d}.parquet"
            writer = BatchedParquetWriter(path, SHARD_SCHEMA, self.compression)
            self._writers[key] = writer
            self.files.append(path)
        return writer

    def write_table(self, table: pa.Table) -> None:
        """Write a table whose rows all share one split and one source."""
        split = table.column("split")[0].as_py()
        source = table.column("source")[0].as_py()
        start = 0
        while start < table.num_rows:
            writer = self._writer_for(split, source)
            room = self.rows_per_file - writer.rows
            chunk = table.slice(start, room)
            writer.write_table(chunk)
            start += chunk.num_rows

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def shard_files(
    version_dir: Path, splits: Sequence[str] | None = None, sources: Sequence[str] | None = None
) -> list[Path]:
    """The row files of a shard set, optionally only some splits/sources, in a stable order."""
    files = []
    for path in sorted(Path(version_dir).glob("split=*/source=*/part-*.parquet")):
        split = path.parent.parent.name.split("=", 1)[1]
        source = path.parent.name.split("=", 1)[1]
        if (splits is None or split in splits) and (sources is None or source in sources):
            files.append(path)
    return files


def read_shards(
    version_dir: Path,
    splits: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Read (part of) a shard set into one Arrow table with the fixed schema."""
    schema = SHARD_SCHEMA if columns is None else pa.schema([SHARD_SCHEMA.field(c) for c in columns])
    tables = [
        pq.read_table(p, columns=list(columns) if columns else None) for p in shard_files(version_dir, splits, sources)
    ]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables])


def iter_shard_batches(
    version_dir: Path,
    splits: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 4096,
) -> Iterator[pa.RecordBatch]:
    """Stream a shard set batch by batch (constant memory)."""
    for path in shard_files(version_dir, splits, sources):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)


def decode_pixels(column: pa.Array | Iterable[bytes], height: int, width: int) -> np.ndarray:
    """A binary pixels column → uint8 array (N, height, width)."""
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    if not values:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), height, width)


@dataclass
class ShardCounts:
    """Running counts for a manifest."""

    by_source: Counter = field(default_factory=Counter)
    by_label: Counter = field(default_factory=Counter)
    by_split: Counter = field(default_factory=Counter)
    by_source_split_label: dict = field(default_factory=lambda: defaultdict(Counter))

    def add(self, table: pa.Table) -> None:
        for source, split, label in zip(
            table.column("source").to_pylist(),
            table.column("split").to_pylist(),
            table.column("label_name").to_pylist(),
        ):
            self.by_source[source] += 1
            self.by_label[label] += 1
            self.by_split[split] += 1
            self.by_source_split_label[f"{source}/{split}"][label] += 1


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = Path(str(path) + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a finished build into place atomically; if another process won the race, keep theirs."""
    try:
        os.replace(tmp_dir, final_dir)
    except OSError:
        if (final_dir / "manifest.json").exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
        else:
            raise


def resolve_shard_set(path: Path) -> Path:
    """A shard-set folder, or a shards root whose ``current`` file names one."""
    path = Path(path)
    if (path / "manifest.json").exists():
        return path
    current = path / "current"
    if current.exists():
        return path / current.read_text().strip()
    raise FileNotFoundError(f"{path}: neither a shard set (no manifest.json) nor a shards root (no 'current' file)")
