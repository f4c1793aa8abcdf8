"""FER2013: the original ``fer2013.csv``, or the Kaggle image layout (folders or the downloaded ``.zip``).

**CSV layout**: any ``*.csv`` in the source folder or one level below (the original ``fer2013.tar.gz`` unpacks
to ``fer2013/fer2013.csv``) whose header names the columns ``emotion``, ``pixels`` and ``Usage`` (any order,
case and surrounding spaces ignored, so the ``icml_face_data.csv`` variant ``emotion, Usage, pixels`` is read
too). Each row: ``pixels`` = 2304 space-separated integers 0..255, row-major 48x48; ``emotion`` = an integer
code (reported as ``"0"``..``"6"``; the label stage maps it and quarantines unknown codes); ``Usage`` is the
split (Training->train, PublicTest->val, PrivateTest->test). Several FER-format CSVs are all read (sorted).
raw_path ``fer2013.csv#row=17`` (rows counted from 1 after the header); subject = one pseudo-subject per row,
``csv-row-17`` (``<csv stem>-row-17`` when the folder holds several FER CSVs); content_hash = sha256 of the
48x48 pixel bytes.
Bad rows: a wrong number of fields, a line the csv module rejects, or an unknown Usage -> ``malformed_metadata``;
an emotion field that is not an integer -> ``unknown_label``; a pixel list that is not 2304 integers in 0..255
-> ``wrong_pixel_count``. Blank lines are not rows (they still count in N, so N stays the data line number).

**Image layout** (Kaggle): ``train/<emotion>/Training_<id>.jpg``, ``test/<emotion>/PublicTest_<id>.jpg`` and
``test/<emotion>/PrivateTest_<id>.jpg``, either as folders (the split folders in the source folder or up to
two levels below it) or inside ``*.zip`` files in the source folder or one level below, at the archive's top
or under wrapping folders (``archive.zip!train/...``, ``fer2013.zip!fer2013/train/...``). Zip members are
streamed into memory one at a time (never extracted). ``source_label`` = the emotion folder lower-cased;
split: ``train/`` -> train, ``test/PublicTest_*`` -> val, ``test/PrivateTest_*`` (and any other name in
``test/``) -> test, ``val/`` or ``validation/`` -> val. Subject = the file stem (``Training_10118481``), one
pseudo-subject per file name (the Kaggle export reuses two train names for different images in two emotion
folders, so the shared train zip gives 28,707 subjects for 28,709 images, all in train). When both extracted
folders and zips are present, only the folders are read (the zip is the same images; warning).
Bad input: zero-byte / corrupt / truncated / non-image files or members -> quarantined with the decoder's
reason; a member whose path is absolute or contains ``..`` -> ``unsafe_zip_path`` (never read); a member that
does not inflate (bad CRC, unsupported compression, encrypted) or declares more than 256 MiB ->
``corrupt_image``; a zip that does not open -> one ``corrupt_archive`` row; an image inside a split folder but
not in ``<split>/<emotion>/`` -> ``malformed_metadata``. OS litter (``__MACOSX/``, ``._*``, ``.DS_Store``) and
documentation files are skipped (logged, not rows).

``params.fer2013.layout``: ``auto`` reads the CSV layout when a FER-format CSV exists, else the image layout;
``csv`` / ``images`` force one. The two layouts are never both read (they hold the same images).
"""

from __future__ import annotations

import csv
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from pipelines.params import DataParams
from pipelines.readers import MissingDatasetError
from pipelines.readers.common import (
    MAX_IMAGE_BYTES,
    SkipCounter,
    classify_name,
    emotion_folder_files,
    files,
    find_dirs,
    image_file_or_quarantine,
    image_or_quarantine,
    is_os_litter,
    log,
    not_an_image,
    quarantine,
    rel,
    sha256_hex,
    subdirs,
)
from pipelines.readers.image_decoding import unsafe_member_reason
from pipelines.records import Quarantined, QuarantineReason, RawRecord, ReaderOutput

SOURCE = "fer2013"
SIDE = 48
PIXELS = SIDE * SIDE
CROP_SIZE = (SIDE, SIDE)  # the published crop size (height, width): other sizes are not trusted as crops
USAGE_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
SPLIT_DIRS = {"train": "train", "test": "test", "val": "val", "validation": "val"}
REQUIRED_COLUMNS = ("emotion", "pixels", "usage")


# ---------------------------------------------------------------- layout detection


def _csv_header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    return [c.strip().lower() for c in first.strip("\r\n").split(",")]


def is_fer_csv(path: Path) -> bool:
    header = _csv_header(path)
    return header is not None and all(c in header for c in REQUIRED_COLUMNS)


