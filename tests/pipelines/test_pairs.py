"""NFGAN's (expressive, neutral) pairs: never across subjects, sources or splits; the pairing rule; the tables.

Real data: the session's EmotionSet (JAFFE + CK+48 + FER2013: only JAFFE has neutral faces of the same person) and
an original-layout CK+ fixture whose sequences start on the poser's neutral face, through the whole data stage."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from pipelines.labels import EMOTION_INDEX
from pipelines.pairs import (
    PAIR_SCHEMA,
    ROW_COLUMNS,
    SubjectLeakError,
    neutral_pairs,
    pair_images,
    pairs_from_rows,
)
from pipelines.shards import SHARD_SCHEMA, decode_pixels, read_shards

NEUTRAL = EMOTION_INDEX["neutral"]


def _rows_by_id(path) -> dict[str, dict]:
    return {r["id"]: r for r in read_shards(path, columns=list(ROW_COLUMNS)).to_pylist()}


def _assert_pairs_are_sound(pairs, rows: dict[str, dict]) -> None:
    """Every pair: same source, subject and split on both sides (read back from the shards), an expressive input
    and a neutral target, and the table's columns agree with the input row."""
    assert pairs.table.schema == PAIR_SCHEMA
    for p in pairs.table.to_pylist():
        inp, tgt = rows[p["input_id"]], rows[p["target_id"]]
        assert (inp["source"], inp["subject"], inp["split"]) == (tgt["source"], tgt["subject"], tgt["split"])
        assert (p["source"], p["subject"], p["split"], p["fold"]) == (
            inp["source"],
            inp["subject"],
            inp["split"],
            inp["fold"],
        )
        assert inp["label"] != NEUTRAL and tgt["label"] == NEUTRAL and p["input_label"] == inp["label"]
        assert p["same_sequence"] == (inp["sequence"] is not None and inp["sequence"] == tgt["sequence"])
    subjects_by_split = defaultdict(set)
    for p in pairs.table.to_pylist():
        subjects_by_split[p["split"]].add((p["source"], p["subject"]))
    splits = list(subjects_by_split.values())
    assert all(not (a & b) for i, a in enumerate(splits) for b in splits[i + 1 :])  # no person in two splits


def test_emotionset_pairs_come_from_jaffe_alone_and_follow_the_rule(emotionset):
    pairs = neutral_pairs(emotionset.path)
    rows = _rows_by_id(emotionset.path)
    _assert_pairs_are_sound(pairs, rows)
    counts = pairs.counts()
    assert set(counts) == {"jaffe", "ckplus", "fer2013"}
    # CK+48 has no neutral crops and FER2013 one face per pseudo-subject: no pairs
    assert sum(counts["ckplus"].values()) == 0 and sum(counts["fer2013"].values()) == 0
    assert all(counts["jaffe"][s] > 0 for s in ("train", "val", "test"))
    # JAFFE has no sequences: each expressive face is paired with every NE face of its poser (in its split)
    neutrals, expressive = defaultdict(set), defaultdict(set)
    for r in rows.values():
        if r["source"] == "jaffe":
            (neutrals if r["label"] == NEUTRAL else expressive)[r["subject"]].add(r["id"])
    expected = {(i, t) for poser in neutrals for i in expressive[poser] for t in neutrals[poser]}
    got = set(zip(pairs.table.column("input_id").to_pylist(), pairs.table.column("target_id").to_pylist()))
    assert got == expected and len(got) == pairs.table.num_rows
    assert sum(len(n) for n in neutrals.values()) >= 10 and len(neutrals) == 10  # every poser kept neutral faces

    table = pairs.counts_table()
    assert table.column_names == ["source", "split", "pairs", "inputs", "targets", "subjects"]
    assert table.num_rows == 3 * 3  # every source read x every split, zeros included
    assert sum(table.column("pairs").to_pylist()) == pairs.table.num_rows
    only = neutral_pairs(emotionset.path, sources=["ckplus"])
    assert only.table.num_rows == 0 and only.counts() == {"ckplus": {"train": 0, "val": 0, "test": 0}}


