import hashlib
import itertools
import time
import tracemalloc
import zipfile
from collections import Counter

import numpy as np
import pytest

from pipelines.params import DataParams, Fer2013Params
from pipelines.prepare import harmonize_labels
from pipelines.readers import MissingDatasetError, read_source
from pipelines.records import Quarantined, RawRecord

from fixtures.layouts import (
    BAD_REASON,
    UNSAFE_MEMBER_NAMES,
    add_zip_members,
    as_expected,
    bad_bytes,
    build_fer_csv,
    build_fer_images,
    split_stream,
)

AUTO = DataParams()
CSV = DataParams(fer2013=Fer2013Params(layout="csv"))
IMAGES = DataParams(fer2013=Fer2013Params(layout="images"))
ZIP_COUNTS = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "neutral": 4965,
    "sad": 4830,
    "surprise": 3171,
}
CSV_COUNTS = {"0": 177, "1": 14, "2": 189, "3": 272, "4": 182, "5": 141, "6": 192}


def test_real_train_zip_28709_rows_streamed_fast(datasets_dir):
    labels: Counter = Counter()
    subjects: set = set()
    splits: Counter = Counter()
    shapes: set = set()
    quarantined = 0
    started = time.perf_counter()
    for item in read_source("fer2013", datasets_dir / "fer2013", IMAGES):
        if isinstance(item, Quarantined):
            quarantined += 1
            continue
        labels[item.source_label] += 1
        subjects.add(item.subject)
        splits[item.split_hint] += 1
        shapes.add((item.image.shape, item.image.dtype.str, item.precropped))
    seconds = time.perf_counter() - started
    print(f"\nFER2013 zip reader: 28,709 images in {seconds:.2f} s = {28709 / seconds:,.0f} records/s")
    assert quarantined == 0
    assert dict(labels) == ZIP_COUNTS and sum(labels.values()) == 28709
    # one pseudo-subject per file name; the Kaggle export reuses two names for different images in two emotion
    # folders (Training_52789098: neutral+surprise, Training_8475486: angry+surprise), all in train/
    assert len(subjects) == 28707
    assert splits == {"train": 28709}
    assert shapes == {((48, 48), "|u1", True)}
    assert seconds < 30, f"the zip reader took {seconds:.1f} s (target: a few seconds)"


