"""The audit inside `prepare` on real CK+48 with planted bad files: a decompression bomb, a blank gray image, a
photo and a non-face of the wrong size among the crops, and copies of real crops under other subjects (across
splits, and with another label)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from readers.test_image_decoding import bomb_png

from pipelines.cli import main as cli_main
from pipelines.prepare import prepare, row_id
from pipelines.shards import read_shards, shard_files
from pipelines.splits import assign_subject_splits
from pipelines.validation import validate_duplicates, validate_shard_set

from fixtures.rawroots import data_params, make_raw_root

ORIGINAL = "happy/S010_006_00000013.png"  # copied under new subjects, same label: one group across splits
CONFLICTED = "anger/S026_003_00000013.png"  # copied into another emotion's folder: a label conflict
PLANTED_SUBJECTS = {"S989", "S992"}  # the planted files that become rows (the others are quarantined early)


def copy_subjects(crops, data) -> list[str]:
    """Three new subject ids for copies of ORIGINAL such that the copies land in other splits than the original
    (splits are assigned per subject, deterministically, over the subjects that have rows)."""
    real = {p.name.split("_")[0] for p in crops.rglob("*.png") if p.parent.name != "contempt"}  # contempt: no rows
    rng = np.random.default_rng(0)
    for _ in range(200):
        names = [f"S{n}" for n in rng.choice(np.arange(1000, 10000), 3, replace=False)]  # sort among the real ids
        splits = assign_subject_splits("ckplus", real | PLANTED_SUBJECTS | set(names), data.splits, data.seed)
        if len({splits[n] for n in names} | {splits["S010"]}) == 3:
            return names
    raise AssertionError("no subject ids spread the copies over three splits")


def _link_tree(src, dst):
    for path in sorted(src.rglob("*.png")):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, datasets_dir):
    root = tmp_path_factory.mktemp("audit")
    crops = root / "raw" / "ckplus" / "CK+48"
    _link_tree(datasets_dir / "ckplus48" / "CK+48", crops)
    (crops / "anger" / "S990_001_00000001.png").write_bytes(bomb_png(20000, 20000))
    Image.fromarray(np.full((480, 640), 128, np.uint8)).save(crops / "anger" / "S991_001_00000001.png")
    photo = Image.open(datasets_dir / "faces" / "obama.jpg").convert("RGB")
    photo.save(crops / "happy" / "S992_001_00000001.png")
    Image.open(datasets_dir / "faces" / "no-faces.jpg").convert("RGB").save(crops / "sadness" / "S993_001_00000001.png")
    data = data_params(root / "raw", sources=("ckplus",))
    copies = copy_subjects(datasets_dir / "ckplus48" / "CK+48", data)
    original = (datasets_dir / "ckplus48" / "CK+48" / ORIGINAL).read_bytes()
    for subject in copies:
        (crops / "happy" / f"{subject}_001_00000001.png").write_bytes(original)
    conflicted = (datasets_dir / "ckplus48" / "CK+48" / CONFLICTED).read_bytes()
    (crops / "surprise" / "S989_001_00000001.png").write_bytes(conflicted)
    shard_set = prepare(data, root / "home")
    return data, copies, shard_set


def _quarantine(shard_set):
    return pq.read_table(shard_set.path / "quarantine.parquet").to_pandas().set_index("raw_path")


def test_bad_files_get_their_reasons(planted):
    _, _, shard_set = planted
    q = _quarantine(shard_set)
    assert q.loc["CK+48/anger/S990_001_00000001.png", "reason"] == "image_too_large"
    assert "20000x20000" in q.loc["CK+48/anger/S990_001_00000001.png", "detail"]
    assert q.loc["CK+48/anger/S991_001_00000001.png", "reason"] == "blank_image"
    assert q.loc["CK+48/anger/S991_001_00000001.png", "stage"] == "screen"
    # a non-crop without a face goes through detection and is quarantined as no face, not passed through
    assert q.loc["CK+48/sadness/S993_001_00000001.png", "reason"] == "no_face"
    rows = read_shards(shard_set.path, columns=["raw_path", "detector", "height", "width"]).to_pandas()
    photo = rows[rows.raw_path == "CK+48/happy/S992_001_00000001.png"]
    assert len(photo) == 1 and photo.detector.iloc[0] in ("mtcnn", "haar")  # detected, aligned, 48x48
    assert set(rows[rows.raw_path != "CK+48/happy/S992_001_00000001.png"].detector) == {"none"}  # real crops
    audit = shard_set.manifest["audit"]
    assert audit["blank"] == 1 and audit["too_large"] == 1


def test_copies_across_splits_and_with_other_labels(planted):
    data, copies, shard_set = planted
    q = _quarantine(shard_set)
    groups = pq.read_table(shard_set.path / "duplicate_groups.parquet").to_pandas()
    # the original, its three copies and the sequence's neighbouring frames (near copies of the same face)
    ids = {row_id("ckplus", f"CK+48/happy/{s}_001_00000001.png") for s in copies} | {
        row_id("ckplus", f"CK+48/{ORIGINAL}")
    }
    group = groups[groups.group == groups[groups.id.isin(ids)].group.unique().item()]
    assert ids <= set(group.id) and group.split.nunique() == 3
    winner = next(s for s in data.audit.duplicates.split_priority if s in set(group.split))
    assert winner == "test"  # FER2013's rule: the test split keeps its faces
    kept = group[group.decision == "kept"]
    assert len(kept) == 1 and kept.split.item() == winner
    others = group[group.decision != "kept"]
    assert (
        others.decision == others.split.map(lambda s: "duplicate" if s == winner else "duplicate_across_splits")
    ).all()
    # the same face labelled anger and surprise (and its sequence's neighbours): no label can be trusted, all go
    conflict = groups[groups.group == groups[groups.id == row_id("ckplus", f"CK+48/{CONFLICTED}")].group.item()]
    assert set(conflict.label_name) == {"anger", "surprise"} and (conflict.decision == "duplicate_label_conflict").all()
    assert q.loc["CK+48/surprise/S989_001_00000001.png", "reason"] == "duplicate_label_conflict"
    # every row the audit removed is in the quarantine table, stage audit, and in the groups file
    audited = {row_id("ckplus", path) for path in q[q.stage == "audit"].index}
    assert audited == set(groups[groups.decision != "kept"].id)
    audit = shard_set.manifest["audit"]
    assert audit["cross_split_groups"] >= 1 and audit["label_conflict_groups"] >= 1
    assert (shard_set.path / "audit_duplicates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_are_conserved_and_every_suite_passes(planted):
    _, _, shard_set = planted
    m = shard_set.manifest
    assert m["rows_in"] == m["rows"] + m["quarantined_rows"]
    assert m["quarantined_rows"] == len(pq.read_table(shard_set.path / "quarantine.parquet"))
    assert sum(m["audit"]["quarantined_by_reason"].values()) == m["quarantined_rows"]
    outcomes = validate_shard_set(shard_set.path, m)
    assert {n: o.success for n, o in outcomes.items()} == dict.fromkeys(outcomes, True)
    assert outcomes["duplicates"].stats["duplicate_groups"] == 0  # the policy left one member of each group


def test_the_check_fails_when_a_copy_spans_splits(planted, tmp_path):
    _, _, shard_set = planted
    tampered = tmp_path / shard_set.version
    shutil.copytree(shard_set.path, tampered)
    train = shard_files(tampered, ["train"])[0]
    test = shard_files(tampered, ["test"])[0]
    row = pq.read_table(train).slice(0, 1)
    row = row.set_column(row.schema.get_field_index("id"), "id", pa.array(["ckplus-leaked0000000000"]))
    row = row.set_column(row.schema.get_field_index("split"), "split", pa.array(["test"]))
    pq.write_table(pa.concat_tables([pq.read_table(test), row.cast(pq.read_schema(test))]), test)
    outcome = validate_duplicates(tampered, shard_set.manifest)
    assert not outcome.success and outcome.stats["cross_split_groups"] == 1


def test_shards_audit_command(planted, capsys):
    _, _, shard_set = planted
    assert cli_main(["shards", "audit", str(shard_set.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("duplicate_groups", "cross_split_groups", "cross_source_groups", "label_conflict_groups"):
        assert report[key] == shard_set.manifest["audit"][key]
    assert report["blank"] == 1 and report["too_large"] == 1 and not report["recomputed"]
    assert report["quarantined_by_reason"] == shard_set.manifest["audit"]["quarantined_by_reason"]
    assert cli_main(["shards", "audit", str(shard_set.path)]) == 0
    assert "cross split groups" in capsys.readouterr().out
    assert cv2.imread(str(shard_set.path / "audit_duplicates.png")) is not None


def test_a_copy_across_sources_is_reported(tmp_path, datasets_dir):
    """An aligned JAFFE face saved among the CK+48 crops (same emotion) is the same face in two sources; the group
    also takes in that JAFFE subject's other takes of the expression that are near copies of the (other-subject)
    CK+ file, as the check on the written rows would."""
    jaffe_only = prepare(
        data_params(make_raw_root(tmp_path / "raw", datasets_dir), sources=("jaffe",)), tmp_path / "h1"
    )
    rows = read_shards(jaffe_only.path, columns=["pixels", "label_name"]).to_pylist()
    face = next(r for r in rows if r["label_name"] != "neutral")  # CK+48 has no neutral folder
    folder = {"happiness": "happy"}.get(face["label_name"], face["label_name"])
    raw = tmp_path / "raw2"
    raw.mkdir()
    (raw / "jaffe").symlink_to(datasets_dir / "jaffe")
    crops = raw / "ckplus" / "CK+48"
    _link_tree(datasets_dir / "ckplus48" / "CK+48", crops)
    Image.fromarray(np.frombuffer(face["pixels"], np.uint8).reshape(48, 48)).save(
        crops / folder / "S9999_001_00000001.png"
    )
    both = prepare(data_params(raw, sources=("jaffe", "ckplus")), tmp_path / "h2")
    groups = pq.read_table(both.path / "duplicate_groups.parquet").to_pandas()
    copy = row_id("ckplus", f"CK+48/{folder}/S9999_001_00000001.png")
    group = groups[groups.group == groups[groups.id == copy].group.item()]
    assert set(group.source) == {"jaffe", "ckplus"}
    mine = group[group.id == copy].phash.item()
    assert (group[group.source == "jaffe"].phash == mine).any()  # the original: identical pixels, identical hash
    assert both.manifest["audit"]["cross_source_groups"] >= 1
    assert (group.decision == "kept").sum() == 1  # one label, so one copy stays
