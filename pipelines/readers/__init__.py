"""One reader per dataset, each accepting the layouts people actually download.

A reader is a generator ``read_<source>(root: Path, params: DataParams) -> Iterator[RawRecord | Quarantined]``:
it streams one candidate row at a time (never the whole dataset in memory), in a deterministic order
(sorted paths), and turns every piece of bad input into a ``Quarantined`` record with its reason instead of
raising. Only a missing or unrecognisable dataset folder raises: ``MissingDatasetError`` naming the expected
layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.params import DataParams
from pipelines.records import ReaderStream

# Documented in the README's dataset table; also the text of MissingDatasetError.
LAYOUTS: dict[str, str] = {
    "jaffe": (
        "JAFFE: <root>/jaffe/<poser>.<EXPR><n>.<id>.tiff (e.g. data/raw/jaffe/KA.AN1.39.tiff; EXPR in AN DI FE HA NE SA SU),\n"
        "  the images directly in the folder or in a sub-folder up to two levels down (e.g. data/raw/jaffe/jaffedbase/),\n"
        "  optionally with the semantic-ratings file JAFFE_labels.txt beside the images or in a folder above them.\n"
        "  Obtain: https://zenodo.org/records/3451524 (research use only)."
    ),
    "ckplus": (
        "CK+: the original distribution <root>/ckplus/cohn-kanade-images/S005/001/S005_001_00000001.png with\n"
        "  <root>/ckplus/Emotion/S005/001/S005_001_00000011_emotion.txt (both folders at the top or up to two levels down,\n"
        "  e.g. data/raw/ckplus/CK+/cohn-kanade-images/...; Landmarks/ and FACS/ are ignored),\n"
        "  or the crops layout <root>/ckplus/CK+48/<emotion>/S010_004_00000017.png (CK+48/ up to two levels down, or the\n"
        "  emotion folders directly in data/raw/ckplus/).\n"
        "  Obtain: https://www.jeffcohn.net/Resources/ (CMU/Pitt research agreement)."
    ),
    "fer2013": (
        "FER2013: <root>/fer2013/fer2013.csv (any *.csv with the columns emotion,pixels,Usage, in the folder or one level\n"
        "  down, e.g. data/raw/fer2013/fer2013/fer2013.csv from fer2013.tar.gz), or the Kaggle image layout\n"
        "  <root>/fer2013/train/<emotion>/Training_<id>.jpg and test/<emotion>/{PublicTest,PrivateTest}_<id>.jpg,\n"
        "  as folders (up to two levels down) or as the downloaded .zip, read in place (e.g. data/raw/fer2013/archive.zip,\n"
        "  members train/... or <folder>/train/...). params data.fer2013.layout: auto (the CSV if there is one) | csv | images.\n"
        "  Obtain: https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data"
    ),
    "mmi": (
        "MMI: the download's <root>/mmi/Sessions/<session>/ (Sessions/ up to two levels down, e.g.\n"
        "  data/raw/mmi/mmi-facial-expression-database_download_2019-04-27_05_06_23/Sessions/12/), each holding the recording\n"
        "  (S001-001.avi, or frame images) and its metadata XML (S001-001.xml and/or session.xml) with\n"
        '  <Metatag Name="Emotion" Value="1..6"/>; or a CK+-style copy <root>/mmi/<subject>/<sequence>/<frame>.png\n'
        "  with a CSV of rows 'expression;subject;sequence' beside the subject folders (e.g. data/raw/mmi/mmi.csv).\n"
        "  Obtain: https://mmifacedb.eu/ (EULA)."
    ),
    "bueeg": (
        "BU-EEG: <root>/bueeg/<subject>/<video>.mp4|.avi (24 fps, e.g. data/raw/bueeg/F001/T1.mp4) with a metadata CSV of\n"
        "  expression segments in the folder or one level down (e.g. data/raw/bueeg/segments.csv), columns subject, video,\n"
        "  start frame, end frame, expression (0-based frames, end inclusive; header names matched case-insensitively,\n"
        "  variants such as participant/clip/onset/offset/emotion accepted).\n"
        "  Obtain: from Binghamton University's GAIC lab (http://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html), research agreement."
    ),
}


class MissingDatasetError(FileNotFoundError):
    """A dataset folder is missing or holds none of the layouts emoflow reads."""

    def __init__(self, source: str, folder: Path, why: str = "folder not found"):
        self.source = source
        self.folder = folder
        super().__init__(f"{source}: {why}: {folder}\nExpected layout(s):\n  {LAYOUTS.get(source, '(unknown source)')}")


Reader = Callable[[Path, DataParams], ReaderStream]


def get_reader(source: str) -> Reader:
    """The reader function for a source name (imported lazily so one broken reader cannot break the others)."""
    if source == "jaffe":
        from pipelines.readers.jaffe import read_jaffe as reader
    elif source == "ckplus":
        from pipelines.readers.ckplus import read_ckplus as reader
    elif source == "fer2013":
        from pipelines.readers.fer2013 import read_fer2013 as reader
    elif source == "mmi":
        from pipelines.readers.mmi import read_mmi as reader
    elif source == "bueeg":
        from pipelines.readers.bueeg import read_bueeg as reader
    else:
        raise KeyError(f"unknown source {source!r}; known: {sorted(LAYOUTS)}")
    return reader


def read_source(source: str, root: Path, params: DataParams) -> ReaderStream:
    """Stream one source's candidate rows from ``root`` (the source's own folder, e.g. data/raw/jaffe)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(source, root)
    return _under_pixel_limit(get_reader(source)(root, params), params.audit.max_image_pixels)


def _under_pixel_limit(stream: ReaderStream, max_pixels: int) -> ReaderStream:
    """The reader's stream, with ``image_decoding.pixel_limit`` set while (and only while) the reader runs."""
    from pipelines.readers.image_decoding import pixel_limit

    items = iter(stream)
    while True:
        token = pixel_limit.set(max_pixels)
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            pixel_limit.reset(token)
        yield item
