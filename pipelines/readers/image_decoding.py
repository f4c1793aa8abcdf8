"""Safe image decoding and zip-member safety, shared by the readers.

``decode_image(data)`` turns the bytes of one image file into a uint8 array (HxW gray or HxWx3 RGB, as
decoded) or, when it cannot, a ``DecodeFailure`` carrying a quarantine reason code and a detail:

* ``zero_byte_file``: no bytes at all;
* ``not_an_image``: the bytes start with no known image signature (a text file, an HTML error page, a video
  saved under an image name, ...);
* ``corrupt_image``: a known image format that does not decode, or that is truncated. Truncation is checked
  structurally before decoding, so a half-written file is never half-decoded silently: a JPEG must have an
  end-of-image marker after its last start-of-scan, a PNG must end with its IEND chunk, a TIFF's strips
  must lie inside the file.

JPEG and PNG go through OpenCV (the fast path: FER2013 is 28,709 small JPEGs); TIFF, BMP, GIF, WebP and the
PNM family go through Pillow. Colour images come back RGB; 16-bit images are scaled to 8 bits (high byte);
palette images whose palette is gray (JAFFE's mode-'P' TIFFs) are mapped through the palette to gray,
other palette images to RGB; an alpha channel is dropped.

* ``image_too_large``: the header declares more pixels than the limit (params ``data.audit.max_image_pixels``),
  decided from the header alone, before any decoding: a small file can declare a 20000x20000 image (a
  decompression bomb) and decoding it whole would take gigabytes. ``declared_size(data)`` reads that header.

The limit comes from the ``max_pixels`` argument or, when that is None, from ``pixel_limit`` (a context variable
that ``pipelines.readers.read_source`` sets from params while a reader runs, so readers need not thread it
through every call).

``unsafe_member_reason(name)`` says why a zip member name must never be used as a path (absolute, a drive
letter, a ``..`` component, a NUL byte), or returns None when it is safe. The readers never extract: members
are read into memory with ``zipfile``.
"""

from __future__ import annotations

import contextvars
import io
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.records import QuarantineReason

# file extensions the readers treat as images (lower case, with the dot)
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pnm"}
)
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mov", ".mkv", ".wmv", ".m4v", ".mpg", ".mpeg", ".webm", ".flv"})


@dataclass(frozen=True)
class DecodeFailure:
    """Why some bytes did not become an image: a ``QuarantineReason`` code and a human-readable detail."""

    reason: str
    detail: str


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes' signature announces, or None when there is none."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"II*\x00") or head.startswith(b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"GIF87a") or head.startswith(b"GIF89a"):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return "pnm"
    return None


pixel_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar("emoflow_max_image_pixels", default=None)

# start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the image size
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _pillow_size(data: bytes) -> tuple[int, int] | DecodeFailure | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header, decodes nothing
                return image.size
    except Image.DecompressionBombError as exc:  # Pillow's own header check, far above any sane limit
        return DecodeFailure(QuarantineReason.IMAGE_TOO_LARGE, f"header refused by Pillow, not decoded: {exc}")
    except Exception:  # noqa: BLE001 - untrusted bytes; decoding reports what is wrong with them
        return None


def declared_size(data: bytes, fmt: str | None = None) -> tuple[int, int] | DecodeFailure | None:
    """(width, height) as the image's header declares it, read without decoding; None when unreadable."""
    fmt = fmt or sniff_format(data)
    if fmt == "png":
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "jpeg":
        return _jpeg_size(data)
    if fmt == "gif":
        return (int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")) if len(data) >= 10 else None
    if fmt == "bmp" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 header: 16-bit sides
            return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return abs(width), abs(height)  # negative height: a top-down bitmap
    if fmt is None:
        return None
    return _pillow_size(data)


def _too_large(data: bytes, fmt: str, limit: int) -> DecodeFailure | None:
    size = declared_size(data, fmt)
    if isinstance(size, DecodeFailure):
        return size
    if size is None:
        return None
    width, height = size
    if width * height > limit:
        return DecodeFailure(
            QuarantineReason.IMAGE_TOO_LARGE,
            f"{fmt} header declares {width}x{height} = {width * height} pixels, over the limit of {limit} "
            "(data.audit.max_image_pixels); not decoded",
        )
    return None


def _describe_head(data: bytes) -> str:
    head = data[:12]
    printable = head.decode("ascii", errors="replace")
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"starts with text {printable!r}"
    return f"starts with bytes {head.hex()}"


def _jpeg_truncated(data: bytes) -> str | None:
    sos = data.rfind(b"\xff\xda")
    if sos < 0:
        return "no start-of-scan marker (truncated header)"
    if data.rfind(b"\xff\xd9") < sos:
        return "no end-of-image marker after the last scan (truncated)"
    return None


def _png_truncated(data: bytes) -> str | None:
    # the last chunk is IEND: 4-byte length 0, "IEND", 4-byte CRC; tolerate a little trailing junk
    pos = data.rfind(b"IEND")
    if pos < 0 or pos < len(data) - 64:
        return "no IEND chunk at the end (truncated)"
    return None


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    # float or wider integers: clip into range (rare: 32-bit TIFFs)
    return np.clip(array, 0, 255).astype(np.uint8)


def _decode_cv2(data: bytes, fmt: str) -> np.ndarray | DecodeFailure:
    try:
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"{fmt} data does not decode: {exc}")
    if array is None or array.size == 0:
        return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"{fmt} data does not decode")
    array = _to_uint8(array)
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 1:
            array = array[:, :, 0]
        elif channels == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
        else:
            return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"{fmt} with {channels} channels")
    return np.ascontiguousarray(array)


