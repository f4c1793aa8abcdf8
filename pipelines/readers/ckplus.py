"""CK+ (Extended Cohn-Kanade): the original distribution layout, or the widely shared CK+48 crops.

**Original layout** (``ReadMeCohnKanadeDatabase_website.txt``): ``cohn-kanade-images/S005/001/S005_001_00000001.png``
and ``Emotion/S005/001/S005_001_00000011_emotion.txt`` (one float code 0..7 such as ``3.0000000e+00``; the file
exists only for the 327 emotion-labelled sequences). The two folders are found at the source folder or up to
two levels below it (e.g. ``ckplus/CK+/cohn-kanade-images``); ``Emotion`` is the sibling of
``cohn-kanade-images`` (names matched case-insensitively; ``Landmarks/`` and ``FACS/`` are ignored).

For each sequence (sorted subject, then sequence; frames ordered by the frame number in their names):

* labelled: the last ``ckplus.last_frames`` frames with the sequence's code (``source_label`` = the code's
  integer as a string, ``"3"``), preceded, when ``ckplus.first_frame_neutral``, by the first frame with
  ``"0"`` (neutral). A sequence shorter than ``last_frames + 1`` gives what it has without using any frame
  twice: the first frame is neutral and the rest take the emotion; a one-frame sequence gives that frame with
  the emotion (the Emotion file names the peak frame) and no neutral frame.
* unlabelled (no Emotion file): ONE ``missing_label_file`` quarantine row, raw_path = the sequence folder.
* an Emotion file that does not hold exactly one number -> ONE ``malformed_metadata`` row for the sequence;
  a number that is not an integer (``2.5``) -> ONE ``unknown_label`` row. Integer codes outside 0..7 are
  reported as they are (the label stage quarantines them).
* an Emotion file with no image sequence, or a sequence folder with no frame -> ONE ``malformed_metadata`` row.
* a selected frame that is zero bytes / corrupt / truncated / not an image -> quarantined with that reason;
  a non-image file among a sequence's frames -> ``not_an_image`` (it is never taken as a frame).

Subject ``S005``, sequence ``001``, frame = the number in the file name. Not pre-cropped.

**CK+48 layout**: ``CK+48/<emotion>/S010_004_00000017.png`` (48x48 crops), the ``CK+48`` folder being the
source folder itself, or found up to two levels below it; ``source_label`` = the folder name lower-cased
(``anger``, ``contempt``, ``disgust``, ``fear``, ``happy``, ``sadness``, ``surprise``; the label stage maps
them and quarantines contempt by default). Subject/sequence/frame from the file name; a name that is not
``S<subject>_<sequence>_<frame>`` -> ``malformed_metadata``. Pre-cropped.

When a source folder holds both layouts (they hold the same sequences), only the original is read (warning).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.params import DataParams
from pipelines.readers import MissingDatasetError
from pipelines.readers.common import (
    SkipCounter,
    classify_name,
    emotion_folder_files,
    files,
    find_dirs,
    frame_sort_key,
    image_file_or_quarantine,
    log,
    not_an_image,
    quarantine,
    rel,
    subdirs,
    trailing_number,
)
from pipelines.records import Quarantined, QuarantineReason, ReaderOutput

SOURCE = "ckplus"
IMAGES_DIR = "cohn-kanade-images"
EMOTION_DIR = "emotion"
CK48_CROP_SIZE = (48, 48)  # CK+48's published crop size (height, width): other sizes go through detection
CK48_DIR = "ck+48"
CK48_EMOTIONS = frozenset({"anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise", "neutral"})
FRAME_NAME = re.compile(r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)\.[A-Za-z]+$", re.IGNORECASE)


def parse_emotion_text(text: str) -> tuple[str | None, str | None, str]:
    """(source_label, reason, detail) for an Emotion file's text: ("3", None, "") or (None, reason, why)."""
    tokens = text.split()
    if len(tokens) != 1:
        what = "is empty" if not tokens else f"holds {len(tokens)} values {tokens[:4]}"
        return None, QuarantineReason.MALFORMED_METADATA, f"emotion file {what}; expected one code"
    try:
        value = float(tokens[0])
    except ValueError:
        return None, QuarantineReason.MALFORMED_METADATA, f"emotion file holds {tokens[0][:40]!r}, not a number"
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        return None, QuarantineReason.UNKNOWN_LABEL, f"emotion code {tokens[0]!r} is not an integer"
    return str(int(value)), None, ""