def test_real_zip_memory_stays_flat(datasets_dir):
    stream = read_source("fer2013", datasets_dir / "fer2013", IMAGES)
    first = next(stream)
    tracemalloc.start()
    try:
        for _ in itertools.islice(stream, 4000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.raw_path.startswith("fer2013-train.zip!train/angry/Training_")
    assert peak < 8 * 2**20, f"streaming 4000 records peaked at {peak / 2**20:.1f} MiB"


def test_real_zip_record_fields(datasets_dir):
    first = next(read_source("fer2013", datasets_dir / "fer2013", IMAGES))
    member = first.raw_path.split("!", 1)[1]
    with zipfile.ZipFile(datasets_dir / "fer2013" / "fer2013-train.zip") as zf:
        assert first.content_hash == hashlib.sha256(zf.read(member)).hexdigest()
    assert first.subject == member.rsplit("/", 1)[1][:-4] and first.source_label == "angry"


def test_real_csv_1167_rows(datasets_dir):
    records, quarantined = split_stream(read_source("fer2013", datasets_dir / "fer2013", CSV))
    assert quarantined == [] and len(records) == 1167
    assert Counter(r.source_label for r in records) == CSV_COUNTS
    assert {r.split_hint for r in records} == {"train"}
    assert records[16].raw_path == "fer2013_first_1167_rows.csv#row=17" and records[16].subject == "csv-row-17"
    assert records[0].image.shape == (48, 48) and records[0].image.dtype == np.uint8
    assert records[0].content_hash == hashlib.sha256(records[0].image.tobytes()).hexdigest()
    assert records[0].image[0, :3].tolist() == [70, 80, 82]  # the CSV's first pixels, row-major
    assert all(isinstance(o, RawRecord) for o in harmonize_labels(iter(records), CSV))


def test_auto_layout_prefers_the_csv_and_never_reads_both(tmp_path, datasets_dir):
    both = tmp_path / "both"
    both.mkdir()
    (both / "fer2013.csv").symlink_to(datasets_dir / "fer2013" / "fer2013_first_1167_rows.csv")
    (both / "fer2013-train.zip").symlink_to(datasets_dir / "fer2013" / "fer2013-train.zip")
    records, _ = split_stream(read_source("fer2013", both, AUTO))
    assert len(records) == 1167 and records[0].raw_path == "fer2013.csv#row=1"
    only_zip = tmp_path / "zip"
    only_zip.mkdir()
    (only_zip / "fer2013-train.zip").symlink_to(datasets_dir / "fer2013" / "fer2013-train.zip")
    first = next(read_source("fer2013", only_zip, AUTO))
    assert first.raw_path.startswith("fer2013-train.zip!train/")


def test_csv_fixture_usage_is_the_split(tmp_path, datasets_dir):
    built = build_fer_csv(tmp_path / "fer", datasets_dir, rows=9)
    records, quarantined = split_stream(read_source("fer2013", built.root, AUTO))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    assert [r.split_hint for r in records[:3]] == ["train", "val", "test"]


def test_csv_header_variants_and_nesting(tmp_path, datasets_dir):
    # the Kaggle icml_face_data.csv header (spaces, other order) inside the tarball's fer2013/ folder
    src = datasets_dir / "fer2013" / "fer2013_first_1167_rows.csv"
    lines = src.read_text().splitlines()[1:6]
    nested = tmp_path / "fer" / "fer2013"
    nested.mkdir(parents=True)
    rows = ["emotion, Usage, pixels"] + [f"{l.split(',')[0]}, PrivateTest, {l.split(',')[1]}" for l in lines]
    (nested / "icml_face_data.csv").write_text("\r\n".join(rows) + "\r\n")
    (tmp_path / "fer" / "other.csv").write_text("a,b\n1,2\n")  # not FER-format: ignored
    records, quarantined = split_stream(read_source("fer2013", tmp_path / "fer", AUTO))
    assert quarantined == [] and len(records) == 5
    assert records[0].raw_path == "fer2013/icml_face_data.csv#row=1" and records[0].split_hint == "test"


def test_csv_bad_rows(tmp_path, datasets_dir):
    built = build_fer_csv(tmp_path / "fer", datasets_dir, rows=3)
    path = built.root / "fer2013.csv"
    good_pixels = path.read_text().splitlines()[1].split(",")[1]
    p = good_pixels.split()
    bad_rows = [
        f"3,{' '.join(p[:-1])},Training",  # 2303 values
        f"3,{' '.join(p + ['7'])},Training",  # 2305 values
        f"3,{' '.join(p[:-1] + ['x'])},Training",  # not an integer
        f"3,{' '.join(p[:-1] + ['256'])},PublicTest",  # out of range
        f"happy,{good_pixels},Training",  # emotion not an integer
        f"9,{good_pixels},Training",  # unknown code: the label stage's business
        f"3,{good_pixels},Validation",  # unknown Usage
        f"3,{good_pixels}",  # missing field (a truncated last line)
        f'3,"{"1 " * 70000}",Training',  # a field over the csv module's limit
        "",  # blank line: no row
        f" 4 ,{good_pixels}, PrivateTest ",  # spaces are fine
    ]
    with open(path, "a") as fh:
        fh.write("\n".join(bad_rows) + "\n")
    records, quarantined = split_stream(read_source("fer2013", built.root, AUTO))
    reasons = [(q.raw_path, q.reason) for q in quarantined]
    assert reasons == [
        ("fer2013.csv#row=4", "wrong_pixel_count"),
        ("fer2013.csv#row=5", "wrong_pixel_count"),
        ("fer2013.csv#row=6", "wrong_pixel_count"),
        ("fer2013.csv#row=7", "wrong_pixel_count"),
        ("fer2013.csv#row=8", "unknown_label"),
        ("fer2013.csv#row=10", "malformed_metadata"),
        ("fer2013.csv#row=11", "malformed_metadata"),
        ("fer2013.csv#row=12", "malformed_metadata"),
    ]
    assert "2303 pixel values" in quarantined[0].detail
    assert [r.raw_path for r in records][-2:] == ["fer2013.csv#row=9", "fer2013.csv#row=14"]
    assert records[-1].source_label == "4" and records[-1].split_hint == "test"
    labelled = list(harmonize_labels(iter(records), AUTO))
    assert [(o.raw_path, o.reason) for o in labelled if isinstance(o, Quarantined)] == [
        ("fer2013.csv#row=9", "unknown_label")
    ]


@pytest.mark.parametrize("as_zip,wrap", [(False, ""), (False, "archive/"), (True, ""), (True, "fer2013/")])
def test_kaggle_image_layout(tmp_path, datasets_dir, as_zip, wrap):
    built = build_fer_images(
        tmp_path / "fer", datasets_dir, per_emotion=2, test_per_emotion=1, as_zip=as_zip, wrap=wrap
    )
    records, quarantined = split_stream(read_source("fer2013", built.root, AUTO))
    assert [as_expected(r) for r in records] == built.records and quarantined == []
    assert Counter(r.split_hint for r in records) == {"train": 14, "val": 7, "test": 7}
    assert all(r.precropped and r.image.shape == (48, 48) for r in records)


def test_folders_win_over_a_zip_of_the_same_images(tmp_path, datasets_dir, caplog):
    built = build_fer_images(tmp_path / "fer", datasets_dir, per_emotion=1, test_per_emotion=0)
    build_fer_images(tmp_path / "fer", datasets_dir, per_emotion=1, test_per_emotion=0, as_zip=True)
    records, _ = split_stream(read_source("fer2013", built.root, AUTO))
    assert [as_expected(r) for r in records] == built.records
    assert "reading only the folders" in caplog.text


def test_zip_bad_members(tmp_path, datasets_dir):
    built = build_fer_images(
        tmp_path / "fer", datasets_dir, per_emotion=1, test_per_emotion=0, as_zip=True, emotions=("angry", "happy")
    )
    zpath = built.root / "archive.zip"
    with zipfile.ZipFile(zpath) as zf:
        good = zf.read(next(n for n in zf.namelist() if n.endswith(".jpg")))
    bad = {f"train/happy/Training_9000{i}.jpg": kind for i, kind in enumerate(BAD_REASON)}
    members = {name: bad_bytes(kind, good) for name, kind in bad.items()}
    members.update({name: good for name in UNSAFE_MEMBER_NAMES})
    members["train/happy/notes.doc"] = b"not an image"
    members["train/Training_77.jpg"] = good  # in a split folder but not in an emotion folder
    members["__MACOSX/train/happy/._Training_1.jpg"] = b"\x00\x05\x16\x07"  # OS litter: skipped
    members["train/happy/.DS_Store"] = b"\x00"
    members["README.txt"] = b"FER2013"
    add_zip_members(zpath, members)
    # a member whose stored bytes do not match its CRC
    with zipfile.ZipFile(zpath, "a") as zf:
        zf.writestr(zipfile.ZipInfo("train/happy/Training_99999.jpg"), good)
    data = bytearray(zpath.read_bytes())
    local = data.find(b"train/happy/Training_99999.jpg")  # the local header comes before the central directory
    data[local + len("train/happy/Training_99999.jpg") + 100] ^= 0xFF  # a byte inside the member's data
    zpath.write_bytes(bytes(data))
    records, quarantined = split_stream(read_source("fer2013", built.root, AUTO))
    assert [as_expected(r) for r in records] == built.records
    got = {q.raw_path.split("!", 1)[1]: q for q in quarantined}
    for name, kind in bad.items():
        assert got[name].reason == BAD_REASON[kind], (name, got[name].detail)
        assert got[name].source_label == "happy" and got[name].subject == name.rsplit("/", 1)[1][:-4]
    for name in UNSAFE_MEMBER_NAMES:
        assert got[name].reason == "unsafe_zip_path" and got[name].content_hash is None
    assert got["train/happy/notes.doc"].reason == "not_an_image"
    assert got["train/Training_77.jpg"].reason == "malformed_metadata"
    assert got["train/happy/Training_99999.jpg"].reason == "corrupt_image"
    assert "CRC" in got["train/happy/Training_99999.jpg"].detail
    assert len(quarantined) == len(bad) + len(UNSAFE_MEMBER_NAMES) + 3
    assert not (tmp_path / "evil").exists() and not (built.root / "etc").exists()  # nothing extracted


def test_corrupt_archive_is_one_row(tmp_path, datasets_dir):
    built = build_fer_images(tmp_path / "fer", datasets_dir, per_emotion=1, test_per_emotion=0, as_zip=True)
    zpath = built.root / "archive.zip"
    zpath.write_bytes(zpath.read_bytes()[: zpath.stat().st_size // 2])  # an interrupted download
    records, quarantined = split_stream(read_source("fer2013", built.root, AUTO))
    assert records == [] and [(q.raw_path, q.reason) for q in quarantined] == [("archive.zip", "corrupt_archive")]


def test_folder_bad_files(tmp_path, datasets_dir):
    built = build_fer_images(tmp_path / "fer", datasets_dir, per_emotion=1, test_per_emotion=1, emotions=("sad",))
    folder = built.root / "test" / "sad"
    good = next(folder.glob("*.jpg")).read_bytes()
    for i, kind in enumerate(BAD_REASON):
        (folder / f"PrivateTest_{i}.jpg").write_bytes(bad_bytes(kind, good))
    (folder / "clip.mp3").write_bytes(b"ID3")
    (built.root / "train" / "Training_5.jpg").write_bytes(good)
    records, quarantined = split_stream(read_source("fer2013", built.root, AUTO))
    assert [as_expected(r) for r in records] == built.records
    got = {q.raw_path: q.reason for q in quarantined}
    assert got == {
        **{f"test/sad/PrivateTest_{i}.jpg": BAD_REASON[k] for i, k in enumerate(BAD_REASON)},
        "test/sad/clip.mp3": "not_an_image",
        "train/Training_5.jpg": "malformed_metadata",
    }


def test_missing_layouts_name_what_is_expected(tmp_path, datasets_dir):
    with pytest.raises(MissingDatasetError, match="fer2013.csv"):
        read_source("fer2013", tmp_path / "absent", AUTO)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingDatasetError, match="emotion,pixels,Usage"):
        read_source("fer2013", empty, AUTO)
    (empty / "fer2013-train.zip").symlink_to(datasets_dir / "fer2013" / "fer2013-train.zip")
    with pytest.raises(MissingDatasetError, match="layout is csv"):
        read_source("fer2013", empty, CSV)
    csv_only = tmp_path / "csv_only"
    build_fer_csv(csv_only, datasets_dir, rows=2)
    with pytest.raises(MissingDatasetError, match="train/"):
        read_source("fer2013", csv_only, IMAGES)
