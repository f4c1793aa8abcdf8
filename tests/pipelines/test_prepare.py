"""The data half end to end on real data: raw folders -> staged sources -> versioned, validated shard set."""

from __future__ import annotations

import json
import shutil
import zipfile

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main as cli_main
from pipelines.labels import EMOTIONS
from pipelines.prepare import MissingDatasetsError, prepare
from pipelines.shards import SHARD_SCHEMA, decode_pixels, read_shards, resolve_shard_set, shard_files
from pipelines.validation import validate_shard_set

from fixtures.rawroots import data_params, make_raw_root

JAFFE_COUNTS = {"anger": 30, "disgust": 29, "fear": 32, "happiness": 31, "neutral": 30, "sadness": 31, "surprise": 30}
CK48_KEPT = {"anger": 135, "disgust": 177, "fear": 75, "happiness": 207, "sadness": 84, "surprise": 249}


@pytest.fixture(scope="module")
def built(tmp_path_factory, datasets_dir):
    """JAFFE + CK+48 prepared once for this module (JAFFE goes through face detection)."""
    tmp = tmp_path_factory.mktemp("prepare")
    raw = make_raw_root(tmp / "raw", datasets_dir)
    data = data_params(raw)
    home = tmp / "home"
    shard_set = prepare(data, home)
    return data, home, shard_set


def test_counts_match_the_real_datasets(built):
    _, _, shard_set = built
    m = shard_set.manifest
    assert m["by_source"] == {"ckplus": 927, "jaffe": 213}
    assert m["quarantined"] == {"ckplus": {"label_outside_scheme": 54}, "jaffe": {}}
    assert m["rows_in"] == 213 + 981 == m["rows"] + m["quarantined_rows"]
    jaffe = {k.split("/")[0]: v for k, v in m["by_source_split_label"].items()}
    assert sum(m["by_label"].values()) == m["rows"]
    per_source = {}
    for key, labels in m["by_source_split_label"].items():
        source = key.split("/")[0]
        for label, n in labels.items():
            per_source.setdefault(source, {}).setdefault(label, 0)
            per_source[source][label] += n
    assert per_source["jaffe"] == JAFFE_COUNTS
    assert per_source["ckplus"] == CK48_KEPT
    assert jaffe  # every source/split pair recorded


def test_shards_have_the_schema_and_partitions(built):
    _, _, shard_set = built
    files = shard_files(shard_set.path)
    assert {(f.parent.parent.name, f.parent.name) for f in files} == {
        (f"split={s}", f"source={src}") for s in ("train", "val", "test") for src in ("ckplus", "jaffe")
    }
    for f in files:
        assert pq.read_schema(f).equals(SHARD_SCHEMA, check_metadata=False)
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
        split = f.parent.parent.name.split("=")[1]
        assert set(pq.read_table(f, columns=["split"]).column("split").to_pylist()) == {split}
    assert {e["path"] for e in shard_set.manifest["files"]} == {f.relative_to(shard_set.path).as_posix() for f in files}


def test_rows_hold_aligned_faces_and_their_svd_truncation(built):
    data, _, shard_set = built
    table = read_shards(shard_set.path, sources=["jaffe"])
    assert table.num_rows == 213
    faces = decode_pixels(table.column("pixels"), 48, 48)
    truncated = decode_pixels(table.column("pixels_svd"), 48, 48)
    assert faces.std() > 20  # real images, not blanks
    diff = np.abs(faces.astype(int) - truncated.astype(int)).mean(axis=(1, 2))
    assert (diff > 0).all() and diff.mean() < 12  # truncated, yet close (rank 16 of 48)
    for face in truncated[:5]:
        s = np.linalg.svd(face.astype(float), compute_uv=False)
        assert s[data.svd.rank] < 0.05 * s[0]  # energy beyond the kept rank is (up to rounding) gone
    assert set(table.column("detector").to_pylist()) <= {"mtcnn", "haar"}
    assert set(table.column("subject").to_pylist()) == {"KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"}
    ratings = table.column("rating_happiness").to_pylist()
    assert all(r is not None and 1 <= r <= 5 for r in ratings)
    ck = read_shards(
        shard_set.path, sources=["ckplus"], columns=["detector", "det_score", "sequence", "frame", "rating_anger"]
    )
    assert set(ck.column("detector").to_pylist()) == {"none"}  # pre-cropped pass-through
    assert ck.column("det_score").null_count == ck.num_rows and ck.column("rating_anger").null_count == ck.num_rows
    assert ck.column("sequence").null_count == 0 and ck.column("frame").null_count == 0


def test_labels_agree_with_names(built):
    _, _, shard_set = built
    t = read_shards(shard_set.path, columns=["label", "label_name", "source", "source_label"])
    for label, name in zip(t.column("label").to_pylist(), t.column("label_name").to_pylist()):
        assert EMOTIONS[label] == name


