"""BU-EEG: per-subject face videos (24 fps) and a metadata CSV of expression segments.

Layout: ``<subject>/<video>.mp4|.avi`` (any common video extension) in the source folder, and one or more
metadata CSVs (``*.csv`` or ``*.tsv`` in the source folder or one level below; every file whose header names the
five columns is read, others are ignored) with one row per expression segment:
subject, video, start frame, end frame, expression. Header names are matched case-insensitively after
dropping spaces, underscores and other punctuation; accepted names per column:

* subject: ``subject``, ``subject id``, ``subj``, ``participant``, ``participant id``, ``person``
* video: ``video``, ``video file``, ``video name``, ``video id``, ``video path``, ``file``, ``filename``,
  ``clip``, ``clip name``, ``recording``
* start frame: ``start frame``, ``start``, ``begin``, ``begin frame``, ``onset``, ``onset frame``,
  ``first frame``, ``from frame``, ``frame start``
* end frame: ``end frame``, ``end``, ``stop``, ``stop frame``, ``offset``, ``offset frame``, ``last frame``,
  ``to frame``, ``frame end``
* expression: ``expression``, ``emotion``, ``label``, ``expression label``, ``emotion label``, ``class``

The delimiter is ``,``, ``;`` or tab (whichever the header line uses most). Frame numbers are 0-based video
frame indices and the end frame is inclusive. ``video`` may be a file name (``T1.mp4``), a stem (``T1``: the
reader tries the video extensions) or a path relative to the source folder (``F001/T1.mp4``); it is looked
up in the subject's folder first (names matched case-insensitively).

Rows: every ``bueeg.stride``-th frame of each segment, ``start, start+stride, ... <= end``, read frame-exactly
(sequential decoding, BGR->RGB), one pass per video. ``source_label`` = the expression lower-cased (the label
stage maps the six names); subject = the CSV's subject; sequence = ``<video stem>/<k>`` with k the segment's
index among that video's segments sorted by start frame; frame = the video frame index; raw_path
``F001/T1.mp4#frame=48``. Not pre-cropped.

Bad input, counted per requested frame so that the set of candidate rows depends only on the CSV and the
stride: a video that is missing, does not open, or ends before a requested frame -> ``unreadable_video`` for
each of those frames. A CSV row with the wrong number of fields, a non-integer or negative frame number, an
end before its start, or an empty subject/video/expression -> one ``malformed_metadata`` row
(``segments.csv#row=N``). A frame claimed by two overlapping segments is emitted for the first (by start
frame) and quarantined ``malformed_metadata`` for the other. Videos no segment refers to are not read.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.params import DataParams
from pipelines.readers import MissingDatasetError
from pipelines.readers.common import (
    files,
    is_video_name,
    log,
    quarantine,
    read_video_frames,
    rel,
    subdirs,
    video_frame_record_or_quarantine,
)
from pipelines.readers.image_decoding import VIDEO_EXTENSIONS
from pipelines.records import QuarantineReason, ReaderOutput

SOURCE = "bueeg"

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "subject": ("subject", "subjectid", "subj", "participant", "participantid", "person", "personid"),
    "video": (
        "video",
        "videofile",
        "videoname",
        "videoid",
        "videopath",
        "file",
        "filename",
        "clip",
        "clipname",
        "recording",
    ),
    "start": (
        "startframe",
        "start",
        "begin",
        "beginframe",
        "onset",
        "onsetframe",
        "firstframe",
        "fromframe",
        "framestart",
        "startframeno",
        "startframenumber",
    ),
    "end": (
        "endframe",
        "end",
        "stop",
        "stopframe",
        "offset",
        "offsetframe",
        "lastframe",
        "toframe",
        "frameend",
        "endframeno",
        "endframenumber",
    ),
    "expression": ("expression", "emotion", "label", "expressionlabel", "emotionlabel", "class"),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.strip().lower())


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d])


def map_columns(header: list[str]) -> dict[str, int] | None:
    """{column role: index} when the header names all five roles, else None."""
    normal = [_norm(h) for h in header]
    mapping: dict[str, int] = {}
    for role, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in normal:
                mapping[role] = normal.index(alias)
                break
        else:
            return None
    if len(set(mapping.values())) != len(mapping):
        return None
    return mapping


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return line.rstrip("\r\n")
    except OSError:
        pass
    return ""


def find_metadata_csvs(root: Path) -> list[Path]:
    candidates = [f for f in files(root) if f.suffix.lower() in (".csv", ".tsv")]
    for d in subdirs(root):
        candidates += [f for f in files(d) if f.suffix.lower() in (".csv", ".tsv")]
    found = []
    for f in candidates:
        line = _first_line(f)
        if line and map_columns(line.split(_delimiter(line))) is not None:
            found.append(f)
    return found


@dataclass
class Segment:
    row_raw: str
    subject: str
    video: Path  # resolved, or the expected path when missing
    start: int
    end: int
    label: str


def _match_child(parent: Path, name: str, want_dir: bool) -> Path | None:
    if not parent.is_dir():
        return None
    exact = parent / name
    if exact.is_dir() if want_dir else exact.is_file():
        return exact
    lower = name.lower()
    for p in sorted(parent.iterdir(), key=lambda q: q.name):
        if p.name.lower() == lower and (p.is_dir() if want_dir else p.is_file()):
            return p
    return None


def resolve_video(root: Path, subject: str, video: str) -> Path:
    """The video file a CSV row names, or (when absent) the path where it was expected."""
    video = video.replace("\\", "/").strip()
    subject_dir = _match_child(root, subject, want_dir=True)
    bases = [d for d in (subject_dir, root) if d is not None]
    names = [video]
    if Path(video).suffix.lower() not in VIDEO_EXTENSIONS:
        names += [video + ext for ext in sorted(VIDEO_EXTENSIONS)]
    for base in bases:
        for name in names:
            parent = base
            parts = [p for p in name.split("/") if p]
            for part in parts[:-1]:
                parent = _match_child(parent, part, want_dir=True) if parent else None
                if parent is None:
                    break
            if parent is None:
                continue
            found = _match_child(parent, parts[-1], want_dir=False)
            if found is not None:
                return found
    if subject_dir is not None:
        # a stem that matches exactly one video in the subject's folder
        stem = Path(video).stem.lower()
        matches = [f for f in files(subject_dir) if is_video_name(f.name) and f.stem.lower() == stem]
        if len(matches) == 1:
            return matches[0]
    return (subject_dir or root / subject) / video


def _parse_frame(text: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value


def read_bueeg(root: Path, params: DataParams) -> Iterator[ReaderOutput]:
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(SOURCE, root)
    csvs = find_metadata_csvs(root)
    if not csvs:
        raise MissingDatasetError(
            SOURCE,
            root,
            "no metadata CSV with the columns subject, video, start frame, end frame, expression "
            "(header names matched case-insensitively; see pipelines/readers/bueeg.py for accepted variants)",
        )
    return _read(root, csvs, params.bueeg.stride)


def _parse_csv(root: Path, path: Path) -> tuple[list[Segment], list[ReaderOutput]]:
    segments: list[Segment] = []
    bad: list[ReaderOutput] = []
    csv_raw = rel(path, root)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        lines = [line for line in fh.read().splitlines() if line.strip()]
    delimiter = _delimiter(lines[0])
    rows = list(csv.reader(lines, delimiter=delimiter))
    header, body = rows[0], rows[1:]
    cols = map_columns(header)
    assert cols is not None
    for n, row in enumerate(body, start=1):
        row_raw = f"{csv_raw}#row={n}"
        if len(row) != len(header):
            bad.append(
                quarantine(
                    SOURCE,
                    row_raw,
                    QuarantineReason.MALFORMED_METADATA,
                    f"{len(row)} fields, expected {len(header)} ({delimiter.join(header)})",
                )
            )
            continue
        subject = row[cols["subject"]].strip()
        video = row[cols["video"]].strip()
        expression = row[cols["expression"]].strip()
        start = _parse_frame(row[cols["start"]])
        end = _parse_frame(row[cols["end"]])
        problems = []
        if not subject or not video or not expression:
            problems.append("empty subject, video or expression")
        if start is None or end is None:
            problems.append(f"start/end frame {row[cols['start']]!r}/{row[cols['end']]!r} not integers")
        elif start < 0 or end < start:
            problems.append(f"segment {start}..{end} is empty or negative")
        if problems:
            bad.append(
                quarantine(
                    SOURCE,
                    row_raw,
                    QuarantineReason.MALFORMED_METADATA,
                    "; ".join(problems),
                    subject=subject or None,
                    source_label=expression.lower() or None,
                )
            )
            continue
        assert start is not None and end is not None
        segments.append(Segment(row_raw, subject, resolve_video(root, subject, video), start, end, expression.lower()))
    return segments, bad


def _read(root: Path, csvs: list[Path], stride: int) -> Iterator[ReaderOutput]:
    segments: list[Segment] = []
    for path in csvs:
        parsed, bad = _parse_csv(root, path)
        yield from bad
        segments += parsed
    by_video: dict[Path, list[Segment]] = {}
    for seg in segments:
        by_video.setdefault(seg.video, []).append(seg)
    for video in sorted(by_video, key=lambda p: rel(p, root)):
        segs = sorted(by_video[video], key=lambda s: (s.start, s.end, s.row_raw))
        video_raw = rel(video, root)
        if not video.is_file():
            log.warning("bueeg: video not found: %s (its segments' frames are quarantined)", video_raw)
        claims: dict[int, list[tuple[int, Segment]]] = {}
        for k, seg in enumerate(segs):
            for frame in range(seg.start, seg.end + 1, stride):
                claims.setdefault(frame, []).append((k, seg))
        for result in read_video_frames(video, sorted(claims)):
            frame = result[0]
            (k, seg), *others = claims[frame]
            yield video_frame_record_or_quarantine(
                SOURCE,
                result,
                video_raw,
                subject=seg.subject,
                source_label=seg.label,
                sequence=f"{video.stem}/{k}",
            )
            for k2, seg2 in others:
                yield quarantine(
                    SOURCE,
                    f"{video_raw}#frame={frame}",
                    QuarantineReason.MALFORMED_METADATA,
                    f"frame {frame} also belongs to segment {video.stem}/{k} ({seg.row_raw}); "
                    f"overlapping segment from {seg2.row_raw}",
                    subject=seg2.subject,
                    sequence=f"{video.stem}/{k2}",
                    frame=frame,
                    source_label=seg2.label,
                )
