"""The audit of one shard set as it is assembled: duplicate groups, the policy's decisions, the opt-in density
outliers, and the report written to the manifest's ``audit`` section, ``duplicate_groups.parquet`` and
``audit_duplicates.png``.

The rows are read through ``batches(columns)``, a re-iterable source of (Arrow batch, the batch's splits) in a fixed
row order; a row is its position in that order. ``collect_rows`` keeps numbers only (``AuditRows``: ~51 bytes a
row); the faces of candidate pairs and the ids of grouped rows are read again when needed, so memory stays a small
fraction of the faces' whatever the data size.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.audit.duplicates import AuditRows, GroupSummary, decide, group_labels, summarize_groups
from pipelines.audit.hashing import pixel_digest
from pipelines.labels import EMOTIONS
from pipelines.params_types import SPLITS
from pipelines.records import QuarantineReason

AUDIT_COLUMNS = ["id", "source", "subject", "label", "phash", "pixels", "content_hash"]
# the report's headline counts, in the order the CLI and Dagster show them
REPORT_COUNTS = (
    "duplicate_groups",
    "exact_groups",
    "near_groups",
    "cross_split_groups",
    "cross_source_groups",
    "label_conflict_groups",
    "blank",
    "too_large",
)
EXAMPLE_GROUPS = 8  # groups drawn in audit_duplicates.png
EXAMPLE_MEMBERS = 6  # faces drawn per group

GROUPS_SCHEMA = pa.schema(
    [
        pa.field("group", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label_name", pa.string(), nullable=False),
        pa.field("phash", pa.int64(), nullable=False),
        pa.field("exact", pa.bool_(), nullable=False),  # the whole group has identical pixels
        pa.field("decision", pa.string(), nullable=False),  # kept | a quarantine reason
    ]
)


Batches = Callable[[list[str]], Iterable[tuple[pa.RecordBatch, list[str]]]]


def _positions(batches: Batches, columns: list[str], indices: set[int]):
    """(row index, batch, index in batch) for the wanted rows, streaming ``batches(columns)``."""
    wanted = np.asarray(sorted(indices), dtype=np.int64)
    start = 0
    for batch, _ in batches(columns):
        end = start + batch.num_rows
        lo, hi = np.searchsorted(wanted, [start, end])
        for index in wanted[lo:hi]:
            yield int(index), batch, int(index - start)
        start = end


def face_loader(batches: Batches) -> Callable[[set[int]], dict[int, np.ndarray]]:
    """A loader of the faces at given row indices."""

    def load(indices: set[int]) -> dict[int, np.ndarray]:
        faces = {}
        for index, batch, k in _positions(batches, ["pixels", "height", "width"], indices):
            shape = (batch.column("height")[k].as_py(), batch.column("width")[k].as_py())
            faces[index] = np.frombuffer(batch.column("pixels")[k].as_py(), dtype=np.uint8).reshape(shape)
        return faces

    return load


def ids_at(batches: Batches, indices: set[int]) -> dict[int, str]:
    return {index: batch.column("id")[k].as_py() for index, batch, k in _positions(batches, ["id"], indices)}


def _key(source: str, subject: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{source}|{subject}".encode(), digest_size=8).digest(), "little")


def collect_rows(batches: Batches, wanted_ids: frozenset[str] = frozenset()) -> tuple[AuditRows, dict[str, int]]:
    """AuditRows of every row, and the row index of each of ``wanted_ids`` found."""
    sources: dict[str, int] = {}
    fields = ("source", "subject", "split", "label", "phash", "digest", "content")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    found: dict[str, int] = {}
    start = 0
    for batch, splits in batches(AUDIT_COLUMNS):
        names = batch.column("source").to_pylist()
        subjects = batch.column("subject").to_pylist()
        parts["source"].append(np.asarray([sources.setdefault(s, len(sources)) for s in names], dtype=np.int8))
        parts["subject"].append(np.asarray([_key(a, b) for a, b in zip(names, subjects)], dtype=np.uint64))
        parts["split"].append(np.asarray([SPLITS.index(s) for s in splits], dtype=np.int8))
        parts["label"].append(batch.column("label").to_numpy(zero_copy_only=False).astype(np.int8))
        parts["phash"].append(batch.column("phash").to_numpy(zero_copy_only=False).astype(np.int64))
        parts["digest"].append(np.asarray([pixel_digest(p) for p in batch.column("pixels").to_pylist()], dtype="S16"))
        hashes = batch.column("content_hash").to_pylist()
        parts["content"].append(np.asarray([bytes.fromhex(h[:32]) for h in hashes], dtype="S16"))
        if wanted_ids:
            for k, row_id in enumerate(batch.column("id").to_pylist()):
                if row_id in wanted_ids:
                    found[row_id] = start + k
        start += batch.num_rows
    empty = {
        "source": np.int8,
        "subject": np.uint64,
        "split": np.int8,
        "label": np.int8,
        "phash": np.int64,
        "digest": "S16",
        "content": "S16",
    }
    arrays = {k: np.concatenate(v) if v else np.zeros(0, dtype=empty[k]) for k, v in parts.items()}
    names = tuple(sorted(sources, key=sources.get))
    return AuditRows(**arrays, source_names=names), found


@dataclass
class ShardAudit:
    rows: AuditRows
    groups: list[GroupSummary]
    removed: dict[int, tuple[str, str]]  # row index -> (reason, detail)
    ids: dict[int, str]  # row index -> id, for every row in a group or removed
    near_distance: int
    max_cell_error: float
    seconds: float
    examples: list[int] = field(default_factory=list)  # groups to draw

    def decision(self, index: int) -> str:
        return self.removed.get(int(index), ("kept", ""))[0]

    def report(self, screened: Counter, quarantined_by_reason: Counter) -> dict:
        """The manifest's ``audit`` section. ``screened``: blank/too-large counts from the staged sources."""
        g = self.groups
        return {
            "perceptual_hash": "dct-63 (pipelines.audit.hashing)",
            "near_distance": self.near_distance,
            "max_cell_error": self.max_cell_error,
            "rows_audited": len(self.rows),
            "duplicate_groups": len(g),
            "exact_groups": sum(x.exact for x in g),
            "near_groups": sum(not x.exact for x in g),
            "rows_in_groups": int(sum(len(x.members) for x in g)),
            "within_split_groups": sum(not x.cross_split for x in g),
            "cross_split_groups": sum(x.cross_split for x in g),
            "cross_source_groups": sum(x.cross_source for x in g),
            "label_conflict_groups": sum(x.label_conflict for x in g),
            "blank": int(screened.get(QuarantineReason.BLANK_IMAGE, 0)),
            "too_large": int(screened.get(QuarantineReason.IMAGE_TOO_LARGE, 0)),
            "removed_by_audit": dict(sorted(Counter(r for r, _ in self.removed.values()).items())),
            "quarantined_by_reason": dict(sorted(quarantined_by_reason.items())),
            "example_groups": [self._example(x) for x in g if x.group in self.examples],
            "seconds": round(self.seconds, 3),
        }

    def _example(self, group: GroupSummary) -> dict:
        return {
            "group": group.group,
            "exact": group.exact,
            "splits": list(group.splits),
            "sources": list(group.sources),
            "labels": [EMOTIONS[v] for v in group.labels],
            "members": [
                {"id": self.ids[int(m)], "split": SPLITS[self.rows.split[m]], "decision": self.decision(m)}
                for m in group.members[:EXAMPLE_MEMBERS]
            ],
        }

    def example_rows(self) -> set[int]:
        wanted = set(self.examples)
        return {int(m) for x in self.groups if x.group in wanted for m in x.members[:EXAMPLE_MEMBERS]}

    def write_groups(self, path: Path, compression: str) -> None:
        records = []
        for x in self.groups:
            for m in x.members:
                records.append(
                    {
                        "group": x.group,
                        "id": self.ids[int(m)],
                        "source": self.rows.source_names[self.rows.source[m]],
                        "split": SPLITS[self.rows.split[m]],
                        "label_name": EMOTIONS[int(self.rows.label[m])],
                        "phash": int(self.rows.phash[m]),
                        "exact": x.exact,
                        "decision": self.decision(m),
                    }
                )
        pq.write_table(pa.Table.from_pylist(records, schema=GROUPS_SCHEMA), path, compression=compression)