def test_pair_images_are_the_shards_faces(emotionset):
    pairs = neutral_pairs(emotionset.path)
    table = pairs.split("val")
    inputs, targets = pair_images(emotionset.path, table)
    assert inputs.shape == targets.shape == (table.num_rows, 48, 48) and inputs.dtype == np.uint8
    shard = read_shards(emotionset.path, splits=["val"], sources=["jaffe"], columns=["id", "pixels"])
    faces = dict(zip(shard.column("id").to_pylist(), decode_pixels(shard.column("pixels"), 48, 48)))
    for k, p in enumerate(table.to_pylist()):
        assert np.array_equal(inputs[k], faces[p["input_id"]]) and np.array_equal(targets[k], faces[p["target_id"]])
    assert not np.array_equal(inputs, targets)


def test_ckplus_original_layout_pairs_each_frame_with_its_own_sequence_start(tmp_path, datasets_dir):
    from pipelines.params import AuditParams, DuplicateParams
    from pipelines.prepare import prepare

    from fixtures.layouts import build_ckplus_original
    from fixtures.rawroots import data_params

    raw = tmp_path / "raw"
    build_ckplus_original(raw / "ckplus", datasets_dir, subjects=5, sequences=2, frames=5, extras=False)
    # the fixture draws every sequence of a subject from the same two JAFFE faces: keep those near-copies (the
    # duplicate audit would otherwise drop one sequence's neutral start as a copy of the other's)
    audit = AuditParams(duplicates=DuplicateParams(keep_one_within_split=False, label_conflicts="keep"))
    shards = prepare(data_params(raw, sources=("ckplus",), folds=0, audit=audit), tmp_path / "home")
    pairs = neutral_pairs(shards.path)
    rows = _rows_by_id(shards.path)
    _assert_pairs_are_sound(pairs, rows)
    assert pairs.table.num_rows > 0 and all(pairs.table.column("same_sequence").to_pylist())
    # every expressive CK+ frame has exactly one pair: with its own sequence's first frame
    expressive = [r for r in rows.values() if r["label"] != NEUTRAL]
    assert sorted(pairs.table.column("input_id").to_pylist()) == sorted(r["id"] for r in expressive)
    for p in pairs.table.to_pylist():
        assert rows[p["target_id"]]["frame"] == 1 and rows[p["target_id"]]["sequence"] == p["sequence"]
    assert len({p["split"] for p in pairs.table.to_pylist()}) >= 2


def _rows(*rows) -> pa.Table:
    keys = ("id", "source", "subject", "sequence", "frame", "label", "split", "fold")
    schema = pa.schema([SHARD_SCHEMA.field(k) for k in keys])
    return pa.Table.from_pylist([dict(zip(keys, r)) for r in rows], schema=schema)


def test_rule_falls_back_to_the_subjects_neutrals_and_refuses_pseudo_subjects_and_leaks():
    rows = _rows(
        ("m-1", "mmi", "S1", "a", 3, 3, "train", None),  # happy, its sequence has a neutral
        ("m-2", "mmi", "S1", "a", 1, NEUTRAL, "train", None),
        ("m-3", "mmi", "S1", "b", 2, 5, "train", None),  # surprise, sequence b has no neutral: all S1's neutrals
        ("m-4", "mmi", "S1", "c", 1, NEUTRAL, "train", None),
        ("m-5", "mmi", "S2", "d", 2, 0, "test", None),  # S2 has no neutral: no pair
        ("f-1", "fer2013", "Training_7", None, None, NEUTRAL, "train", None),  # pseudo-subject: never paired
        ("f-2", "fer2013", "Training_7", None, None, 4, "train", None),
    )
    got = [(p["input_id"], p["target_id"], p["same_sequence"]) for p in pairs_from_rows(rows).to_pylist()]
    assert got == [("m-1", "m-2", True), ("m-3", "m-2", False), ("m-3", "m-4", False)]

    leaking = _rows(
        ("j-1", "jaffe", "KA", None, None, 0, "train", None), ("j-2", "jaffe", "KA", None, None, 6, "val", None)
    )
    with pytest.raises(SubjectLeakError, match="jaffe/KA in train\\+val"):
        pairs_from_rows(leaking)
    # the same subject name in two sources is two people: no leak, no pair across them
    two_people = _rows(
        ("j-1", "jaffe", "KA", None, None, 0, "train", None), ("c-1", "ckplus", "KA", None, None, NEUTRAL, "val", None)
    )
    assert pairs_from_rows(two_people).num_rows == 0
