"""Screening between reading and face detection: images that are not faces of the expected kind.

``screen_images(stream, audit)`` passes every item on, one out per one in, except:

* a near-constant image (gray standard deviation <= ``data.audit.blank_max_std``: all black, all gray, a
  blank frame) -> ``Quarantined(reason="blank_image", stage="screen")``; a detector would only find no face in it,
  and a pre-cropped source would pass it through as a face;
* a pre-cropped record (FER2013, CK+48) whose image is not the dataset's published crop size: not trusted as a
  crop, it goes on with ``precropped=False``, so the face stage detects a face in it like in a raw photo (and
  quarantines it as ``no_face`` when there is none).

Images whose header declares too many pixels never get here: the readers refuse them before decoding
(``image_too_large``, ``pipelines.readers.image_decoding``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from pipelines.records import Quarantined, QuarantineReason, RawRecord

STAGE = "screen"


def gray_spread(image: np.ndarray) -> float:
    """Standard deviation of the image's gray levels (BT.601 luma for RGB), 0..127.5."""
    if image.ndim == 3:
        from pipelines.faces.images import to_gray

        image = to_gray(image)
    return float(image.std())


def screen_images(stream: Iterable[RawRecord | Quarantined], audit) -> Iterator[RawRecord | Quarantined]:
    """See the module docstring. ``audit``: ``pipelines.params.AuditParams``."""
    for item in stream:
        if isinstance(item, Quarantined):
            yield item
            continue
        h, w = item.image.shape[:2]
        spread = gray_spread(item.image)
        if spread <= audit.blank_max_std:
            detail = (
                f"near-constant {w}x{h} image: gray standard deviation {spread:.2f} <= "
                f"data.audit.blank_max_std {audit.blank_max_std:g}"
            )
            yield Quarantined.of_record(item, QuarantineReason.BLANK_IMAGE, detail, STAGE)
        elif item.precropped and item.crop_size is not None and (h, w) != tuple(item.crop_size):
            yield dataclasses.replace(item, precropped=False)
        else:
            yield item
