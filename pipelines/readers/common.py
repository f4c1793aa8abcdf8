"""Helpers the dataset readers share: file classification, deterministic listing, record/quarantine
construction, and frame-exact video reading.

File classification (``classify_name``), applied inside a layout's image folders:

* ``"image"``: an image extension (``IMAGE_EXTENSIONS``) -> decoded; bad bytes are quarantined;
* ``"skip"``: operating-system litter (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble ``._*``
  files, anything under ``__MACOSX/``) and documentation/metadata sidecars (``.txt .md .pdf .html .csv .xml
  .json .yaml``, ``README*``, ``LICENSE*``): not candidate rows, never quarantined (counted in a log line);
* ``"other"``: anything else (``notes.doc``, ``clip.mp3``, a file with no extension) -> a candidate that is
  quarantined ``not_an_image``.

Files over ``MAX_IMAGE_BYTES`` (256 MiB) are never read into memory: quarantined ``corrupt_image``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipelines.readers.image_decoding import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DecodeFailure,
    decode_image,
    pixel_limit,
)
from pipelines.records import Quarantined, QuarantineReason, RawRecord

log = logging.getLogger("pipelines.readers")

STAGE = "read"

OS_LITTER = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"})
DOC_EXTENSIONS = frozenset(
    {".txt", ".md", ".rst", ".pdf", ".html", ".htm", ".csv", ".tsv", ".xml", ".json", ".yaml", ".yml", ".bib", ".log"}
)
DOC_STEMS = ("readme", "license", "licence", "copying", "provenance", "sha256sums", "md5sums")


def _basename(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _suffix(base: str) -> str:
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def is_os_litter(name: str) -> bool:
    """Operating-system metadata files that travel with archives and copies (never candidate rows)."""
    normal = name.replace("\\", "/")
    base = normal.rstrip("/").rsplit("/", 1)[-1]
    return (
        base.lower() in OS_LITTER
        or base.startswith("._")
        or normal.startswith("__MACOSX/")
        or "/__MACOSX/" in normal
        or base == "__MACOSX"
    )


def classify_name(name: str) -> str:
    """``"image"``, ``"skip"`` (OS litter, documentation) or ``"other"`` (a non-image file among images)."""
    if is_os_litter(name):
        return "skip"
    base = _basename(name)
    suffix = _suffix(base)
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in DOC_EXTENSIONS or base.lower().startswith(DOC_STEMS):
        return "skip"
    return "other"


def is_video_name(name: str) -> bool:
    return _suffix(_basename(name)) in VIDEO_EXTENSIONS


def sha256_hex(data: bytes | memoryview | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data
    return hashlib.sha256(data).hexdigest()


def rel(path: Path, root: Path) -> str:
    """``path`` relative to the source folder, POSIX-style (the raw_path convention)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # different drive on Windows
        return Path(path).as_posix()


def sorted_entries(folder: Path) -> list[Path]:
    """The folder's entries in sorted name order (deterministic; empty when unreadable)."""
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return []


def subdirs(folder: Path) -> list[Path]:
    return [p for p in sorted_entries(folder) if p.is_dir() and not is_os_litter(p.name)]


def files(folder: Path) -> list[Path]:
    return [p for p in sorted_entries(folder) if p.is_file()]


def find_dirs(root: Path, predicate, max_depth: int = 2) -> list[Path]:
    """Folders at depth 0..max_depth under root (root itself is depth 0) satisfying ``predicate``, sorted."""
    found: list[Path] = []
    frontier = [root]
    for depth in range(max_depth + 1):
        next_frontier: list[Path] = []
        for folder in frontier:
            if predicate(folder):
                found.append(folder)
            if depth < max_depth:
                next_frontier.extend(subdirs(folder))
        frontier = next_frontier
    return found


_TRAILING_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def trailing_number(name: str) -> int | None:
    """The last run of digits in a file's stem (``S005_001_00000011.png`` -> 11), or None."""
    m = _TRAILING_NUMBER.search(PurePosixPath(name).stem)
    return int(m.group(1)) if m else None


def frame_sort_key(path: Path) -> tuple:
    n = trailing_number(path.name)
    return (0, n, path.name) if n is not None else (1, 0, path.name)


def quarantine(source: str, raw_path: str, reason: str, detail: str, **fields) -> Quarantined:
    return Quarantined(source=source, raw_path=raw_path, reason=reason, detail=detail, stage=STAGE, **fields)