def find_fer_csvs(root: Path) -> list[Path]:
    found = [f for f in files(root) if f.suffix.lower() == ".csv" and is_fer_csv(f)]
    for d in subdirs(root):
        found += [f for f in files(d) if f.suffix.lower() == ".csv" and is_fer_csv(f)]
    return found


def find_split_dirs(root: Path) -> list[Path]:
    return find_dirs(root, lambda d: d != root and d.name.lower() in SPLIT_DIRS and bool(subdirs(d)), max_depth=2)


def find_zips(root: Path) -> list[Path]:
    found = [f for f in files(root) if f.suffix.lower() == ".zip"]
    for d in subdirs(root):
        found += [f for f in files(d) if f.suffix.lower() == ".zip"]
    return found


def read_fer2013(root: Path, params: DataParams) -> Iterator[ReaderOutput]:
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(SOURCE, root)
    layout = params.fer2013.layout
    if layout not in ("auto", "csv", "images"):
        raise ValueError(f"fer2013.layout must be auto, csv or images, got {layout!r}")
    csvs = find_fer_csvs(root) if layout in ("auto", "csv") else []
    if layout == "csv" or (layout == "auto" and csvs):
        if not csvs:
            raise MissingDatasetError(
                SOURCE, root, "fer2013.layout is csv but no *.csv with the header emotion,pixels,Usage was found"
            )
        return _read_csvs(root, csvs)
    split_dirs = find_split_dirs(root)
    zips = find_zips(root)
    if split_dirs:
        if zips:
            log.warning(
                "fer2013: %s holds extracted split folders and zip(s) %s: reading only the folders",
                root,
                [rel(z, root) for z in zips],
            )
        return _read_folders(root, split_dirs)
    if zips:
        return _read_zips(root, zips)
    why = "no train/ or test/ image folders and no .zip found"
    if layout == "auto":
        why = "no FER-format CSV (header emotion,pixels,Usage), " + why
    raise MissingDatasetError(SOURCE, root, why)


# ---------------------------------------------------------------- CSV layout


def parse_pixels(text: str) -> np.ndarray | str:
    """The 48x48 uint8 image of a CSV pixel field, or why it is not one."""
    values = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy warns (does not raise) when text mode stops at a bad token
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")  # the fast path: ~7x a split() + array()
        except (ValueError, DeprecationWarning):
            values = None
    if values is None or values.size != PIXELS:
        tokens = text.split()
        if len(tokens) != PIXELS:
            return f"{len(tokens)} pixel values, expected {PIXELS} ({SIDE}x{SIDE})"
        try:
            values = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError:
            bad = next((t for t in tokens if not t.lstrip("+-").isdigit()), "?")
            return f"pixel value {bad[:20]!r} is not an integer"
    if values.min() < 0 or values.max() > 255:
        return f"pixel values outside 0..255 (min {values.min()}, max {values.max()})"
    return values.astype(np.uint8).reshape(SIDE, SIDE)


def _read_csvs(root: Path, csvs: list[Path]) -> Iterator[ReaderOutput]:
    for path in csvs:
        prefix = "csv" if len(csvs) == 1 else path.stem
        yield from _read_csv(root, path, prefix)


def _read_csv(root: Path, path: Path, prefix: str) -> Iterator[ReaderOutput]:
    csv_raw = rel(path, root)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        header = [c.strip().lower() for c in next(csv.reader([fh.readline()]), [])]
        col = {name: header.index(name) for name in REQUIRED_COLUMNS}
        for n, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # blank line: no candidate row
            raw_path = f"{csv_raw}#row={n}"
            subject = f"{prefix}-row-{n}"
            try:
                row = line.split(",") if '"' not in line else next(csv.reader([line]))
            except csv.Error as exc:
                yield quarantine(
                    SOURCE, raw_path, QuarantineReason.MALFORMED_METADATA, f"CSV error: {exc}", subject=subject
                )
                continue
            if len(row) != len(header):
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.MALFORMED_METADATA,
                    f"{len(row)} fields, expected {len(header)} ({','.join(header)})",
                    subject=subject,
                )
                continue
            emotion_text = row[col["emotion"]].strip()
            try:
                label = str(int(emotion_text))
            except ValueError:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.UNKNOWN_LABEL,
                    f"emotion field {emotion_text[:40]!r} is not an integer code",
                    subject=subject,
                )
                continue
            usage = row[col["usage"]].strip()
            split = USAGE_SPLIT.get(usage.lower())
            if split is None:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.MALFORMED_METADATA,
                    f"Usage {usage[:40]!r} is not Training, PublicTest or PrivateTest",
                    subject=subject,
                    source_label=label,
                )
                continue
            image = parse_pixels(row[col["pixels"]])
            if isinstance(image, str):
                yield quarantine(
                    SOURCE, raw_path, QuarantineReason.WRONG_PIXEL_COUNT, image, subject=subject, source_label=label
                )
                continue
            yield RawRecord(
                source=SOURCE,
                subject=subject,
                source_label=label,
                image=image,
                raw_path=raw_path,
                content_hash=sha256_hex(image),
                split_hint=split,
                precropped=True,
                crop_size=CROP_SIZE,
            )