def test_splits_are_subject_independent_and_folds_present(built):
    data, _, shard_set = built
    t = read_shards(shard_set.path, columns=["source", "subject", "split", "fold"]).to_pandas()
    assert (t.groupby(["source", "subject"])["split"].nunique() == 1).all()
    assert (t.groupby(["source", "subject"])["fold"].nunique() == 1).all()
    assert set(t["fold"]) == set(range(data.folds))
    jaffe_subjects = t[t.source == "jaffe"].groupby("split")["subject"].nunique().to_dict()
    assert jaffe_subjects == {"train": 8, "val": 1, "test": 1}


def test_quarantine_table_holds_reasons(built):
    _, _, shard_set = built
    q = pq.read_table(shard_set.path / "quarantine.parquet").to_pandas()
    assert len(q) == 54
    assert set(q.reason) == {"label_outside_scheme"} and set(q.source_label) == {"contempt"}
    assert q.detail.str.contains("contempt").all() and (q.stage == "label").all()


def test_every_suite_passes(built):
    _, _, shard_set = built
    outcomes = validate_shard_set(shard_set.path, shard_set.manifest)
    assert {name: o.success for name, o in outcomes.items()} == {
        n: True for n in ("schema", "rows", "subjects", "conservation", "duplicates")
    }


def test_same_inputs_reuse_the_version_and_rewrite_nothing(built):
    data, home, shard_set = built
    before = {p: p.stat().st_mtime_ns for p in shard_set.path.rglob("*") if p.is_file()}
    again = prepare(data, home)
    assert again.version == shard_set.version and again.reused
    assert {p: p.stat().st_mtime_ns for p in shard_set.path.rglob("*") if p.is_file()} == before


def test_assembly_params_change_only_the_assembly(built):
    data, home, shard_set = built
    reseeded = prepare(data.replace(seed=data.seed + 1), home)
    assert reseeded.version != shard_set.version and not reseeded.reused
    assert shard_set.path.exists() and reseeded.path.parent == shard_set.path.parent  # beside the old one
    staged_versions = {s: v["version"] for s, v in reseeded.manifest["sources"].items()}
    assert staged_versions == {s: v["version"] for s, v in shard_set.manifest["sources"].items()}
    assert resolve_shard_set(home / "shards") == reseeded.path  # 'current' follows the latest build


def test_shaping_params_and_raw_content_give_new_source_versions(tmp_path, datasets_dir):
    raw = tmp_path / "raw"
    ck = raw / "ckplus" / "CK+48" / "happy"
    ck.mkdir(parents=True)
    for f in sorted((datasets_dir / "ckplus48" / "CK+48" / "happy").iterdir())[:12]:
        shutil.copy(f, ck / f.name)
    data = data_params(raw, sources=("ckplus",))
    home = tmp_path / "home"
    first = prepare(data, home)
    rank8 = prepare(data.replace(svd=data.svd.replace(rank=8)), home)
    assert rank8.manifest["sources"]["ckplus"]["version"] != first.manifest["sources"]["ckplus"]["version"]
    victim = sorted(ck.iterdir())[0]
    victim.write_bytes(sorted((datasets_dir / "ckplus48" / "CK+48" / "anger").iterdir())[0].read_bytes())
    changed = prepare(data, home)
    assert changed.version not in (first.version, rank8.version)
    assert len(list((home / "staging" / "ckplus").iterdir())) == 3  # three versions side by side


def test_contempt_can_be_mapped_by_params(tmp_path, datasets_dir):
    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    data = data_params(raw, sources=("ckplus",))
    data = data.replace(labels=data.labels.replace(outside_scheme={"contempt": "disgust"}))
    shard_set = prepare(data, tmp_path / "home")
    assert shard_set.manifest["by_source"] == {"ckplus": 981}
    assert shard_set.manifest["by_label"]["disgust"] == 177 + 54


def test_64x64_faces(tmp_path, datasets_dir):
    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    shard_set = prepare(data_params(raw, sources=("ckplus",), image_size=(64, 64)), tmp_path / "home")
    t = read_shards(shard_set.path, columns=["height", "width", "pixels"])
    assert set(t.column("height").to_pylist()) == {64} and set(t.column("width").to_pylist()) == {64}
    assert {len(b) for b in t.column("pixels").to_pylist()} == {64 * 64}
    assert all(o.success for o in validate_shard_set(shard_set.path, shard_set.manifest).values())


