import hashlib
import shutil
from collections import Counter

import numpy as np
import pytest

from pipelines.labels import harmonize_label
from pipelines.params import CkplusParams, DataParams
from pipelines.prepare import harmonize_labels
from pipelines.readers import MissingDatasetError, read_source
from pipelines.readers.ckplus import parse_emotion_text, select_frames
from pipelines.records import Quarantined, RawRecord

from fixtures.layouts import (
    BAD_REASON,
    as_expected,
    bad_bytes,
    build_ckplus48,
    build_ckplus_original,
    split_stream,
)

PARAMS = DataParams()
CK48_FOLDERS = {"anger": 135, "contempt": 54, "disgust": 177, "fear": 75, "happy": 207, "sadness": 84, "surprise": 249}


@pytest.fixture(scope="module")
def real(datasets_dir):
    return split_stream(read_source("ckplus", datasets_dir / "ckplus48", PARAMS))


def test_real_ck48_981_files_54_contempt(real):
    records, quarantined = real
    assert quarantined == []
    assert len(records) == 981
    assert Counter(r.source_label for r in records) == CK48_FOLDERS
    assert len({r.subject for r in records}) == 118
    assert len({(r.subject, r.sequence) for r in records}) == 327
    assert all(r.precropped and r.image.shape == (48, 48) and r.image.dtype == np.uint8 for r in records)


def test_real_ck48_through_the_label_stage_927_plus_54(real):
    records, _ = real
    decisions = [harmonize_label("ckplus", r.source_label, {"contempt": "quarantine"}) for r in records]
    assert sum(d.label is not None for d in decisions) == 927
    assert Counter(d.reason for d in decisions if d.label is None) == {"label_outside_scheme": 54}
    out = list(harmonize_labels(iter(records), PARAMS))
    assert sum(isinstance(o, RawRecord) for o in out) == 927
    assert sum(isinstance(o, Quarantined) and o.stage == "label" for o in out) == 54


def test_real_ck48_record_fields(real, datasets_dir):
    records, _ = real
    r = next(r for r in records if r.raw_path == "CK+48/anger/S010_004_00000017.png")
    assert (r.subject, r.sequence, r.frame, r.source_label) == ("S010", "004", 17, "anger")
    assert r.content_hash == hashlib.sha256((datasets_dir / "ckplus48" / r.raw_path).read_bytes()).hexdigest()


