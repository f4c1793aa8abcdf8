"""MMI Facial Expression Database: the download's session folders, or a CK+-style restructured copy.

**Session layout** (the mmifacedb.eu download, ``mmi-facial-expression-database_download_<date>/Sessions/``):
``Sessions/<session id>/`` holds one recording, either a video (``S001-001.avi``; any common video extension)
or frame images (``*.jpg``/``*.png``), with XML metadata: ``session.xml`` (session metadata: the ``track``
with its view, the annotation files), ``<recording>.xml`` (e.g. ``S001-001.xml``), and ``*-oao_aucs.xml``
(action-unit annotation, ignored). The emotion is a metatag ``<Metatag Name="Emotion" Value="3"/>``; the
reader looks for it in ``<recording stem>.xml`` first, then ``session.xml``, then any other XML of the
session (not ``*oao_aucs*``), and also accepts an ``<Emotion>`` element (text or ``Value``) or an ``Emotion``
attribute. The ``Sessions`` folder is the source folder itself or is found up to two levels below it.
Value 1..6 = anger, disgust, fear, happiness, sadness, surprise (the label table; other integers are reported
as they are and quarantined by the label stage).

Per session (sorted by name): the middle ``mmi.middle_frames`` frames of the recording (frame indices
``n//2 - N//2 ...``; for N=3 the centre frame and its two neighbours, as the NFGAN paper and its preprocessing
take them), clamped to the recording; video frames are read frame-exactly (sequential decoding) and converted
BGR->RGB; raw_path ``Sessions/12/S001-001.avi#frame=41`` (frame counted from 0), or the frame image's path.
Subject = the recording name's ``S<digits>`` prefix (``S001``), else the ``id`` of a ``<subject>`` element in
the session's XML; sequence = the session folder name (``<session>/<video stem>`` when a session holds several
videos); frame = the video frame index, or the position in the sorted frame-image list.

Bad input, one quarantine row per session unless said otherwise: no Emotion in any XML -> ``missing_label_file``
(raw_path = the session folder); an XML that does not parse and no Emotion elsewhere -> ``malformed_metadata``;
conflicting Emotion values -> ``malformed_metadata``; an Emotion value that is neither an integer nor a word
-> ``unknown_label``; no recording -> ``malformed_metadata``; no subject id -> ``malformed_metadata``; a video
that does not open or holds no frame -> ``unreadable_video``; a selected frame the video does not deliver ->
``unreadable_video`` for that frame; a selected frame image that is bad -> its decoder reason.

**CK+-style layout** (as restructured by e.g. the LMP code, mbilasco/lmpForReview):
``<subject>/<sequence>/<frame images>`` with a CSV (any ``*.csv`` beside the subject folders, or one level
down) of rows ``expression;subject;sequence`` (semicolon-separated, an optional header row naming the
columns). Expression codes are reported as integers (``"3"``) or lower-cased names (``"happiness"``). Subject
and sequence folder names are matched exactly, then case-insensitively, then numerically (``1`` = ``001``).
The middle ``mmi.middle_frames`` frames of each listed sequence (frames sorted by the number in their names;
frame = that number, else the position). Subject and sequence = the folder names.
A row with the wrong number of fields, a duplicate row, or a row whose folder does not exist ->
``malformed_metadata`` (raw_path ``labels.csv#row=N``); an expression that is neither integer nor word ->
``unknown_label``; a sequence folder the CSV does not list -> one ``missing_label_file`` row; a non-image
file among a sequence's frames -> ``not_an_image``.

When both layouts are present, only the session layout is read (warning). Not pre-cropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from pipelines.params import DataParams
from pipelines.readers import MissingDatasetError
from pipelines.readers.common import (
    SkipCounter,
    classify_name,
    files,
    find_dirs,
    frame_sort_key,
    image_file_or_quarantine,
    is_video_name,
    log,
    not_an_image,
    quarantine,
    read_video_frames,
    rel,
    subdirs,
    trailing_number,
    video_frame_count,
    video_frame_record_or_quarantine,
)
from pipelines.records import QuarantineReason, ReaderOutput

SOURCE = "mmi"
SESSIONS_DIR = "sessions"
_SUBJECT_PREFIX = re.compile(r"^(S\d+)", re.IGNORECASE)
_WORD = re.compile(r"^[A-Za-z][A-Za-z ]*$")


def middle_indices(n: int, count: int) -> list[int]:
    """The ``count`` middle indices of a sequence of ``n`` frames (all of them when n <= count)."""
    if n <= 0:
        return []
    count = min(count, n)
    start = min(max(0, n // 2 - count // 2), n - count)
    return list(range(start, start + count))


def normalise_label(value: str) -> tuple[str | None, str]:
    """("3" | "happiness", "") for a parseable label, (None, why) otherwise."""
    text = value.strip()
    try:
        return str(int(text)), ""
    except ValueError:
        pass
    if _WORD.match(text):
        return text.lower(), ""
    return None, f"emotion value {text[:40]!r} is neither an integer code nor a name"


# ---------------------------------------------------------------- session layout: XML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _attr(element: ET.Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def emotions_in_xml(tree: ET.Element) -> list[str]:
    """Every Emotion value an MMI metadata XML carries (Metatag Name=Emotion, <Emotion>, Emotion=...)."""
    values: list[str] = []
    for el in tree.iter():
        tag = _local(el.tag)
        if tag == "metatag" and (_attr(el, "name") or "").strip().lower() == "emotion":
            value = _attr(el, "value")
            values.append(value if value is not None else (el.text or ""))
        elif tag == "emotion":
            value = _attr(el, "value")
            values.append(value if value is not None else (el.text or ""))
        else:
            value = _attr(el, "emotion")
            if value is not None:
                values.append(value)
    return values


def subject_in_xml(tree: ET.Element) -> str | None:
    for el in tree.iter():
        if _local(el.tag) == "subject":
            for key in ("id", "name", "subjectid"):
                value = _attr(el, key)
                if value and value.strip():
                    return value.strip()
        value = _attr(el, "subjectid")
        if value and value.strip():
            return value.strip()
    return None


def _xml_order(xmls: list[Path], stems: list[str]) -> list[Path]:
    stems_lower = {s.lower() for s in stems}
    first = [x for x in xmls if x.stem.lower() in stems_lower]
    session = [x for x in xmls if x.name.lower() == "session.xml" and x not in first]
    rest = [x for x in xmls if x not in first and x not in session]
    return first + session + rest


# ---------------------------------------------------------------- entry point


def _find_sessions(root: Path) -> list[Path]:
    if root.name.lower() == SESSIONS_DIR and subdirs(root):
        return [root]
    return find_dirs(root, lambda d: d != root and d.name.lower() == SESSIONS_DIR and bool(subdirs(d)), max_depth=2)


def _csv_rows_look_mmi(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return len(line.strip().split(";")) == 3
    except OSError:
        return False
    return False


def _find_ckstyle_csvs(root: Path) -> list[Path]:
    found = [f for f in files(root) if f.suffix.lower() == ".csv" and _csv_rows_look_mmi(f)]
    for d in subdirs(root):
        found += [f for f in files(d) if f.suffix.lower() == ".csv" and _csv_rows_look_mmi(f)]
    return found


def read_mmi(root: Path, params: DataParams) -> Iterator[ReaderOutput]:
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(SOURCE, root)
    sessions = _find_sessions(root)
    csvs = _find_ckstyle_csvs(root)
    if sessions:
        if csvs:
            log.warning(
                "mmi: %s holds Sessions/ and a CK+-style CSV %s: reading only Sessions/",
                root,
                [rel(c, root) for c in csvs],
            )
        return _read_sessions(root, sessions, params.mmi.middle_frames)
    if csvs:
        return _read_ckstyle(root, csvs, params.mmi.middle_frames)
    raise MissingDatasetError(
        SOURCE, root, "no Sessions/<session>/ folders and no CSV of 'expression;subject;sequence' rows found"
    )


# ---------------------------------------------------------------- session layout


def _read_sessions(root: Path, bases: list[Path], middle: int) -> Iterator[ReaderOutput]:
    for base in bases:
        for session_dir in subdirs(base):
            yield from _read_session(root, session_dir, middle)


def _read_session(root: Path, session_dir: Path, middle: int) -> Iterator[ReaderOutput]:
    session = session_dir.name
    session_raw = rel(session_dir, root)
    entries = files(session_dir)
    videos = [f for f in entries if is_video_name(f.name)]
    images = sorted((f for f in entries if classify_name(f.name) == "image"), key=frame_sort_key)
    xmls = [f for f in entries if f.suffix.lower() == ".xml" and "oao_aucs" not in f.name.lower()]
    stems = [v.stem for v in videos] + ([images[0].stem] if images else [])
    trees: list[tuple[Path, ET.Element]] = []
    broken: list[tuple[Path, str]] = []
    for x in _xml_order(xmls, stems):
        try:
            trees.append((x, ET.parse(x).getroot()))
        except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
            broken.append((x, str(exc)))

    if not videos and not images:
        yield quarantine(
            SOURCE,
            session_raw,
            QuarantineReason.MALFORMED_METADATA,
            "session folder holds no video and no frame image",
            sequence=session,
        )
        return

    # subject: recording name prefix, else a <subject> element
    subject = None
    for name in stems:
        m = _SUBJECT_PREFIX.match(name)
        if m:
            subject = m.group(1).upper()
            break
    if subject is None:
        subject = next((s for s in (subject_in_xml(t) for _, t in trees) if s), None)

    # emotion: the first XML (in priority order) that carries one
    label_values: list[str] = []
    label_file: Path | None = None
    for x, tree in trees:
        values = emotions_in_xml(tree)
        if values:
            label_values, label_file = values, x
            break
    if not label_values:
        if broken:
            x, why = broken[0]
            yield quarantine(
                SOURCE,
                rel(x, root),
                QuarantineReason.MALFORMED_METADATA,
                f"session metadata XML does not parse: {why}",
                subject=subject,
                sequence=session,
            )
        else:
            yield quarantine(
                SOURCE,
                session_raw,
                QuarantineReason.MISSING_LABEL_FILE,
                f"no Emotion in the session's metadata ({[x.name for x in xmls] or 'no XML'})",
                subject=subject,
                sequence=session,
            )
        return
    assert label_file is not None
    distinct = sorted({v.strip() for v in label_values})
    if len(distinct) > 1:
        yield quarantine(
            SOURCE,
            rel(label_file, root),
            QuarantineReason.MALFORMED_METADATA,
            f"conflicting Emotion values {distinct}",
            subject=subject,
            sequence=session,
        )
        return
    label, why = normalise_label(distinct[0])
    if label is None:
        yield quarantine(
            SOURCE, rel(label_file, root), QuarantineReason.UNKNOWN_LABEL, why, subject=subject, sequence=session
        )
        return
    if subject is None:
        yield quarantine(
            SOURCE,
            session_raw,
            QuarantineReason.MALFORMED_METADATA,
            "no subject id (recording name without an S<digits> prefix, no <subject> element)",
            sequence=session,
            source_label=label,
        )
        return

    if videos:
        for video in videos:
            sequence = session if len(videos) == 1 else f"{session}/{video.stem}"
            video_raw = rel(video, root)
            count, why = video_frame_count(video)
            if count is None:
                yield quarantine(
                    SOURCE,
                    video_raw,
                    QuarantineReason.UNREADABLE_VIDEO,
                    why or "unreadable",
                    subject=subject,
                    sequence=sequence,
                    source_label=label,
                )
                continue
            for result in read_video_frames(video, middle_indices(count, middle)):
                yield video_frame_record_or_quarantine(
                    SOURCE, result, video_raw, subject=subject, source_label=label, sequence=sequence
                )
        return
    for index in middle_indices(len(images), middle):
        path = images[index]
        yield image_file_or_quarantine(
            SOURCE, path, rel(path, root), subject=subject, source_label=label, sequence=session, frame=index
        )


# ---------------------------------------------------------------- CK+-style layout


def _match_dir(parent: Path, name: str) -> Path | None:
    dirs = subdirs(parent)
    for d in dirs:
        if d.name == name:
            return d
    for d in dirs:
        if d.name.lower() == name.lower():
            return d
    digits = re.sub(r"\D", "", name)
    if digits:
        for d in dirs:
            other = re.sub(r"\D", "", d.name)
            same_letters = re.sub(r"\d", "", d.name).lower() == re.sub(r"\d", "", name).lower()
            if other and int(other) == int(digits) and same_letters:
                return d
    return None


def _is_header(fields: list[str]) -> bool:
    joined = " ".join(fields).lower()
    return any(word in joined for word in ("subject", "sequence", "expression", "emotion"))


def _read_ckstyle(root: Path, csvs: list[Path], middle: int) -> Iterator[ReaderOutput]:
    skipped = SkipCounter(SOURCE)
    for csv_path in csvs:
        base = csv_path.parent
        csv_raw = rel(csv_path, root)
        labelled: dict[Path, tuple[str, str]] = {}  # sequence folder -> (label, row raw_path)
        missing: list = []
        try:
            lines = csv_path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        except OSError as exc:
            log.warning("mmi: %s unreadable: %s", csv_path, exc)
            continue
        rows = [line for line in lines if line.strip()]
        if rows and _is_header(rows[0].split(";")):
            rows = rows[1:]
        for n, line in enumerate(rows, start=1):
            raw_path = f"{csv_raw}#row={n}"
            fields = [f.strip() for f in line.split(";")]
            if len(fields) != 3 or not fields[1] or not fields[2]:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.MALFORMED_METADATA,
                    f"{line.strip()[:80]!r}: expected 'expression;subject;sequence'",
                )
                continue
            expression, subject, sequence = fields
            label, why = normalise_label(expression)
            if label is None:
                yield quarantine(
                    SOURCE, raw_path, QuarantineReason.UNKNOWN_LABEL, why, subject=subject, sequence=sequence
                )
                continue
            subject_dir = _match_dir(base, subject)
            seq_dir = _match_dir(subject_dir, sequence) if subject_dir else None
            if seq_dir is None:
                missing.append(
                    quarantine(
                        SOURCE,
                        raw_path,
                        QuarantineReason.MALFORMED_METADATA,
                        f"no folder {subject}/{sequence} for this row",
                        subject=subject,
                        sequence=sequence,
                        source_label=label,
                    )
                )
                continue
            if seq_dir in labelled:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.MALFORMED_METADATA,
                    f"duplicate row for {subject}/{sequence} (first: {labelled[seq_dir][1]})",
                    subject=subject,
                    sequence=sequence,
                    source_label=label,
                )
                continue
            labelled[seq_dir] = (label, raw_path)
        for subject_dir in subdirs(base):
            seq_dirs = [
                d
                for d in subdirs(subject_dir)
                if d in labelled or any(classify_name(f.name) == "image" for f in files(d))
            ]
            for seq_dir in seq_dirs:
                yield from _read_ck_sequence(root, seq_dir, subject_dir.name, labelled.get(seq_dir), middle, skipped)
        yield from missing
    skipped.report()


def _read_ck_sequence(
    root: Path, seq_dir: Path, subject: str, label_row, middle: int, skipped: SkipCounter
) -> Iterator[ReaderOutput]:
    sequence = seq_dir.name
    frames: list[Path] = []
    for f in files(seq_dir):
        kind = classify_name(f.name)
        if kind == "image":
            frames.append(f)
        elif kind == "skip":
            skipped.add(rel(f, root))
        else:
            yield not_an_image(SOURCE, f, rel(f, root), subject=subject, sequence=sequence)
    if label_row is None:
        yield quarantine(
            SOURCE,
            rel(seq_dir, root),
            QuarantineReason.MISSING_LABEL_FILE,
            f"sequence not listed in the CSV ({len(frames)} frames): unlabelled",
            subject=subject,
            sequence=sequence,
        )
        return
    label = label_row[0]
    if not frames:
        yield quarantine(
            SOURCE,
            rel(seq_dir, root),
            QuarantineReason.MALFORMED_METADATA,
            "listed sequence folder holds no frame image",
            subject=subject,
            sequence=sequence,
            source_label=label,
        )
        return
    frames.sort(key=frame_sort_key)
    for index in middle_indices(len(frames), middle):
        path = frames[index]
        number = trailing_number(path.name)
        yield image_file_or_quarantine(
            SOURCE,
            path,
            rel(path, root),
            subject=subject,
            source_label=label,
            sequence=sequence,
            frame=number if number is not None else index,
        )