def image_or_quarantine(
    source: str,
    data: bytes,
    raw_path: str,
    *,
    subject: str,
    source_label: str | None,
    sequence: str | None = None,
    frame: int | None = None,
    split_hint: str | None = None,
    precropped: bool = False,
    crop_size: tuple[int, int] | None = None,
    extras: dict[str, float] | None = None,
) -> RawRecord | Quarantined:
    """Decode one image file's bytes into a RawRecord, or quarantine it with the decoder's reason."""
    digest = sha256_hex(data)
    image = decode_image(data)
    if isinstance(image, DecodeFailure):
        return quarantine(
            source,
            raw_path,
            image.reason,
            image.detail,
            subject=subject,
            sequence=sequence,
            frame=frame,
            source_label=source_label,
            content_hash=digest,
        )
    return RawRecord(
        source=source,
        subject=subject,
        source_label=source_label,
        image=image,
        raw_path=raw_path,
        content_hash=digest,
        sequence=sequence,
        frame=frame,
        split_hint=split_hint,
        precropped=precropped,
        crop_size=crop_size,
        extras=dict(extras or {}),
    )


MAX_IMAGE_BYTES = 256 * 2**20  # no face image is this big; reading one would break the flat-memory promise


def read_bytes(path: Path) -> bytes | DecodeFailure:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            return DecodeFailure(
                QuarantineReason.CORRUPT_IMAGE,
                f"{size} bytes: over the {MAX_IMAGE_BYTES >> 20} MiB limit for one image, not read",
            )
        return path.read_bytes()
    except OSError as exc:
        return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"cannot read file: {exc}")


def image_file_or_quarantine(source: str, path: Path, raw_path: str, **fields) -> RawRecord | Quarantined:
    """Read and decode one image file (see ``image_or_quarantine``)."""
    data = read_bytes(path)
    if isinstance(data, DecodeFailure):
        keep = {k: fields.get(k) for k in ("subject", "sequence", "frame", "source_label")}
        return quarantine(source, raw_path, data.reason, data.detail, **keep)
    return image_or_quarantine(source, data, raw_path, **fields)


def not_an_image(source: str, path: Path, raw_path: str, **fields) -> Quarantined:
    """A non-image file found among images."""
    data = read_bytes(path)
    digest = sha256_hex(data) if isinstance(data, bytes) else None
    size = len(data) if isinstance(data, bytes) else "?"
    return quarantine(
        source,
        raw_path,
        QuarantineReason.NOT_AN_IMAGE,
        f"non-image file among images ({path.suffix or 'no extension'}, {size} bytes)",
        content_hash=digest,
        **fields,
    )


class SkipCounter:
    """Counts skipped OS litter / documentation files and logs one line per reader run."""

    def __init__(self, source: str):
        self.source = source
        self.names: list[str] = []

    def add(self, raw_path: str) -> None:
        self.names.append(raw_path)

    def report(self) -> None:
        if self.names:
            shown = ", ".join(self.names[:5]) + (" ..." if len(self.names) > 5 else "")
            log.info(
                "%s: skipped %d non-candidate file(s) (OS litter, documentation): %s",
                self.source,
                len(self.names),
                shown,
            )


@dataclass(frozen=True)
class EmotionFolderFile:
    """A candidate file found in ``<base>/<emotion>/``: ``label`` is the folder name (lower case); ``is_image``
    is False for a non-image file (the reader quarantines it ``not_an_image`` with its own fields)."""

    path: Path
    raw_path: str
    label: str
    is_image: bool


def emotion_folder_files(
    source: str, root: Path, base: Path, skipped: SkipCounter, outside_detail: str
) -> Iterator[Quarantined | EmotionFolderFile]:
    """Walk the ``<base>/<emotion>/<file>`` layout (CK+48's crops, FER2013's Kaggle image folders): files
    directly in ``base`` are quarantined (``not_an_image``, or ``malformed_metadata`` with ``outside_detail``
    for an image outside an emotion folder), folders nested inside an emotion folder are logged and ignored,
    litter and documentation are counted in ``skipped``, and every other file of an emotion folder is yielded
    for the reader to turn into a record."""
    for f in files(base):
        raw_path = rel(f, root)
        kind = classify_name(f.name)
        if kind == "skip":
            skipped.add(raw_path)
        elif kind == "other":
            yield not_an_image(source, f, raw_path)
        else:
            yield quarantine(source, raw_path, QuarantineReason.MALFORMED_METADATA, outside_detail)
    for emotion_dir in subdirs(base):
        label = emotion_dir.name.lower()
        for d in subdirs(emotion_dir):
            log.warning("%s: unexpected folder inside %s, ignored: %s", source, rel(emotion_dir, root), rel(d, root))
        for path in files(emotion_dir):
            raw_path = rel(path, root)
            kind = classify_name(path.name)
            if kind == "skip":
                skipped.add(raw_path)
            else:
                yield EmotionFolderFile(path, raw_path, label, kind != "other")


