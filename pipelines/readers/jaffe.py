"""JAFFE: ``<poser>.<EXPR><n>.<id>.tiff`` images, with the optional semantic-ratings file joined as extras.

Accepted layout: the images directly in the source folder or in a sub-folder up to two levels down (the
Zenodo download unpacks to ``jaffedbase/``; the shared copy keeps them in ``jaffe/jaffe/``). Every folder
holding at least one JAFFE-named image is read (sorted). File names are matched case-insensitively with any
image extension (``.tiff`` in the distribution); poser and expression are reported upper-case
(``source_label`` = ``"AN"`` ... ``"SU"``; the label stage maps it). Subject = poser.

Ratings: ``JAFFE_labels.txt`` (name matched case-insensitively) beside the images or in any folder above
them up to the source folder; lines ``[<row#>] HAP SAD SUR ANG DIS FEA <POSER>-<EXPR><n>`` (whitespace
separated; the row number is optional; a header line naming the six columns, with or without a leading
``#``, sets their order). Joined on poser+expression+n into ``extras`` ``rating_happiness``,
``rating_sadness``, ``rating_surprise``, ``rating_anger``, ``rating_disgust``, ``rating_fear``. An image
without a ratings row has empty extras. A line that does not parse is skipped with a logged warning
(ratings are optional; the image rows are unaffected); a duplicated key keeps its first line (warning).

Bad input: a JAFFE-named file that is zero bytes / corrupt / truncated / not an image -> quarantined with the
decoder's reason; an image file whose name is not JAFFE's pattern -> ``malformed_metadata`` (no poser or
expression to report); a non-image, non-documentation file among the images -> ``not_an_image``.
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
    files,
    find_dirs,
    image_file_or_quarantine,
    log,
    not_an_image,
    quarantine,
    rel,
)
from pipelines.records import QuarantineReason, ReaderOutput

SOURCE = "jaffe"
NAME = re.compile(r"^(?P<poser>[A-Za-z]{2})\.(?P<expr>[A-Za-z]{2})(?P<n>\d+)\.(?P<id>\d+)\.[A-Za-z]+$")
RATINGS_FILE = "jaffe_labels.txt"
# the ratings file's column abbreviations -> extras keys; default column order as in PROVENANCE
RATING_COLUMNS = {
    "HAP": "rating_happiness",
    "SAD": "rating_sadness",
    "SUR": "rating_surprise",
    "ANG": "rating_anger",
    "DIS": "rating_disgust",
    "FEA": "rating_fear",
}
DEFAULT_ORDER = ("HAP", "SAD", "SUR", "ANG", "DIS", "FEA")
_KEY = re.compile(r"^(?P<poser>[A-Za-z]{2})-(?P<expr>[A-Za-z]{2})(?P<n>\d+)$")


def parse_jaffe_name(name: str) -> tuple[str, str, int, int] | None:
    """(poser, EXPR, n, id) from ``KA.AN1.39.tiff``, or None when the name is not JAFFE's pattern."""
    m = NAME.match(name)
    if not m or classify_name(name) != "image":
        return None
    return m["poser"].upper(), m["expr"].upper(), int(m["n"]), int(m["id"])


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_ratings(path: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """The ratings file as {(poser, EXPR, n): extras}; unparseable lines are skipped with a warning."""
    ratings: dict[tuple[str, str, int], dict[str, float]] = {}
    order = DEFAULT_ORDER
    skipped: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning("jaffe: ratings file %s unreadable (%s): images keep empty extras", path, exc)
        return ratings
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        upper = [t.lstrip("#").upper() for t in tokens]
        named = [t for t in upper if t in RATING_COLUMNS]
        if len(named) == 6 and len(set(named)) == 6:
            order = tuple(named)  # header line naming the columns
            continue
        if tokens[0].startswith("#"):
            continue  # comment
        key = _KEY.match(tokens[-1])
        numbers = tokens[:-1]
        if key is None or not all(_is_number(t) for t in numbers) or len(numbers) not in (6, 7):
            skipped.append(f"line {number}: {line.strip()[:80]!r}")
            continue
        values = [float(t) for t in numbers[-6:]]
        k = (key["poser"].upper(), key["expr"].upper(), int(key["n"]))
        if k in ratings:
            skipped.append(f"line {number}: duplicate key {tokens[-1]}")
            continue
        ratings[k] = {RATING_COLUMNS[col]: v for col, v in zip(order, values)}
    if skipped:
        log.warning(
            "jaffe: %s: skipped %d malformed line(s) (those images keep empty extras): %s",
            path,
            len(skipped),
            "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""),
        )
    return ratings


def _find_ratings(folder: Path, root: Path) -> Path | None:
    current = folder
    while True:
        for f in files(current):
            if f.name.lower() == RATINGS_FILE:
                return f
        if current == root or root not in current.parents:
            return None
        current = current.parent


def _image_folders(root: Path) -> list[Path]:
    return find_dirs(root, lambda d: any(parse_jaffe_name(f.name) for f in files(d)), max_depth=2)


def read_jaffe(root: Path, params: DataParams) -> Iterator[ReaderOutput]:
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(SOURCE, root)
    folders = _image_folders(root)
    if not folders:
        raise MissingDatasetError(SOURCE, root, "no <poser>.<EXPR><n>.<id>.tiff image found (searched 2 levels down)")
    if len(folders) > 1:
        log.warning(
            "jaffe: JAFFE-named images in %d folders, reading all: %s", len(folders), [rel(f, root) for f in folders]
        )
    return _read(root, folders)


def _read(root: Path, folders: list[Path]) -> Iterator[ReaderOutput]:
    skipped = SkipCounter(SOURCE)
    ratings_cache: dict[Path, dict] = {}
    for folder in folders:
        ratings_path = _find_ratings(folder, root)
        if ratings_path is None:
            ratings = {}
        else:
            if ratings_path not in ratings_cache:
                ratings_cache[ratings_path] = parse_ratings(ratings_path)
            ratings = ratings_cache[ratings_path]
        for path in files(folder):
            raw_path = rel(path, root)
            kind = classify_name(path.name)
            if kind == "skip":
                skipped.add(raw_path)
                continue
            if kind == "other":
                yield not_an_image(SOURCE, path, raw_path)
                continue
            parsed = parse_jaffe_name(path.name)
            if parsed is None:
                yield quarantine(
                    SOURCE,
                    raw_path,
                    QuarantineReason.MALFORMED_METADATA,
                    f"image name {path.name!r} is not <poser>.<EXPR><n>.<id>.tiff: no poser or expression",
                )
                continue
            poser, expr, n, _ = parsed
            yield image_file_or_quarantine(
                SOURCE,
                path,
                raw_path,
                subject=poser,
                source_label=expr,
                extras=ratings.get((poser, expr, n), {}),
            )
    skipped.report()