def _tiff_truncated(image, size: int) -> str | None:
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None
    offsets = tags.get(273) or tags.get(324)  # StripOffsets / TileOffsets
    counts = tags.get(279) or tags.get(325)  # StripByteCounts / TileByteCounts
    if offsets is None or counts is None:
        return None
    if isinstance(offsets, int):
        offsets = (offsets,)
    if isinstance(counts, int):
        counts = (counts,)
    end = max((int(o) + int(c) for o, c in zip(offsets, counts)), default=0)
    if end > size:
        return f"image data runs to byte {end} but the file has {size} bytes (truncated)"
    return None


def _decode_pil(data: bytes, fmt: str) -> np.ndarray | DecodeFailure:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the very damage we report
        return _decode_pil_quiet(data, fmt, Image, UnidentifiedImageError)


def _decode_pil_quiet(data: bytes, fmt: str, Image, UnidentifiedImageError) -> np.ndarray | DecodeFailure:
    try:
        image = Image.open(io.BytesIO(data))
        if fmt == "tiff":
            why = _tiff_truncated(image, len(data))
            if why:
                return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"tiff {why}")
        image.load()
    except UnidentifiedImageError:
        return DecodeFailure(
            QuarantineReason.CORRUPT_IMAGE, f"{fmt} signature but Pillow cannot read it ({len(data)} bytes)"
        )
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: Pillow raises OSError ("image file is truncated"),
        # ValueError, SyntaxError, DecompressionBombError, ... for damaged or hostile files; none may stop the run
        return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"{fmt} data does not decode: {type(exc).__name__}: {exc}")
    mode = image.mode
    try:
        if mode == "P":
            palette = image.getpalette() or []
            rgb = palette[: 3 * 256]
            gray = all(rgb[i] == rgb[i + 1] == rgb[i + 2] for i in range(0, len(rgb) - 2, 3))
            image = image.convert("L" if gray else "RGB")
        elif mode in ("1", "LA", "La"):
            image = image.convert("L")
        elif mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "PA"):
            image = image.convert("RGB")
        array = np.array(image)
    except Exception as exc:  # noqa: BLE001 - see above
        return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"{fmt} ({mode}) does not convert: {exc}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or array.size == 0:
        return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"{fmt} decoded to shape {array.shape}")
    return np.ascontiguousarray(_to_uint8(array))


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray | DecodeFailure:
    """The image in ``data`` as a uint8 array (HxW gray or HxWx3 RGB), or why it is not one.

    ``max_pixels``: refuse (``image_too_large``) an image whose header declares more pixels; None: the
    ``pixel_limit`` context variable, and no limit when that is unset too."""
    if len(data) == 0:
        return DecodeFailure(QuarantineReason.ZERO_BYTE_FILE, "0 bytes")
    fmt = sniff_format(data)
    if fmt is None:
        return DecodeFailure(
            QuarantineReason.NOT_AN_IMAGE, f"no image signature ({len(data)} bytes, {_describe_head(data)})"
        )
    limit = max_pixels if max_pixels is not None else pixel_limit.get()
    if limit is not None and (refused := _too_large(data, fmt, limit)) is not None:
        return refused
    if fmt == "jpeg":
        why = _jpeg_truncated(data)
        if why:
            return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"jpeg {why}, {len(data)} bytes")
        return _decode_cv2(data, fmt)
    if fmt == "png":
        why = _png_truncated(data)
        if why:
            return DecodeFailure(QuarantineReason.CORRUPT_IMAGE, f"png {why}, {len(data)} bytes")
        return _decode_cv2(data, fmt)
    return _decode_pil(data, fmt)


_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_member_reason(name: str) -> str | None:
    """Why a zip member name escapes the archive (absolute path, drive letter, '..', NUL), or None if safe."""
    if "\x00" in name:
        return "member name contains a NUL byte"
    normal = name.replace("\\", "/")
    if normal.startswith("/"):
        return "absolute member path"
    if _DRIVE.match(normal):
        return "member path with a drive letter"
    if any(part == ".." for part in normal.split("/")):
        return "member path contains '..'"
    return None