def test_original_layout_fixture(tmp_path, datasets_dir):
    built = build_ckplus_original(
        tmp_path / "ckplus", datasets_dir, subjects=2, sequences=2, frames=6, unlabelled=2, rgb_sequences=1
    )
    records, quarantined = split_stream(read_source("ckplus", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    assert [as_expected(q) for q in quarantined] == built.quarantined
    assert [q.reason for q in quarantined] == ["missing_label_file"] * 2
    # 4 labelled sequences x (1 neutral + 3 last) rows
    assert len(records) == 16
    assert Counter(r.source_label for r in records)["0"] == 4
    assert records[0].image.ndim == 3 and records[-1].image.ndim == 2  # first sequence written RGB
    assert all(not r.precropped and r.split_hint is None for r in records)


def test_emotion_float_codes_become_integer_strings(tmp_path, datasets_dir):
    built = build_ckplus_original(
        tmp_path / "c",
        datasets_dir,
        subjects=1,
        sequences=7,
        frames=4,
        unlabelled=0,
        codes=(1, 2, 3, 4, 5, 6, 7),
        extras=False,
    )
    records, _ = split_stream(read_source("ckplus", built.root, PARAMS))
    emotion_files = sorted((built.root / "Emotion").rglob("*_emotion.txt"))
    assert emotion_files[0].read_text() == "   1.0000000e+00\n"
    assert sorted({r.source_label for r in records}) == ["0", "1", "2", "3", "4", "5", "6", "7"]
    out = list(harmonize_labels(iter(records), PARAMS))
    assert Counter(o.reason for o in out if isinstance(o, Quarantined)) == {"label_outside_scheme": 3}  # contempt


@pytest.mark.parametrize("last_frames,neutral", [(1, True), (3, False), (5, True), (10, True)])
def test_frame_selection_params(tmp_path, datasets_dir, last_frames, neutral):
    params = DataParams(ckplus=CkplusParams(last_frames=last_frames, first_frame_neutral=neutral))
    built = build_ckplus_original(
        tmp_path / "c",
        datasets_dir,
        subjects=1,
        sequences=4,
        frames=(1, 2, 4, 8),
        unlabelled=0,
        last_frames=last_frames,
        first_frame_neutral=neutral,
        extras=False,
        frame_size=(120, 160),
    )
    records, quarantined = split_stream(read_source("ckplus", built.root, params))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    # no frame is ever taken twice
    assert len({r.raw_path for r in records}) == len(records)


def test_select_frames_rules():
    assert select_frames(10, 3, True) == (0, [7, 8, 9])
    assert select_frames(3, 3, True) == (0, [1, 2])  # short: first frame neutral, the rest the emotion
    assert select_frames(1, 3, True) == (None, [0])  # one frame: the peak (the Emotion file names it)
    assert select_frames(2, 3, False) == (None, [0, 1])
    assert select_frames(0, 3, True) == (None, [])


def test_parse_emotion_text():
    assert parse_emotion_text("   3.0000000e+00\n") == ("3", None, "")
    assert parse_emotion_text("3") == ("3", None, "")
    assert parse_emotion_text("   9.0000000e+00") == ("9", None, "")  # out of range: the label stage decides
    assert parse_emotion_text("")[1] == "malformed_metadata"
    assert parse_emotion_text("3.0 4.0")[1] == "malformed_metadata"
    assert parse_emotion_text("<html>")[1] == "malformed_metadata"
    assert parse_emotion_text("2.5000000e+00")[1] == "unknown_label"
    assert parse_emotion_text("nan")[1] == "unknown_label"


def test_bad_label_files_and_frames(tmp_path, datasets_dir):
    built = build_ckplus_original(
        tmp_path / "c", datasets_dir, subjects=2, sequences=3, frames=5, unlabelled=0, frame_size=(120, 160)
    )
    root = built.root
    emotion = root / "Emotion"
    images = root / "cohn-kanade-images"
    (next((emotion / "S005" / "001").glob("*.txt"))).write_text("garbage\n")
    (next((emotion / "S005" / "002").glob("*.txt"))).write_text("   2.5000000e+00\n")
    (next((emotion / "S005" / "003").glob("*.txt"))).write_text("")
    # S010/001: its last frame truncated, its neutral frame zero bytes, a stray non-image file
    seq = images / "S010" / "001"
    frames = sorted(seq.glob("*.png"))
    frames[-1].write_bytes(bad_bytes("truncated", frames[-1].read_bytes()))
    frames[0].write_bytes(b"")
    (seq / "S010_001_notes.doc").write_bytes(b"notes")
    # an Emotion file whose sequence has no images, and an empty labelled sequence folder
    (emotion / "S099" / "001").mkdir(parents=True)
    (emotion / "S099" / "001" / "S099_001_00000009_emotion.txt").write_text("   5.0000000e+00\n")
    records, quarantined = split_stream(read_source("ckplus", root, PARAMS))
    reasons = {q.raw_path: q.reason for q in quarantined}
    assert reasons["Emotion/S005/001/S005_001_00000005_emotion.txt"] == "malformed_metadata"
    assert reasons["Emotion/S005/002/S005_002_00000005_emotion.txt"] == "unknown_label"
    assert reasons["Emotion/S005/003/S005_003_00000005_emotion.txt"] == "malformed_metadata"
    assert reasons["cohn-kanade-images/S010/001/S010_001_00000005.png"] == BAD_REASON["truncated"]
    assert reasons["cohn-kanade-images/S010/001/S010_001_00000001.png"] == BAD_REASON["zero_byte"]
    assert reasons["cohn-kanade-images/S010/001/S010_001_notes.doc"] == "not_an_image"
    assert reasons["Emotion/S099/001"] == "malformed_metadata"
    assert len(quarantined) == 7
    good = [e for e in built.records if e.subject == "S010" and e.raw_path not in reasons]
    assert [as_expected(r) for r in records] == good
    # S010/001 (5 frames: neutral 1, emotion 3..5) keeps frames 3 and 4; S010/002 and /003 keep 4 rows each
    assert len(records) == 2 + 4 + 4


def test_missing_emotion_folder_makes_every_sequence_unlabelled(tmp_path, datasets_dir):
    built = build_ckplus_original(
        tmp_path / "c", datasets_dir, subjects=1, sequences=2, frames=3, unlabelled=0, frame_size=(120, 160)
    )
    shutil.rmtree(built.root / "Emotion")
    records, quarantined = split_stream(read_source("ckplus", built.root, PARAMS))
    assert records == [] and [q.reason for q in quarantined] == ["missing_label_file"] * 2
    assert [q.raw_path for q in quarantined] == ["cohn-kanade-images/S005/001", "cohn-kanade-images/S005/002"]


def test_wrapped_original_layout_and_precedence_over_ck48(tmp_path, datasets_dir, caplog):
    built = build_ckplus_original(
        tmp_path / "c", datasets_dir, subjects=1, sequences=1, frames=4, unlabelled=0, wrap="CK+", frame_size=(120, 160)
    )
    build_ckplus48(tmp_path / "c", datasets_dir, per_emotion=1)
    records, quarantined = split_stream(read_source("ckplus", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    assert records[0].raw_path.startswith("CK+/cohn-kanade-images/")
    assert "reading only the original" in caplog.text


def test_ck48_fixture_at_root_and_bad_files(tmp_path, datasets_dir):
    built = build_ckplus48(tmp_path / "ck48", datasets_dir, per_emotion=2, inside=None)
    folder = built.root / "happy"
    good = next(folder.glob("*.png")).read_bytes()
    (folder / "S900_001_00000001.png").write_bytes(bad_bytes("corrupt", good))
    (folder / "cropped_face.png").write_bytes(good)  # no subject in the name
    (folder / "Thumbs.db").write_bytes(b"\x00")
    records, quarantined = split_stream(read_source("ckplus", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    assert sorted((q.raw_path, q.reason) for q in quarantined) == [
        ("happy/S900_001_00000001.png", "corrupt_image"),
        ("happy/cropped_face.png", "malformed_metadata"),
    ]
    assert all(r.precropped for r in records)


def test_missing_dataset(tmp_path):
    with pytest.raises(MissingDatasetError, match="cohn-kanade-images"):
        read_source("ckplus", tmp_path / "absent", PARAMS)
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    with pytest.raises(MissingDatasetError, match="CK\\+48"):
        read_source("ckplus", tmp_path / "other", PARAMS)
