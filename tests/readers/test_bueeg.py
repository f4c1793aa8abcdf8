import hashlib
from collections import Counter

import numpy as np
import pytest

from pipelines.params import BueegParams, DataParams
from pipelines.prepare import harmonize_labels
from pipelines.readers import MissingDatasetError, read_source
from pipelines.readers.bueeg import map_columns
from pipelines.records import Quarantined

from fixtures.layouts import DEFAULT_BUEEG_SEGMENTS, as_expected, build_bueeg, split_stream, truncate_file

PARAMS = DataParams()


def test_videos_and_segments(tmp_path, datasets_dir):
    built = build_bueeg(tmp_path / "bueeg", datasets_dir)
    records, quarantined = split_stream(read_source("bueeg", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    # stride 24: F001/T1.mp4 segments 0..30 -> 0, 24 and 40..71 -> 40, 64; F002/T1.avi 5..60 -> 5, 29, 53
    assert [r.raw_path for r in records] == [
        "F001/T1.mp4#frame=0",
        "F001/T1.mp4#frame=24",
        "F001/T1.mp4#frame=40",
        "F001/T1.mp4#frame=64",
        "F002/T1.avi#frame=5",
        "F002/T1.avi#frame=29",
        "F002/T1.avi#frame=53",
    ]
    assert [r.sequence for r in records] == ["T1/0", "T1/0", "T1/1", "T1/1", "T1/0", "T1/0", "T1/0"]
    assert Counter(r.source_label for r in records) == {"happiness": 2, "surprise": 2, "anger": 3}
    r = records[0]
    assert r.image.shape == (240, 320, 3) and r.image.dtype == np.uint8 and not r.precropped
    assert r.content_hash == hashlib.sha256(r.image.tobytes()).hexdigest()
    assert not any(isinstance(o, Quarantined) for o in harmonize_labels(iter(records), PARAMS))


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path, datasets_dir):
    """The container says 320x240 = 76,800 pixels a frame: over a 50,000 limit every wanted frame is quarantined as
    image_too_large (decided from the header), under it they read as usual."""
    from pipelines.params import AuditParams

    built = build_bueeg(tmp_path / "bueeg", datasets_dir)
    small = DataParams(audit=AuditParams(max_image_pixels=50_000))
    records, quarantined = split_stream(read_source("bueeg", built.root, small))
    assert records == [] and len(quarantined) == len(built.records)
    assert {q.reason for q in quarantined} == {"image_too_large"}
    assert all("320x240" in q.detail and "not decoded" in q.detail for q in quarantined)
    assert len(split_stream(read_source("bueeg", built.root, PARAMS))[0]) == len(built.records)


@pytest.mark.parametrize("stride", [1, 7, 100])
def test_stride(tmp_path, datasets_dir, stride):
    built = build_bueeg(tmp_path / "b", datasets_dir, stride=stride, frames=72)
    records, quarantined = split_stream(read_source("bueeg", built.root, DataParams(bueeg=BueegParams(stride=stride))))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    if stride == 1:
        assert len(records) == 31 + 32 + 56


def test_frames_are_the_right_frames(tmp_path, datasets_dir):
    """Frame-exact reading: each requested frame equals the frame decoded by a plain sequential read."""
    import cv2

    built = build_bueeg(
        tmp_path / "b", datasets_dir, segments=(("F001", "T1.avi", 3, 20, "fear"),), stride=8, frames=24
    )
    records, _ = split_stream(read_source("bueeg", built.root, DataParams(bueeg=BueegParams(stride=8))))
    cap = cv2.VideoCapture(str(built.root / "F001" / "T1.avi"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert [r.frame for r in records] == [3, 11, 19]
    for r in records:
        assert np.array_equal(r.image, frames[r.frame])


@pytest.mark.parametrize(
    "header,delimiter",
    [
        (("subject", "video", "start_frame", "end_frame", "expression"), ","),
        (("Participant ID", "Clip", "Onset", "Offset", "Emotion"), ";"),
        (("SUBJECT", "VIDEO FILE", "BEGIN FRAME", "STOP FRAME", "LABEL"), "\t"),
        (("Expression", "End Frame", "Start Frame", "Video", "Subject"), ","),  # column order is free
    ],
)
def test_header_variants(tmp_path, datasets_dir, header, delimiter):
    order = {"subject": 0, "video": 1, "start": 2, "end": 3, "expression": 4}
    cols = map_columns(list(header))
    assert cols is not None
    # build with the canonical order, then rewrite the CSV in the header's column order
    built = build_bueeg(tmp_path / "b", datasets_dir)
    rows = [list(seg) for seg in DEFAULT_BUEEG_SEGMENTS]
    role_of = {v: k for k, v in cols.items()}
    lines = [delimiter.join(header)]
    for seg in rows:
        lines.append(delimiter.join(str(seg[order[role_of[i]]]) for i in range(len(header))))
    (built.root / "segments.csv").write_text("\n".join(lines) + "\n")
    records, quarantined = split_stream(read_source("bueeg", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records and quarantined == []


def test_map_columns_rejects_incomplete_headers():
    assert map_columns(["subject", "video", "start", "end"]) is None
    assert map_columns(["a", "b", "c", "d", "e"]) is None


def test_segment_beyond_the_video_and_missing_videos(tmp_path, datasets_dir):
    segments = DEFAULT_BUEEG_SEGMENTS + (("F001", "T1.mp4", 60, 130, "Sadness"),)
    built = build_bueeg(tmp_path / "b", datasets_dir, segments=segments, frames=72)
    # segment 60..130 asks for frames 60, 84, 108: the last two are beyond the video's 72 frames
    records, quarantined = split_stream(read_source("bueeg", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    assert [as_expected(q) for q in quarantined] == built.quarantined
    assert [(q.raw_path, q.reason) for q in quarantined] == [
        ("F001/T1.mp4#frame=84", "unreadable_video"),
        ("F001/T1.mp4#frame=108", "unreadable_video"),
    ]
    # a missing video and one that does not open: every requested frame is quarantined
    (built.root / "F002" / "T1.avi").unlink()
    with open(built.root / "segments.csv", "a") as fh:
        fh.write("F003,T9.mp4,0,50,Fear\n")
    (built.root / "F003").mkdir()
    (built.root / "F003" / "T9.mp4").write_bytes(b"<html>not a video</html>")
    records2, quarantined2 = split_stream(read_source("bueeg", built.root, PARAMS))
    got = [(q.raw_path, q.reason) for q in quarantined2]
    assert [g for g in got if g[0].startswith("F002")] == [
        (f"F002/T1.avi#frame={f}", "unreadable_video") for f in (5, 29, 53)
    ]
    assert [g for g in got if g[0].startswith("F003")] == [
        (f"F003/T9.mp4#frame={f}", "unreadable_video") for f in (0, 24, 48)
    ]
    assert "not found" in next(q for q in quarantined2 if q.raw_path.startswith("F002")).detail
    assert len(records2) == 5  # F001: 0, 24, 40, 60, 64


def test_truncated_video(tmp_path, datasets_dir):
    built = build_bueeg(tmp_path / "b", datasets_dir, segments=(("F001", "T1.avi", 0, 71, "happy"),), frames=72)
    truncate_file(built.root / "F001" / "T1.avi", keep=0.5)
    records, quarantined = split_stream(read_source("bueeg", built.root, PARAMS))
    assert [r.frame for r in records] == [0, 24]
    assert [(q.frame, q.reason) for q in quarantined] == [(48, "unreadable_video")]
    assert len(records) + len(quarantined) == 3  # rows in = rows out + quarantined, per requested frame


def test_bad_rows_overlaps_and_stems(tmp_path, datasets_dir):
    segments = (
        ("F001", "T1", 0, 30, "Happiness"),  # the video named by its stem
        ("F001", "t1.MP4", 24, 40, "Surprise"),  # overlaps frame 24; names matched case-insensitively
        ("F001", "T1.mp4", 10, 5, "Anger"),  # end before start
        ("F001", "T1.mp4", "x", 5, "Anger"),  # not an integer
        ("F001", "T1.mp4", 0, 5, ""),  # no expression
    )
    built = build_bueeg(
        tmp_path / "b",
        datasets_dir,
        segments=(("F001", "T1.mp4", 0, 30, "Happiness"), ("F001", "T1.mp4", 24, 40, "Surprise")),
    )
    lines = ["Subject,Video,Start Frame,End Frame,Expression"] + [",".join(map(str, s)) for s in segments]
    lines.append("F001,T1.mp4,3")  # too few fields
    (built.root / "segments.csv").write_text("\n".join(lines) + "\n")
    records, quarantined = split_stream(read_source("bueeg", built.root, PARAMS))
    assert [(r.raw_path, r.source_label, r.sequence) for r in records] == [
        ("F001/T1.mp4#frame=0", "happiness", "T1/0"),
        ("F001/T1.mp4#frame=24", "happiness", "T1/0"),
    ]
    got = [(q.raw_path, q.reason) for q in quarantined]
    assert got == [
        ("segments.csv#row=3", "malformed_metadata"),
        ("segments.csv#row=4", "malformed_metadata"),
        ("segments.csv#row=5", "malformed_metadata"),
        ("segments.csv#row=6", "malformed_metadata"),
        ("F001/T1.mp4#frame=24", "malformed_metadata"),  # the overlapping segment's claim on frame 24
    ]
    assert quarantined[-1].source_label == "surprise" and quarantined[-1].sequence == "T1/1"


def test_missing_dataset(tmp_path, datasets_dir):
    with pytest.raises(MissingDatasetError, match="BU-EEG"):
        read_source("bueeg", tmp_path / "absent", PARAMS)
    built = build_bueeg(tmp_path / "b", datasets_dir, segments=(("F001", "T1.avi", 0, 3, "fear"),), frames=4)
    (built.root / "segments.csv").write_text("who,what\n1,2\n")
    with pytest.raises(MissingDatasetError, match="start frame"):
        read_source("bueeg", built.root, PARAMS)