def _pick_examples(groups: list[GroupSummary]) -> list[int]:
    """A few groups of each kind worth looking at, in turn: label conflicts, copies across splits, across sources,
    near copies and identical copies within a split (each kind in group order)."""
    kinds = [
        [g for g in groups if g.label_conflict],
        [g for g in groups if g.cross_split and not g.label_conflict],
        [g for g in groups if g.cross_source and not g.cross_split and not g.label_conflict],
        [g for g in groups if not (g.exact or g.cross_split or g.cross_source or g.label_conflict)],
        [g for g in groups if g.exact and not (g.cross_split or g.cross_source or g.label_conflict)],
    ]
    picked: list[int] = []
    while len(picked) < EXAMPLE_GROUPS and any(kinds):
        for kind in kinds:
            if kind and len(picked) < EXAMPLE_GROUPS:
                picked.append(kind.pop(0).group)
    return sorted(picked)


def audit_rows(batches: Batches, audit, density_scores: tuple[Path, float] | None = None) -> ShardAudit:
    """Collect, group, decide and pick examples. ``audit``: ``pipelines.params.AuditParams``;
    ``density_scores``: (a density audit's scores file, the fraction to quarantine), opt-in."""
    started = time.monotonic()
    density = density_outliers(*density_scores) if density_scores else {}
    rows, found = collect_rows(batches, frozenset(density))
    policy = audit.duplicates
    group_of = group_labels(rows, policy, face_loader(batches))
    groups = summarize_groups(rows, group_of)
    removed = decide(rows, groups, policy)
    for row_id, index in found.items():
        removed.setdefault(index, density[row_id])  # a duplicate's reason wins: it is the more specific one
    ids = ids_at(batches, set(np.flatnonzero(group_of >= 0).tolist()) | set(removed))
    return ShardAudit(
        rows=rows,
        groups=groups,
        removed=removed,
        ids=ids,
        near_distance=policy.near_distance,
        max_cell_error=policy.max_cell_error,
        seconds=time.monotonic() - started,
        examples=_pick_examples(groups),
    )