# ---------------------------------------------------------------- video


def _open_capture(path: Path):
    import cv2

    if not Path(path).is_file():
        return None, "video file not found"
    if Path(path).stat().st_size == 0:
        return None, "video file is 0 bytes"
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        return None, "OpenCV cannot open the video"
    return cap, None


def video_frame_count(path: Path) -> tuple[int | None, str | None]:
    """(number of frames, None), or (None, why) when the video cannot be opened or holds no frame.

    Uses the container's frame count; when the container does not say, counts by grabbing every frame.
    """
    import cv2

    cap, why = _open_capture(path)
    if cap is None:
        return None, why
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 0:
            count = 0
            while cap.grab():
                count += 1
        if count <= 0:
            return None, "the video holds no frame"
        return count, None
    finally:
        cap.release()


def read_video_frames(
    path: Path, wanted: Iterable[int]
) -> Iterator[tuple[int, np.ndarray | None, str | DecodeFailure | None]]:
    """For each wanted frame index (ascending, 0-based): (index, RGB uint8 frame, None) or (index, None, why);
    ``why`` is a ``DecodeFailure`` (``image_too_large``) when the frames are larger than the decoding limit.

    Reads sequentially from the start (grab to skip, retrieve to decode), which is frame-exact for every codec,
    and stops after the last wanted frame. Frames the video does not have come back with a reason.
    """
    import cv2

    wanted = sorted(set(int(i) for i in wanted))
    if not wanted:
        return
    cap, why = _open_capture(path)
    if cap is None:
        for index in wanted:
            yield index, None, why
        return
    limit = pixel_limit.get()
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if limit is not None and width * height > limit:  # from the container's header: no frame decoded
        cap.release()
        refused = DecodeFailure(
            QuarantineReason.IMAGE_TOO_LARGE,
            f"video frames are {width}x{height} = {width * height} pixels, over the limit of {limit} "
            "(data.audit.max_image_pixels); not decoded",
        )
        for index in wanted:
            yield index, None, refused
        return
    try:
        position = 0  # index of the next frame grab() would return
        ended_at: int | None = None
        for index in wanted:
            if index < 0:
                yield index, None, f"frame {index} is negative"
                continue
            if ended_at is not None:
                yield index, None, f"frame {index} is beyond the video's end (it has {ended_at} frames)"
                continue
            while position < index:
                if not cap.grab():
                    ended_at = position
                    break
                position += 1
            if ended_at is not None:
                yield index, None, f"frame {index} is beyond the video's end (it has {ended_at} frames)"
                continue
            ok, frame = cap.read()
            if not ok or frame is None:
                ended_at = position
                yield index, None, f"frame {index} is beyond the video's end (it has {ended_at} frames)"
                continue
            position += 1
            if frame.ndim == 2:
                rgb = frame
            elif frame.shape[2] == 4:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
            else:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if rgb.dtype != np.uint8:
                rgb = (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb.astype(np.uint8)
            yield index, np.ascontiguousarray(rgb), None
    finally:
        cap.release()


def video_frame_record_or_quarantine(
    source: str,
    frame_result: tuple[int, np.ndarray | None, str | DecodeFailure | None],
    video_raw_path: str,
    *,
    subject: str,
    source_label: str | None,
    sequence: str | None,
) -> RawRecord | Quarantined:
    index, rgb, why = frame_result
    raw_path = f"{video_raw_path}#frame={index}"
    if rgb is None:
        refused = isinstance(why, DecodeFailure)
        return quarantine(
            source,
            raw_path,
            why.reason if refused else QuarantineReason.UNREADABLE_VIDEO,
            why.detail if refused else why or "frame not readable",
            subject=subject,
            sequence=sequence,
            frame=index,
            source_label=source_label,
        )
    return RawRecord(
        source=source,
        subject=subject,
        source_label=source_label,
        image=rgb,
        raw_path=raw_path,
        content_hash=sha256_hex(rgb),
        sequence=sequence,
        frame=index,
        split_hint=None,
        precropped=False,
    )