def _child(folder: Path, name_lower: str) -> Path | None:
    for d in subdirs(folder):
        if d.name.lower() == name_lower:
            return d
    return None


def _find_original(root: Path) -> list[Path]:
    """Folders (root or below, depth <= 2) that contain cohn-kanade-images/."""
    return find_dirs(root, lambda d: _child(d, IMAGES_DIR) is not None, max_depth=2)


def _is_ck48(folder: Path) -> bool:
    return any(d.name.lower() in CK48_EMOTIONS for d in subdirs(folder))


def _find_ck48(root: Path) -> list[Path]:
    found = find_dirs(root, lambda d: d.name.lower() == CK48_DIR and _is_ck48(d), max_depth=2)
    if not found and _is_ck48(root):
        found = [root]
    return found


def read_ckplus(root: Path, params: DataParams) -> Iterator[ReaderOutput]:
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(SOURCE, root)
    original = _find_original(root)
    ck48 = _find_ck48(root)
    if original:
        if ck48:
            log.warning(
                "ckplus: %s holds both the original layout and CK+48 crops of the same sequences; reading only "
                "the original (%s)",
                root,
                [rel(p, root) for p in original],
            )
        return _read_original(root, original, params)
    if ck48:
        return _read_ck48(root, ck48)
    raise MissingDatasetError(
        SOURCE, root, "neither cohn-kanade-images/ (+ Emotion/) nor CK+48/<emotion>/ found (searched 2 levels down)"
    )


# ---------------------------------------------------------------- original layout


def select_frames(n: int, last_frames: int, first_frame_neutral: bool) -> tuple[int | None, list[int]]:
    """(index of the neutral frame or None, indices of the emotion frames) for a sequence of n frames."""
    if n <= 0:
        return None, []
    neutral = 0 if first_frame_neutral and n >= 2 else None
    start = max(n - last_frames, 1 if neutral is not None else 0)
    return neutral, list(range(start, n))


def _read_original(root: Path, bases: list[Path], params: DataParams) -> Iterator[ReaderOutput]:
    skipped = SkipCounter(SOURCE)
    last_frames = params.ckplus.last_frames
    neutral_on = params.ckplus.first_frame_neutral
    for base in bases:
        images_dir = _child(base, IMAGES_DIR)
        emotion_dir = _child(base, EMOTION_DIR)
        assert images_dir is not None
        if emotion_dir is None:
            log.warning("ckplus: %s has no Emotion/ folder beside it: every sequence is unlabelled", images_dir)
        seen_sequences: set[tuple[str, str]] = set()
        for subject_dir in subdirs(images_dir):
            for f in files(subject_dir):
                yield from _stray(root, f, skipped, subject=subject_dir.name)
            for seq_dir in subdirs(subject_dir):
                subject, sequence = subject_dir.name, seq_dir.name
                seen_sequences.add((subject.lower(), sequence.lower()))
                emotion_seq = None
                if emotion_dir is not None:
                    emotion_subject = _child(emotion_dir, subject.lower())
                    emotion_seq = _child(emotion_subject, sequence.lower()) if emotion_subject else None
                yield from _read_sequence(
                    root, seq_dir, emotion_seq, subject, sequence, last_frames, neutral_on, skipped
                )
        # Emotion files whose sequence has no images
        if emotion_dir is not None:
            for subject_dir in subdirs(emotion_dir):
                for seq_dir in subdirs(subject_dir):
                    key = (subject_dir.name, seq_dir.name)
                    has_label = any(f.suffix.lower() == ".txt" for f in files(seq_dir))
                    if (key[0].lower(), key[1].lower()) in seen_sequences or not has_label:
                        continue
                    yield quarantine(
                        SOURCE,
                        rel(seq_dir, root),
                        QuarantineReason.MALFORMED_METADATA,
                        f"emotion file without an image sequence (no {IMAGES_DIR}/{key[0]}/{key[1]}/)",
                        subject=key[0],
                        sequence=key[1],
                    )
    skipped.report()


