"""Typed records that flow through the data half.

raw files -> ``RawRecord`` (a reader's output: one image plus what the dataset says about it)
          -> ``FaceRecord`` (face found, aligned, gray, resized)
          -> ``ShardRow`` (label harmonised, SVD-truncated, split assigned; one row of a shard)

Anything that cannot go on becomes a ``Quarantined`` record with a reason code and a human-readable
detail. Nothing is ever dropped silently: every candidate row a reader finds comes out either as a row or
as a quarantine record (rows in = rows out + rows quarantined).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


class QuarantineReason:
    """Reason codes for quarantine records (strings, so they survive Parquet and JSON unchanged)."""

    ZERO_BYTE_FILE = "zero_byte_file"
    CORRUPT_IMAGE = "corrupt_image"  # undecodable or truncated image data
    NOT_AN_IMAGE = "not_an_image"  # a non-image file among images
    WRONG_PIXEL_COUNT = "wrong_pixel_count"  # CSV row whose pixel list is not H*W values in 0..255
    UNKNOWN_LABEL = "unknown_label"  # a label code or name the dataset's mapping table does not know
    LABEL_OUTSIDE_SCHEME = "label_outside_scheme"  # known to the dataset (CK+ contempt) but not one of the 7
    MISSING_LABEL_FILE = "missing_label_file"  # CK+/MMI sequence without its emotion file
    UNSAFE_ZIP_PATH = "unsafe_zip_path"  # zip entry whose path escapes the archive
    UNREADABLE_VIDEO = "unreadable_video"  # a video that cannot be opened or lacks the frames asked for
    MALFORMED_METADATA = "malformed_metadata"  # a metadata row/file that cannot be parsed
    CORRUPT_ARCHIVE = "corrupt_archive"  # a zip that cannot be opened at all (one row for the whole archive)
    NO_FACE = "no_face"  # the detector found no face
    IMAGE_TOO_LARGE = "image_too_large"  # header declares more pixels than data.audit.max_image_pixels (not decoded)
    BLANK_IMAGE = "blank_image"  # near-constant image: gray standard deviation <= data.audit.blank_max_std
    DUPLICATE = "duplicate"  # a copy of a face kept elsewhere in the same split
    DUPLICATE_ACROSS_SPLITS = "duplicate_across_splits"  # a copy of a face kept in another split (leakage)
    DUPLICATE_LABEL_CONFLICT = "duplicate_label_conflict"  # copies of one face carry different labels
    DENSITY_OUTLIER = "density_outlier"  # among the least likely faces under a trained flow (opt-in policy)

    ALL = (
        ZERO_BYTE_FILE,
        CORRUPT_IMAGE,
        NOT_AN_IMAGE,
        WRONG_PIXEL_COUNT,
        UNKNOWN_LABEL,
        LABEL_OUTSIDE_SCHEME,
        MISSING_LABEL_FILE,
        UNSAFE_ZIP_PATH,
        UNREADABLE_VIDEO,
        MALFORMED_METADATA,
        CORRUPT_ARCHIVE,
        NO_FACE,
        IMAGE_TOO_LARGE,
        BLANK_IMAGE,
        DUPLICATE,
        DUPLICATE_ACROSS_SPLITS,
        DUPLICATE_LABEL_CONFLICT,
        DENSITY_OUTLIER,
    )


@dataclass(frozen=True)
class Quarantined:
    """A candidate row that did not make it into the shards, and why."""

    source: str
    raw_path: str  # same convention as RawRecord.raw_path
    reason: str  # one of QuarantineReason.ALL
    detail: str  # human-readable: what was wrong, with the offending value where there is one
    stage: str  # "read" | "label" | "screen" | "face" | "audit"
    subject: str | None = None
    sequence: str | None = None
    frame: int | None = None
    source_label: str | None = None
    content_hash: str | None = None

    @classmethod
    def of_record(cls, record: RawRecord, reason: str, detail: str, stage: str) -> Quarantined:
        """The quarantine row of a record that was read but cannot go on, keeping what the dataset said of it."""
        return cls(
            source=record.source,
            raw_path=record.raw_path,
            reason=reason,
            detail=detail,
            stage=stage,
            subject=record.subject,
            sequence=record.sequence,
            frame=record.frame,
            source_label=record.source_label,
            content_hash=record.content_hash,
        )


@dataclass
class RawRecord:
    """One image as a dataset reader found it.

    ``raw_path`` is relative to the source's folder, with ``!`` separating an archive from its member
    (``fer2013-train.zip!train/angry/Training_10118481.jpg``), ``#row=N`` for a CSV row
    (``fer2013.csv#row=17``, N counted from 1 after the header) and ``#frame=N`` for a video frame
    (``S001/S001_video1.avi#frame=42``, N counted from 0).
    """

    source: str
    subject: str  # dataset-scoped subject id as the dataset writes it (poser, S005, ...)
    source_label: str | None  # the label exactly as the dataset writes it ("AN", "3", "angry"); None = unlabelled
    image: np.ndarray  # uint8, HxW (gray) or HxWx3 (RGB)
    raw_path: str
    content_hash: str  # sha256 hex of the raw bytes (file/zip member) or of the pixel bytes (CSV row, video frame)
    sequence: str | None = None
    frame: int | None = None
    split_hint: str | None = None  # the dataset's own split ("train"/"val"/"test"), FER2013's Usage
    precropped: bool = False  # the image is already a face crop (FER2013, CK+48)
    # the dataset's published crop size (height, width) for a pre-cropped record: an image of another size is
    # not trusted to be a crop and goes through face detection (pipelines.audit.screening)
    crop_size: tuple[int, int] | None = None
    extras: dict[str, float] = field(default_factory=dict)  # e.g. JAFFE semantic ratings


@dataclass
class FaceRecord:
    """A RawRecord whose face has been found and aligned."""

    raw: RawRecord
    face: np.ndarray  # uint8 gray, (height, width) from params
    detector: str  # "mtcnn" | "haar" | "none" (pre-cropped pass-through)
    det_score: float | None  # detector confidence; None for pass-through and Haar (which gives none)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the raw image's pixel coordinates


ReaderOutput = RawRecord | Quarantined
ReaderStream = Iterator[ReaderOutput]
