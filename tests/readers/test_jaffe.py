import hashlib
import logging
from collections import Counter

import numpy as np
import pytest

from pipelines.labels import harmonize_label
from pipelines.params import DataParams
from pipelines.readers import MissingDatasetError, read_source
from pipelines.readers.jaffe import RATING_COLUMNS, parse_jaffe_name

from fixtures.layouts import BAD_REASON, as_expected, bad_bytes, build_jaffe, split_stream

PARAMS = DataParams()
# PROVENANCE: AN 30, DI 29, FE 32, HA 31, NE 30, SA 31, SU 30
PROVENANCE_COUNTS = {"AN": 30, "DI": 29, "FE": 32, "HA": 31, "NE": 30, "SA": 31, "SU": 30}
POSERS = {"KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"}


@pytest.fixture(scope="module")
def real(datasets_dir):
    return split_stream(read_source("jaffe", datasets_dir / "jaffe", PARAMS))


def test_real_jaffe_counts(real):
    records, quarantined = real
    assert quarantined == []
    assert len(records) == 213
    assert {r.subject for r in records} == POSERS
    assert Counter(r.source_label for r in records) == PROVENANCE_COUNTS
    decisions = [harmonize_label("jaffe", r.source_label, {}) for r in records]
    assert all(d.label is not None for d in decisions)


def test_real_jaffe_records(real, datasets_dir):
    records, _ = real
    first = records[0]
    assert first.raw_path == "jaffe/KA.AN1.39.tiff" and first.subject == "KA" and first.source_label == "AN"
    assert first.content_hash == hashlib.sha256((datasets_dir / "jaffe" / first.raw_path).read_bytes()).hexdigest()
    for r in records:
        assert r.image.dtype == np.uint8 and r.image.shape == (256, 256)  # palette TIFFs come out gray
        assert not r.precropped and r.split_hint is None and r.sequence is None
        assert set(r.extras) == set(RATING_COLUMNS.values())  # every image has its ratings row
    ka_ha1 = next(r for r in records if r.raw_path.startswith("jaffe/KA.HA1."))
    assert ka_ha1.extras["rating_happiness"] > 4 > ka_ha1.extras["rating_sadness"]
    assert [r.raw_path for r in records] == sorted(r.raw_path for r in records)


def test_ratings_line_parsed_in_provenance_order(real):
    records, _ = real
    km_ne1 = next(r for r in records if r.raw_path.startswith("jaffe/KM.NE1."))
    # JAFFE_labels.txt line 1: "1 2.87 2.52 2.10 1.97 1.97 2.06 KM-NE1" = HAP SAD SUR ANG DIS FEA
    assert km_ne1.extras == {
        "rating_happiness": 2.87,
        "rating_sadness": 2.52,
        "rating_surprise": 2.10,
        "rating_anger": 1.97,
        "rating_disgust": 1.97,
        "rating_fear": 2.06,
    }


