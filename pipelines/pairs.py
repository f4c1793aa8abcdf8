"""NFGAN's training pairs: an expressive face and a neutral face of the same person, from an EmotionSet shard set.

``neutral_pairs(shard_set)`` pairs, inside one split, every expressive row (label not neutral) with neutral rows of
the same source and subject (the NFGAN paper's (x, y) of section 4: x a face with expression, y the neutral face of
that person). Which sources contribute follows from the shards alone:

* JAFFE: each poser's NE images (about three per poser);
* CK+ in its original layout: a labelled sequence's first frame, labelled neutral (``data.ckplus.first_frame_neutral``);
* MMI: its neutral frames (the CK+-style copies label some sequences neutral);
* any other source that has both neutral and expressive faces of one subject;
* CK+48 has no neutral crops and FER2013 one image per (pseudo-)subject: neither contributes. FER2013 is refused
  outright (``PSEUDO_SUBJECT_SOURCES``): its "subject" is a file name, and the Kaggle export reuses two names for
  different images, so a neutral and an expressive face sharing a name are not the same person.

Pairing rule when a subject has several neutrals: an expressive face is paired with **every neutral of its own
sequence** when that sequence has one (a CK+ sequence's first frame: same session, lighting and head position, the
closest target there is), **else with every neutral of the subject** in its split (JAFFE: each of the poser's NE
images). Every neutral rather than one chosen: the targets of a person differ only by small pose and lighting
changes, all of them are true answers, and with ten JAFFE posers the extra pairs are most of the data; the L1 loss
then pulls towards their median, which is what a user of a normalizer expects. Neutral faces are never inputs (the
paper's inputs are "the other images from the same subjects"); they are the targets and the discriminator's real
images.

Subject-independence: the shards already assign subjects to splits; ``neutral_pairs`` checks it again on the rows it
reads (every (source, subject) in exactly one split) and raises ``SubjectLeakError`` otherwise, and never pairs rows of
two splits. No torch here: tables are pyarrow, images numpy (``pair_images``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.labels import EMOTION_INDEX, EMOTIONS
from pipelines.params import SPLITS
from pipelines.shards import decode_pixels, read_shards, resolve_shard_set

NEUTRAL = EMOTION_INDEX["neutral"]
# Sources whose "subject" is one image's name, not a person (see the FER2013 reader): never paired.
PSEUDO_SUBJECT_SOURCES: tuple[str, ...] = ("fer2013",)
ROW_COLUMNS = ("id", "source", "subject", "sequence", "frame", "label", "split", "fold")

PAIR_SCHEMA = pa.schema(
    [
        pa.field("input_id", pa.string(), nullable=False),  # the expressive face's shard row id
        pa.field("target_id", pa.string(), nullable=False),  # the neutral face's shard row id
        pa.field("source", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),  # scoped by source, as in the shards
        pa.field("split", pa.string(), nullable=False),
        pa.field("fold", pa.int8()),  # the subject's fold (null when the shard set has none)
        pa.field("sequence", pa.string()),  # the input's sequence (null where the source has none)
        pa.field("input_label", pa.int8(), nullable=False),  # 0..5 in pipelines.labels.EMOTIONS (never neutral)
        pa.field("input_label_name", pa.string(), nullable=False),
        pa.field("same_sequence", pa.bool_(), nullable=False),  # the target is a neutral of the input's sequence
    ]
)


class SubjectLeakError(ValueError):
    """A subject of the shard set appears in more than one split: its pairs could not stay subject-independent."""


@dataclass(frozen=True)
class NeutralPairs:
    """The pairs of one shard set (``table``, ``PAIR_SCHEMA``, ordered by split, source, subject, input, target)."""

    table: pa.Table
    shard_set: Path
    sources_read: tuple[str, ...]

    def split(self, split: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("split"), split))

    def counts(self) -> dict[str, dict[str, int]]:
        """Pairs by source and split: {source: {"train": n, "val": n, "test": n}} for every source read."""
        counts = {s: dict.fromkeys(SPLITS, 0) for s in self.sources_read}
        for source, split in zip(self.table.column("source").to_pylist(), self.table.column("split").to_pylist()):
            counts[source][split] += 1
        return counts

    def counts_table(self) -> pa.Table:
        """One row per (source, split): pairs, distinct inputs, distinct targets and subjects (zeros included)."""
        groups: dict[tuple[str, str], list[set]] = defaultdict(lambda: [set(), set(), set()])
        n: dict[tuple[str, str], int] = defaultdict(int)
        columns = [self.table.column(c).to_pylist() for c in ("source", "split", "input_id", "target_id", "subject")]
        for source, split, inp, tgt, subject in zip(*columns):
            key = (source, split)
            n[key] += 1
            groups[key][0].add(inp)
            groups[key][1].add(tgt)
            groups[key][2].add(subject)
        rows = []
        for source in self.sources_read:
            for split in SPLITS:
                inputs, targets, subjects = groups.get((source, split), [set(), set(), set()])
                rows.append(
                    {
                        "source": source,
                        "split": split,
                        "pairs": n.get((source, split), 0),
                        "inputs": len(inputs),
                        "targets": len(targets),
                        "subjects": len(subjects),
                    }
                )
        return pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [
                    ("source", pa.string()),
                    ("split", pa.string()),
                    ("pairs", pa.int64()),
                    ("inputs", pa.int64()),
                    ("targets", pa.int64()),
                    ("subjects", pa.int64()),
                ]
            ),
        )


def check_subject_independent(rows: pa.Table) -> None:
    """Raise ``SubjectLeakError`` when a (source, subject) has rows in more than one split."""
    splits_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for source, subject, split in zip(
        rows.column("source").to_pylist(), rows.column("subject").to_pylist(), rows.column("split").to_pylist()
    ):
        splits_of[(source, subject)].add(split)
    leaks = sorted((k, sorted(v)) for k, v in splits_of.items() if len(v) > 1)
    if leaks:
        shown = ", ".join(f"{source}/{subject} in {'+'.join(splits)}" for (source, subject), splits in leaks[:5])
        raise SubjectLeakError(
            f"{len(leaks)} subject(s) appear in more than one split ({shown}{', ...' if len(leaks) > 5 else ''}): "
            "pairs would not be subject-independent; rebuild the shards (emoflow prepare)"
        )


def pairs_from_rows(rows: pa.Table) -> pa.Table:
    """The pairing rule (module docstring) applied to shard rows with ``ROW_COLUMNS``; checks subject-independence."""
    check_subject_independent(rows)
    people: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows.select(list(ROW_COLUMNS)).to_pylist():
        if row["source"] in PSEUDO_SUBJECT_SOURCES:
            continue
        people[(row["split"], row["source"], row["subject"])].append(row)
    out: list[dict] = []
    for (split, source, subject), members in sorted(people.items()):
        neutrals = sorted((r for r in members if r["label"] == NEUTRAL), key=lambda r: r["id"])
        if not neutrals:
            continue
        by_sequence: dict[str, list[dict]] = defaultdict(list)
        for r in neutrals:
            if r["sequence"] is not None:
                by_sequence[r["sequence"]].append(r)
        for r in sorted((r for r in members if r["label"] != NEUTRAL), key=lambda r: r["id"]):
            own = by_sequence.get(r["sequence"]) if r["sequence"] is not None else None
            for t in own or neutrals:
                out.append(
                    {
                        "input_id": r["id"],
                        "target_id": t["id"],
                        "source": source,
                        "subject": subject,
                        "split": split,
                        "fold": r["fold"],
                        "sequence": r["sequence"],
                        "input_label": r["label"],
                        "input_label_name": EMOTIONS[r["label"]],
                        "same_sequence": bool(own),
                    }
                )
    order = {s: i for i, s in enumerate(SPLITS)}
    out.sort(key=lambda p: (order[p["split"]], p["source"], p["subject"], p["input_id"], p["target_id"]))
    return pa.Table.from_pylist(out, schema=PAIR_SCHEMA)


def neutral_pairs(shard_set_path, sources: Sequence[str] | None = None) -> NeutralPairs:
    """The (expressive input, neutral target) pairs of a shard set (a version folder, or a shards root with a
    ``current`` file), optionally only some sources. Raises ``SubjectLeakError`` if a subject spans splits."""
    vdir = resolve_shard_set(Path(shard_set_path))
    rows = read_shards(vdir, sources=list(sources) if sources is not None else None, columns=list(ROW_COLUMNS))
    read = tuple(sorted(set(rows.column("source").to_pylist()) | set(sources or ())))
    return NeutralPairs(pairs_from_rows(rows), vdir, read)


def pair_images(shard_set_path, pairs: pa.Table, column: str = "pixels") -> tuple[np.ndarray, np.ndarray]:
    """The (inputs, targets) faces of ``pairs``, uint8 (N, H, W) each in the table's order (``column``: "pixels"
    or "pixels_svd"). A neutral shared by several pairs is decoded once."""
    if column not in ("pixels", "pixels_svd"):
        raise ValueError(f"column must be 'pixels' or 'pixels_svd', got {column!r}")
    vdir = resolve_shard_set(Path(shard_set_path))
    inputs, targets = pairs.column("input_id").to_pylist(), pairs.column("target_id").to_pylist()
    wanted = sorted(set(inputs) | set(targets))
    splits = sorted(set(pairs.column("split").to_pylist()))
    sources = sorted(set(pairs.column("source").to_pylist()))
    if not wanted:
        raise ValueError("no pairs to load")
    rows = read_shards(vdir, splits=splits, sources=sources, columns=["id", column, "height", "width"])
    rows = rows.filter(pc.is_in(rows.column("id"), value_set=pa.array(wanted)))
    heights, widths = set(rows.column("height").to_pylist()), set(rows.column("width").to_pylist())
    if len(heights) != 1 or len(widths) != 1:
        raise ValueError(f"{vdir}: faces of several sizes ({sorted(heights)} x {sorted(widths)})")
    faces = decode_pixels(rows.column(column), heights.pop(), widths.pop())
    index = {row_id: i for i, row_id in enumerate(rows.column("id").to_pylist())}
    missing = [i for i in wanted if i not in index]
    if missing:
        raise KeyError(f"{vdir}: {len(missing)} paired row(s) not in the shards, e.g. {missing[0]}")
    return faces[[index[i] for i in inputs]], faces[[index[i] for i in targets]]