# ---------------------------------------------------------------- image layout


def split_of(split_dir_name: str, file_name: str) -> str:
    split = SPLIT_DIRS[split_dir_name.lower()]
    if split == "test":
        stem = file_name.lower()
        if stem.startswith("publictest"):
            return "val"
        return "test"
    return split


def _read_folders(root: Path, split_dirs: list[Path]) -> Iterator[ReaderOutput]:
    skipped = SkipCounter(SOURCE)
    for split_dir in split_dirs:
        outside = f"image directly in {split_dir.name}/, not in {split_dir.name}/<emotion>/"
        for item in emotion_folder_files(SOURCE, root, split_dir, skipped, outside):
            if isinstance(item, Quarantined):
                yield item
                continue
            subject = PurePosixPath(item.path.name).stem
            if not item.is_image:
                yield not_an_image(SOURCE, item.path, item.raw_path, subject=subject, source_label=item.label)
                continue
            yield image_file_or_quarantine(
                SOURCE,
                item.path,
                item.raw_path,
                subject=subject,
                source_label=item.label,
                split_hint=split_of(split_dir.name, item.path.name),
                precropped=True,
                crop_size=CROP_SIZE,
            )
    skipped.report()


_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError, ValueError)


def _read_zips(root: Path, zips: list[Path]) -> Iterator[ReaderOutput]:
    skipped = SkipCounter(SOURCE)
    for zpath in zips:
        yield from _read_zip(root, zpath, skipped)
    skipped.report()


def _read_zip(root: Path, zpath: Path, skipped: SkipCounter) -> Iterator[ReaderOutput]:
    zraw = rel(zpath, root)
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        yield quarantine(SOURCE, zraw, QuarantineReason.CORRUPT_ARCHIVE, f"zip does not open: {exc}")
        return
    in_layout = 0
    with zf:
        infos = sorted((i for i in zf.infolist() if not i.is_dir()), key=lambda i: i.filename)
        for info in infos:
            name = info.filename
            raw_path = f"{zraw}!{name}"
            unsafe = unsafe_member_reason(name)
            if unsafe is not None:
                yield quarantine(SOURCE, raw_path, QuarantineReason.UNSAFE_ZIP_PATH, f"{unsafe}; not read")
                continue
            kind = classify_name(name)
            if kind == "skip" and is_os_litter(name):
                skipped.add(raw_path)
                continue
            parts = name.split("/")
            in_split = len(parts) >= 3 and parts[-3].lower() in SPLIT_DIRS
            inside_tree = any(p.lower() in SPLIT_DIRS for p in parts[:-1])
            if not in_split:
                if kind == "image" or (kind == "other" and inside_tree):
                    reason = QuarantineReason.MALFORMED_METADATA if kind == "image" else QuarantineReason.NOT_AN_IMAGE
                    yield quarantine(
                        SOURCE,
                        raw_path,
                        reason,
                        "member outside the layout (expected train/<emotion>/ or test/<emotion>/)",
                    )
                else:
                    skipped.add(raw_path)
                continue
            if kind == "skip":
                skipped.add(raw_path)
                continue
            in_layout += 1
            label = parts[-2].lower()
            base = parts[-1]
            dot = base.rfind(".")
            subject = base[:dot] if dot > 0 else base
            if info.file_size > MAX_IMAGE_BYTES:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.CORRUPT_IMAGE,
                    f"member declares {info.file_size} bytes: over the {MAX_IMAGE_BYTES >> 20} MiB limit, not read",
                    subject=subject,
                    source_label=label,
                )
                continue
            try:
                data = zf.read(info)
            except _MEMBER_ERRORS as exc:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.CORRUPT_IMAGE,
                    f"zip member does not inflate: {exc}",
                    subject=subject,
                    source_label=label,
                )
                continue
            if kind == "other":
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.NOT_AN_IMAGE,
                    f"non-image member among images ({PurePosixPath(name).suffix or 'no extension'}, "
                    f"{len(data)} bytes)",
                    subject=subject,
                    source_label=label,
                    content_hash=sha256_hex(data),
                )
                continue
            yield image_or_quarantine(
                SOURCE,
                data,
                raw_path,
                subject=subject,
                source_label=label,
                split_hint=split_of(parts[-3], parts[-1]),
                precropped=True,
                crop_size=CROP_SIZE,
            )
    if in_layout == 0:
        log.warning("fer2013: %s holds no member in the train|test/<emotion>/ layout", zraw)
