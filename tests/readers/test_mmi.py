import hashlib
import shutil
from collections import Counter

import numpy as np
import pytest

from pipelines.params import DataParams, MmiParams
from pipelines.prepare import harmonize_labels
from pipelines.readers import MissingDatasetError, read_source
from pipelines.readers.mmi import emotions_in_xml, middle_indices, normalise_label
from pipelines.records import Quarantined

from fixtures.layouts import (
    as_expected,
    bad_bytes,
    build_mmi_ckstyle,
    build_mmi_sessions,
    split_stream,
    truncate_file,
)

PARAMS = DataParams()


def test_session_layout(tmp_path, datasets_dir):
    built = build_mmi_sessions(
        tmp_path / "mmi",
        datasets_dir,
        emotions=(4, 1, None, 6),
        frames=(9, 10, 9, 7),
        image_sessions=(1,),
        wrap="mmi-facial-expression-database_download_2019-04-27",
    )
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    assert [as_expected(q) for q in quarantined] == built.quarantined
    assert [q.reason for q in quarantined] == ["missing_label_file"]
    video = [r for r in records if "#frame=" in r.raw_path]
    assert video[0].raw_path.endswith("Sessions/1/S001-001.avi#frame=3")
    assert video[0].image.ndim == 3 and video[0].image.dtype == np.uint8
    assert video[0].content_hash == hashlib.sha256(video[0].image.tobytes()).hexdigest()
    stills = [r for r in records if r.raw_path.endswith(".jpg")]
    assert [r.frame for r in stills] == [4, 5, 6]  # middle three of ten frame images
    assert {r.subject for r in records} == {"S001", "S002"}
    assert all(not r.precropped and r.split_hint is None for r in records)
    out = list(harmonize_labels(iter(records), PARAMS))
    assert not any(isinstance(o, Quarantined) for o in out)


def test_middle_frames_are_rgb_video_frames_in_order(tmp_path, datasets_dir):
    built = build_mmi_sessions(tmp_path / "mmi", datasets_dir, emotions=(5,), frames=11)
    records, _ = split_stream(read_source("mmi", built.root, PARAMS))
    assert [r.frame for r in records] == [4, 5, 6]  # the centre frame (5) and its neighbours
    # the apex frame is the middle one: the expression differs most from the neutral start there
    assert records[1].image.shape == (240, 320, 3)
    assert np.array_equal(records[1].image[..., 0], records[1].image[..., 2])  # gray JAFFE face, BGR->RGB safe


@pytest.mark.parametrize("middle", [1, 2, 5, 20])
def test_middle_frames_param(tmp_path, datasets_dir, middle):
    params = DataParams(mmi=MmiParams(middle_frames=middle))
    built = build_mmi_sessions(
        tmp_path / "mmi", datasets_dir, emotions=(2, 3), frames=(8, 3), image_sessions=(1,), middle_frames=middle
    )
    records, quarantined = split_stream(read_source("mmi", built.root, params))
    assert [as_expected(r) for r in records] == built.records and quarantined == []


def test_middle_indices():
    assert middle_indices(10, 3) == [4, 5, 6]
    assert middle_indices(11, 3) == [4, 5, 6]
    assert middle_indices(2, 3) == [0, 1]
    assert middle_indices(1, 1) == [0]
    assert middle_indices(9, 1) == [4]
    assert middle_indices(0, 3) == []


def test_labels_from_metadata(tmp_path, datasets_dir):
    # 7 is not one of the six: reported as-is, quarantined by the label stage; a name is lower-cased
    built = build_mmi_sessions(tmp_path / "mmi", datasets_dir, emotions=(7, "Happiness", "3.5"), frames=5)
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    assert Counter(r.source_label for r in records) == {"7": 3, "happiness": 3}
    assert [(q.raw_path, q.reason) for q in quarantined] == [("Sessions/3/S003-003.xml", "unknown_label")]
    out = list(harmonize_labels(iter(records), PARAMS))
    assert Counter(o.reason for o in out if isinstance(o, Quarantined)) == {"unknown_label": 3}


def test_emotion_in_session_xml_or_other_forms(tmp_path, datasets_dir):
    built = build_mmi_sessions(tmp_path / "mmi", datasets_dir, emotions=(None, None, None), frames=5)
    sessions = built.root / "Sessions"
    # 1: emotion moved into session.xml as a metatag; 2: an <Emotion> element; 3: conflicting values
    s1 = sessions / "1" / "session.xml"
    s1.write_text(s1.read_text().replace("</session>", '  <Metatag Name="Emotion" Value="6" />\n</session>'))
    (sessions / "2" / "S002-002.xml").write_text("<Metadata><Emotion>2</Emotion></Metadata>")
    (sessions / "3" / "S003-003.xml").write_text(
        '<Metadata><Metatag Name="Emotion" Value="2"/><Metatag Name="emotion" Value="3"/></Metadata>'
    )
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    assert [(r.sequence, r.source_label) for r in records] == [("1", "6")] * 3 + [("2", "2")] * 3
    assert [(q.raw_path, q.reason) for q in quarantined] == [("Sessions/3/S003-003.xml", "malformed_metadata")]