def density_outliers(scores_file: Path, fraction: float) -> dict[str, tuple[str, str]]:
    """Row id -> (``density_outlier``, detail) for the least likely ``fraction`` of a density audit's scores
    (a Parquet file with at least ``id`` and ``bits_per_dim``, as ``runs.density_audit`` writes it)."""
    table = pq.read_table(scores_file, columns=["id", "bits_per_dim"])
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    bpd = np.asarray(table.column("bits_per_dim").to_pylist(), dtype=np.float64)
    count = int(np.floor(fraction * len(ids)))
    if count == 0:
        return {}
    order = np.lexsort((ids.astype(str), -bpd))[:count]  # highest bits/dim first; ties by id
    return {
        str(ids[i]): (
            QuarantineReason.DENSITY_OUTLIER,
            f"{bpd[i]:.3f} bits/dim: rank {rank + 1} of {len(ids)} least likely in {Path(scores_file).name} "
            f"(data.audit.density_outliers.fraction {fraction:g})",
        )
        for rank, i in enumerate(order)
    }


def audit_shard_set(version_dir: Path, audit) -> ShardAudit:
    """The duplicate audit of a finished shard set's rows, as they are (decisions say what the policy would do):
    what ``emoflow shards audit`` falls back on for a shard set built before the audit existed, and what the
    blocking check recomputes to confirm no group spans splits. ``audit``: ``AuditParams``."""
    from pipelines.shards import iter_shard_batches

    def batches(columns: list[str]):
        for batch in iter_shard_batches(version_dir, columns=list(dict.fromkeys([*columns, "split"]))):
            yield batch, batch.column("split").to_pylist()

    return audit_rows(batches, audit)
