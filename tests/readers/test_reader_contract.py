"""What every reader promises: the layouts it names, clear errors, determinism, well-formed rows, real faces."""

import re

import cv2
import pytest

from pipelines.params import KNOWN_SOURCES, DataParams
from pipelines.readers import LAYOUTS, MissingDatasetError, get_reader, read_source
from pipelines.records import Quarantined, QuarantineReason, RawRecord

from fixtures import layouts

PARAMS = DataParams()

BUILDERS = {
    "jaffe": lambda root, d: layouts.build_jaffe(root, d, posers=("KM",)),
    "ckplus": lambda root, d: layouts.build_ckplus_original(root, d, subjects=2, sequences=1, frames=4, unlabelled=1),
    "ckplus48": lambda root, d: layouts.build_ckplus48(root, d, per_emotion=1),
    "fer_csv": lambda root, d: layouts.build_fer_csv(root, d, rows=6),
    "fer_zip": lambda root, d: layouts.build_fer_images(root, d, per_emotion=1, as_zip=True, wrap="fer2013/"),
    "mmi": lambda root, d: layouts.build_mmi_sessions(root, d, emotions=(1, None, 5), image_sessions=(2,)),
    "mmi_ckstyle": lambda root, d: layouts.build_mmi_ckstyle(root, d),
    "bueeg": lambda root, d: layouts.build_bueeg(root, d),
}
SOURCE_OF = {"ckplus48": "ckplus", "fer_csv": "fer2013", "fer_zip": "fer2013", "mmi_ckstyle": "mmi"}
RAW_PATH = re.compile(r"^[^/!#][^!#]*(![^!#]+)?(#(row|frame)=\d+)?$")


def test_layouts_cover_every_source_with_an_example_path():
    assert set(LAYOUTS) == set(KNOWN_SOURCES)
    for source, text in LAYOUTS.items():
        assert "data/raw/" in text, source
        assert callable(get_reader(source))


@pytest.mark.parametrize("source", KNOWN_SOURCES)
def test_missing_or_unrecognised_folder_raises_naming_the_layout(tmp_path, source):
    with pytest.raises(MissingDatasetError) as missing:
        read_source(source, tmp_path / "absent", PARAMS)
    assert LAYOUTS[source].splitlines()[0] in str(missing.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("nothing here")
    with pytest.raises(MissingDatasetError) as unrecognised:
        get_reader(source)(tmp_path / "empty", PARAMS)  # raised at call time, not on first next()
    assert LAYOUTS[source].splitlines()[0] in str(unrecognised.value)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fixture_rows_are_well_formed_and_deterministic(tmp_path, datasets_dir, name):
    source = SOURCE_OF.get(name, name)
    built = BUILDERS[name](tmp_path / name, datasets_dir)
    first = list(read_source(source, built.root, PARAMS))
    second = list(read_source(source, built.root, PARAMS))
    assert [(i.raw_path, i.content_hash, type(i)) for i in first] == [
        (i.raw_path, i.content_hash, type(i)) for i in second
    ]
    assert len(first) == built.rows_in
    for item in first:
        assert item.source == source and RAW_PATH.match(item.raw_path), item.raw_path
        if isinstance(item, Quarantined):
            assert item.stage == "read" and item.reason in QuarantineReason.ALL and item.detail
        else:
            assert isinstance(item, RawRecord)
            assert item.image.dtype.name == "uint8" and item.image.ndim in (2, 3) and item.image.flags.c_contiguous
            assert item.subject and len(item.content_hash) == 64
    records = [i for i in first if isinstance(i, RawRecord)]
    assert len({r.raw_path for r in records}) == len(records)  # unique row ids


@pytest.mark.parametrize("name", ["jaffe", "ckplus", "mmi", "mmi_ckstyle", "bueeg"])
def test_fixture_frames_hold_real_faces(tmp_path, datasets_dir, name):
    """Other stages push these fixtures through face detection: every frame must show a face."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    built = BUILDERS[name](tmp_path / name, datasets_dir)
    records = [i for i in read_source(SOURCE_OF.get(name, name), built.root, PARAMS) if isinstance(i, RawRecord)]
    assert records
    for r in records[:: max(1, len(records) // 4)]:
        gray = r.image if r.image.ndim == 2 else cv2.cvtColor(r.image, cv2.COLOR_RGB2GRAY)
        faces = cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60))
        assert len(faces) == 1, r.raw_path