def test_bad_sessions(tmp_path, datasets_dir):
    built = build_mmi_sessions(
        tmp_path / "mmi", datasets_dir, emotions=(1, 2, 3, 4, 5, 6, 1), frames=9, image_sessions=(5,)
    )
    s = built.root / "Sessions"
    (s / "1" / "S001-001.xml").write_text("<Metadata><Metatag Name='Emotion' Value='1'")  # broken XML
    (s / "1" / "session.xml").write_text("not xml either")
    truncate_file(s / "2" / "S002-002.avi", keep=0.3)  # the middle frames are gone
    (s / "3" / "S003-003.avi").write_bytes(b"")  # zero-byte video
    (s / "4" / "S001-004.avi").write_bytes(bad_bytes("not_an_image", b""))  # garbage video
    shutil.rmtree(s / "5")
    (s / "5").mkdir()  # a session folder with nothing in it
    (s / "5" / "session.xml").write_text("<session/>")
    frames = sorted((s / "6").glob("*.jpg"))
    frames[4].write_bytes(bad_bytes("truncated", frames[4].read_bytes()))  # the centre still
    (s / "7" / "S001-007.avi").rename(s / "7" / "recording.avi")  # no S<digits> prefix...
    session7 = (s / "7" / "session.xml").read_text()
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    got = [(q.raw_path, q.reason) for q in quarantined]
    assert ("Sessions/1/S001-001.xml", "malformed_metadata") in got
    assert [r for r in got if r[0].startswith("Sessions/2/")] == [
        (f"Sessions/2/S002-002.avi#frame={f}", "unreadable_video") for f in (3, 4, 5)
    ]
    assert ("Sessions/3/S003-003.avi", "unreadable_video") in got
    assert ("Sessions/4/S001-004.avi", "unreadable_video") in got
    assert ("Sessions/5", "malformed_metadata") in got
    assert ("Sessions/6/S003-006_004.jpg", "corrupt_image") in got
    assert len(got) == 8
    # ...session 7's subject then comes from session.xml's <subject id=...>
    assert 'subject id="1"' in session7
    assert {r.subject for r in records if r.sequence == "7"} == {"1"}
    assert Counter(r.sequence for r in records) == {"6": 2, "7": 3}


def test_ckstyle_layout(tmp_path, datasets_dir):
    built = build_mmi_ckstyle(tmp_path / "mmi", datasets_dir, header=True)
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records
    assert [as_expected(q) for q in quarantined] == built.quarantined
    assert [r.frame for r in records[:3]] == [3, 4, 5]  # middle three of img_001..img_007
    assert Counter(r.source_label for r in records) == {"happiness": 3, "surprise": 3, "4": 3}
    assert all(r.image.ndim == 2 for r in records)


def test_ckstyle_bad_rows_and_folder_matching(tmp_path, datasets_dir):
    built = build_mmi_ckstyle(tmp_path / "mmi", datasets_dir, rows=(("fear", "1", "1"),), unlisted=(("2", "1"),))
    (built.root / "1").rename(built.root / "001")  # the CSV says 1, the folder is 001
    with open(built.root / "mmi.csv", "a") as fh:
        fh.write("surprise;7;1\n")  # no such folder
        fh.write("anger;2\n")  # a field short
        fh.write("fear;1;1\n")  # duplicate
        fh.write("3?;2;1\n")  # not a code or a name
    (built.root / "2" / "1" / "thumbs.txt").write_text("x")  # documentation: skipped
    (built.root / "2" / "1" / "frame.bin").write_bytes(b"\x00")  # non-image among frames
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    assert [r.raw_path for r in records] == ["001/1/img_003.png", "001/1/img_004.png", "001/1/img_005.png"]
    got = sorted((q.raw_path, q.reason) for q in quarantined)
    assert got == sorted(
        [
            ("mmi.csv#row=2", "malformed_metadata"),
            ("mmi.csv#row=3", "malformed_metadata"),
            ("mmi.csv#row=4", "malformed_metadata"),
            ("mmi.csv#row=5", "unknown_label"),
            ("2/1/frame.bin", "not_an_image"),
            ("2/1", "missing_label_file"),
        ]
    )


def test_both_layouts_read_sessions_only(tmp_path, datasets_dir, caplog):
    built = build_mmi_sessions(tmp_path / "mmi", datasets_dir, emotions=(1,), frames=5)
    build_mmi_ckstyle(tmp_path / "mmi", datasets_dir)
    records, quarantined = split_stream(read_source("mmi", built.root, PARAMS))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    assert "reading only Sessions" in caplog.text


def test_missing_dataset(tmp_path):
    with pytest.raises(MissingDatasetError, match="Sessions"):
        read_source("mmi", tmp_path / "absent", PARAMS)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.csv").write_text("a,b,c\n")
    with pytest.raises(MissingDatasetError, match="expression;subject;sequence"):
        read_source("mmi", tmp_path / "x", PARAMS)


def test_xml_helpers():
    import xml.etree.ElementTree as ET

    assert emotions_in_xml(ET.fromstring('<M><Metatag Name="Emotion" Value="3"/></M>')) == ["3"]
    assert emotions_in_xml(ET.fromstring('<session Emotion="4"/>')) == ["4"]
    assert emotions_in_xml(ET.fromstring('<M><Metatag Name="Subject" Value="3"/></M>')) == []
    assert normalise_label(" 03 ") == ("3", "")
    assert normalise_label("Sadness") == ("sadness", "")
    assert normalise_label("2;3")[0] is None