def _stray(root: Path, path: Path, skipped: SkipCounter, **fields) -> Iterator[ReaderOutput]:
    """A file where the layout expects folders: skipped (litter/docs), or quarantined."""
    raw_path = rel(path, root)
    kind = classify_name(path.name)
    if kind == "skip":
        skipped.add(raw_path)
    elif kind == "other":
        yield not_an_image(SOURCE, path, raw_path, **fields)
    else:
        yield quarantine(
            SOURCE,
            raw_path,
            QuarantineReason.MALFORMED_METADATA,
            "image outside the layout (expected cohn-kanade-images/<subject>/<sequence>/<frame>.png)",
            **fields,
        )


def _read_sequence(
    root: Path,
    seq_dir: Path,
    emotion_seq: Path | None,
    subject: str,
    sequence: str,
    last_frames: int,
    neutral_on: bool,
    skipped: SkipCounter,
) -> Iterator[ReaderOutput]:
    frames: list[Path] = []
    for f in files(seq_dir):
        kind = classify_name(f.name)
        if kind == "image":
            frames.append(f)
        elif kind == "skip":
            skipped.add(rel(f, root))
        else:
            yield not_an_image(SOURCE, f, rel(f, root), subject=subject, sequence=sequence)
    for d in subdirs(seq_dir):
        log.warning("ckplus: unexpected folder inside a sequence, ignored: %s", rel(d, root))
    frames.sort(key=frame_sort_key)
    seq_raw = rel(seq_dir, root)

    emotion_files = [f for f in files(emotion_seq) if f.suffix.lower() == ".txt"] if emotion_seq else []
    if not emotion_files:
        yield quarantine(
            SOURCE,
            seq_raw,
            QuarantineReason.MISSING_LABEL_FILE,
            f"sequence without an Emotion file ({len(frames)} frames): unlabelled in CK+",
            subject=subject,
            sequence=sequence,
        )
        return
    if len(emotion_files) > 1:
        yield quarantine(
            SOURCE,
            seq_raw,
            QuarantineReason.MALFORMED_METADATA,
            f"{len(emotion_files)} emotion files for one sequence: {[f.name for f in emotion_files]}",
            subject=subject,
            sequence=sequence,
        )
        return
    emotion_file = emotion_files[0]
    try:
        text = emotion_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        text, label, reason, detail = "", None, QuarantineReason.MALFORMED_METADATA, f"emotion file unreadable: {exc}"
    else:
        label, reason, detail = parse_emotion_text(text)
    if label is None:
        yield quarantine(
            SOURCE,
            rel(emotion_file, root),
            reason or QuarantineReason.MALFORMED_METADATA,
            detail,
            subject=subject,
            sequence=sequence,
        )
        return
    if not frames:
        yield quarantine(
            SOURCE,
            seq_raw,
            QuarantineReason.MALFORMED_METADATA,
            "labelled sequence folder holds no frame",
            subject=subject,
            sequence=sequence,
            source_label=label,
        )
        return
    neutral, emotion_indices = select_frames(len(frames), last_frames, neutral_on)
    chosen = ([(neutral, "0")] if neutral is not None else []) + [(i, label) for i in emotion_indices]
    for index, source_label in chosen:
        path = frames[index]
        yield image_file_or_quarantine(
            SOURCE,
            path,
            rel(path, root),
            subject=subject,
            source_label=source_label,
            sequence=sequence,
            frame=trailing_number(path.name),
        )


# ---------------------------------------------------------------- CK+48 layout


def _read_ck48(root: Path, bases: list[Path]) -> Iterator[ReaderOutput]:
    skipped = SkipCounter(SOURCE)
    outside = "image outside an emotion folder (expected CK+48/<emotion>/<file>.png)"
    for base in bases:
        for item in emotion_folder_files(SOURCE, root, base, skipped, outside):
            if isinstance(item, Quarantined):
                yield item
            elif not item.is_image:
                yield not_an_image(SOURCE, item.path, item.raw_path, source_label=item.label)
            elif (m := FRAME_NAME.match(item.path.name)) is None:
                yield quarantine(
                    SOURCE,
                    item.raw_path,
                    QuarantineReason.MALFORMED_METADATA,
                    f"file name {item.path.name!r} is not S<subject>_<sequence>_<frame>.png: no subject",
                    source_label=item.label,
                )
            else:
                yield image_file_or_quarantine(
                    SOURCE,
                    item.path,
                    item.raw_path,
                    subject=m["subject"].upper(),
                    source_label=item.label,
                    sequence=m["sequence"],
                    frame=int(m["frame"]),
                    precropped=True,
                    crop_size=CK48_CROP_SIZE,
                )
    skipped.report()