def test_faceless_and_bad_files_are_quarantined_through_the_pipeline(tmp_path, datasets_dir):
    jaffe = tmp_path / "raw" / "jaffe"
    jaffe.mkdir(parents=True)
    for f in sorted((datasets_dir / "jaffe" / "jaffe").glob("KA.*.tiff"))[:3]:
        shutil.copy(f, jaffe / f.name)
    shutil.copy(datasets_dir / "faces" / "no-faces.jpg", jaffe / "KA.HA9.999.tiff")  # a JAFFE name, no face
    (jaffe / "KA.SU9.998.tiff").write_bytes(b"")
    (jaffe / "KA.SA9.997.tiff").write_bytes((jaffe / sorted(jaffe.iterdir())[0].name).read_bytes()[:4000])
    shard_set = prepare(data_params(tmp_path / "raw", sources=("jaffe",)), tmp_path / "home")
    m = shard_set.manifest
    assert m["rows"] == 3
    assert m["quarantined"]["jaffe"] == {"corrupt_image": 1, "no_face": 1, "zero_byte_file": 1}
    q = pq.read_table(shard_set.path / "quarantine.parquet").to_pandas()
    assert dict(zip(q.raw_path, q.reason)) == {
        "KA.HA9.999.tiff": "no_face",
        "KA.SU9.998.tiff": "zero_byte_file",
        "KA.SA9.997.tiff": "corrupt_image",
    }
    assert m["rows_in"] == 6


def test_missing_dataset_names_the_expected_layouts(tmp_path):
    data = data_params(tmp_path / "nothing-here", sources=("jaffe", "mmi"))
    with pytest.raises(MissingDatasetsError) as error:
        prepare(data, tmp_path / "home")
    message = str(error.value)
    assert "jaffe" in message and "mmi" in message and "KA.AN1.39.tiff" in message and "Sessions" in message


def test_cli_prepare_and_summary(tmp_path, datasets_dir, capsys, monkeypatch):
    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    monkeypatch.setenv("EMOFLOW_HOME", str(tmp_path / "home"))
    assert cli_main(["prepare", "--raw-root", str(raw), "--sources", "ckplus", "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert cli_main(["shards", "summary", str(tmp_path / "home" / "shards"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == prepared
    assert set(summary) == {"version", "image_size", "rows", "by_source", "by_label", "by_split", "quarantined"}
    assert summary["image_size"] == [48, 48] and summary["rows"] == 927
    assert summary["quarantined"] == {"ckplus": {"label_outside_scheme": 54}}
    assert sum(summary["by_split"].values()) == sum(summary["by_label"].values()) == 927
    assert cli_main(["prepare", "--raw-root", str(tmp_path / "absent"), "--sources", "ckplus"]) == 2
    assert "CK+48" in capsys.readouterr().err


def test_fer2013_zip_to_validated_shards(tmp_path, datasets_dir):
    raw = make_raw_root(tmp_path / "raw", datasets_dir, fer=True)
    shard_set = prepare(data_params(raw, sources=("fer2013",)), tmp_path / "home")
    m = shard_set.manifest
    # every one of the 28,709 images is a row or a quarantine row with its reason
    assert (
        m["rows_in"] == 28709 and m["rows"] + m["quarantined_rows"] == 28709 and m["by_split"] == {"train": m["rows"]}
    )
    quarantined = m["quarantined"]["fer2013"]
    audit = m["audit"]
    # FER2013's train half holds 12 near-constant images (11 all one value, one with std 0.65; the next has 9.1)
    assert quarantined["blank_image"] == audit["blank"] == 12
    # every image with an identical-pixel twin in the zip (counted here independently) is in a duplicate group
    with zipfile.ZipFile(datasets_dir / "fer2013" / "fer2013-train.zip") as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
        pixels = np.stack([cv2.imdecode(np.frombuffer(z.read(n), np.uint8), cv2.IMREAD_GRAYSCALE) for n in names])
    _, inverse, counts = np.unique(pixels.reshape(len(names), -1), axis=0, return_inverse=True, return_counts=True)
    twins = {f"fer2013-train.zip!{n}" for n, c in zip(names, counts[inverse.ravel()]) if c > 1}
    assert len(twins) > 2000  # FER2013's known copies
    groups = pq.read_table(shard_set.path / "duplicate_groups.parquet").to_pandas()
    staged = pq.read_table(
        next((tmp_path / "home" / "staging" / "fer2013").glob("*/rows.parquet")), columns=["id", "raw_path"]
    )
    twin_ids = {i for i, r in zip(staged.column("id").to_pylist(), staged.column("raw_path").to_pylist()) if r in twins}
    quarantine = pq.read_table(shard_set.path / "quarantine.parquet").to_pandas()
    # (blank images, several of them identical, are quarantined before the audit sees them)
    assert len(twin_ids) == len(twins) - len(set(quarantine.raw_path[quarantine.reason == "blank_image"]) & twins)
    assert twin_ids <= set(groups["id"])
    assert audit["label_conflict_groups"] > 0
    # a group with conflicting labels loses every member; every other group keeps exactly one
    for _, group in groups.groupby("group"):
        kept = (group.decision == "kept").sum()
        assert kept == (0 if group.label_name.nunique() > 1 else 1)
    assert audit["cross_split_groups"] == 0  # one split only
    assert set(quarantined) == {"blank_image", "duplicate", "duplicate_label_conflict"}
    assert sum(quarantined.values()) == m["quarantined_rows"]
    assert all(o.success for o in validate_shard_set(shard_set.path, m).values())