def test_fixture_layout_and_missing_ratings(tmp_path, datasets_dir):
    built = build_jaffe(tmp_path / "jaffe", datasets_dir, posers=("KA", "UY"), drop_ratings_for=("KA-AN1",))
    records, quarantined = split_stream(read_source("jaffe", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    by_path = {r.raw_path: r for r in records}
    assert by_path["jaffe/KA.AN1.39.tiff"].extras == {}
    assert len(by_path["jaffe/KA.AN2.40.tiff"].extras) == 6


def test_images_at_root_ratings_beside_and_header_reorders(tmp_path, datasets_dir):
    built = build_jaffe(tmp_path / "j", datasets_dir, posers=("KL",), images_subdir=None, ratings=False)
    lines = [
        l
        for l in (datasets_dir / "jaffe" / "JAFFE_labels.txt").read_text().splitlines()
        if l.split()[-1].startswith("KL-")
    ]
    # a header naming the columns in another order, no row numbers, then the values in that order
    reordered = ["# FEA DIS ANG SUR SAD HAP PIC"]
    for line in lines:
        t = line.split()
        reordered.append(" ".join(list(reversed(t[1:7])) + [t[7]]))
    (built.root / "jaffe_labels.TXT").write_text("\n".join(reordered) + "\n")
    records, _ = split_stream(read_source("jaffe", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    original = {l.split()[-1]: [float(x) for x in l.split()[1:7]] for l in lines}
    for r in records:
        poser, en = r.raw_path.split(".")[:2]
        hap = original[f"{poser}-{en}"][0]
        assert r.extras["rating_happiness"] == hap


def test_malformed_ratings_lines_are_skipped_with_a_warning(tmp_path, datasets_dir, caplog):
    built = build_jaffe(tmp_path / "j", datasets_dir, posers=("KA",))
    ratings = built.root / "JAFFE_labels.txt"
    lines = ratings.read_text().splitlines()
    lines[0] = lines[0].replace("2.", "x.", 1)  # KA-AN1 -> a non-number
    lines.insert(3, "garbage line")
    lines.append(lines[5])  # duplicate key: first one kept
    ratings.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="pipelines.readers"):
        records, quarantined = split_stream(read_source("jaffe", built.root, PARAMS))
    assert "malformed" in caplog.text and "3 malformed line(s)" in caplog.text
    assert len(records) == len(built.records) and quarantined == []
    key = lines[0].split()[-1]  # the damaged line's image has empty extras, the others keep theirs
    damaged = [r for r in records if r.raw_path.split("/")[-1].startswith(key.replace("-", "."))]
    assert damaged and all(r.extras == {} for r in damaged)
    assert sum(1 for r in records if r.extras) == len(records) - len(damaged)


def test_bad_inputs_are_quarantined(tmp_path, datasets_dir):
    built = build_jaffe(tmp_path / "j", datasets_dir, posers=("KA",))
    folder = built.root / "jaffe"
    good = (folder / "KA.AN1.39.tiff").read_bytes()
    bad = {
        "KA.SA9.901.tiff": "zero_byte",
        "KA.SU9.902.tiff": "truncated",
        "KA.HA9.903.tiff": "corrupt",
        "KA.NE9.904.tiff": "not_an_image",
    }
    for name, kind in bad.items():
        (folder / name).write_bytes(bad_bytes(kind, good))
    (folder / "portrait.tiff").write_bytes(good)  # not JAFFE's name pattern
    (folder / "notes.doc").write_bytes(b"\xd0\xcf\x11\xe0 word document")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # OS litter: skipped, not a row
    (folder / "README").write_text("JAFFE")  # documentation: skipped
    records, quarantined = split_stream(read_source("jaffe", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    got = {q.raw_path.split("/")[-1]: q for q in quarantined}
    assert {n: got[n].reason for n in bad} == {n: BAD_REASON[k] for n, k in bad.items()}
    assert got["KA.SA9.901.tiff"].subject == "KA" and got["KA.SA9.901.tiff"].source_label == "SA"
    assert got["portrait.tiff"].reason == "malformed_metadata"
    assert got["notes.doc"].reason == "not_an_image"
    assert len(quarantined) == 6 and all(q.stage == "read" for q in quarantined)


def test_missing_or_empty_folder_names_the_layout(tmp_path):
    with pytest.raises(MissingDatasetError, match=r"<poser>\.<EXPR><n>\.<id>\.tiff"):
        read_source("jaffe", tmp_path / "nope", PARAMS)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("x")
    with pytest.raises(MissingDatasetError, match="JAFFE"):
        read_source("jaffe", tmp_path / "empty", PARAMS)


def test_name_parser():
    assert parse_jaffe_name("KA.AN1.39.tiff") == ("KA", "AN", 1, 39)
    assert parse_jaffe_name("ka.an12.3.TIF") == ("KA", "AN", 12, 3)
    assert parse_jaffe_name("KA.AN1.39.txt") is None
    assert parse_jaffe_name("KAAN1.39.tiff") is None
