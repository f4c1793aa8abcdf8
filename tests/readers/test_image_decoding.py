import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.readers.common import classify_name, is_os_litter
from pipelines.readers.image_decoding import DecodeFailure, decode_image, sniff_format, unsafe_member_reason
from pipelines.records import QuarantineReason

from fixtures.layouts import BAD_KINDS, BAD_REASON, UNSAFE_MEMBER_NAMES, bad_bytes, jpeg_bytes, png_bytes


def _pil_bytes(array, fmt, **kw):
    bio = io.BytesIO()
    Image.fromarray(array).save(bio, fmt, **kw)
    return bio.getvalue()


@pytest.fixture(scope="module")
def real_jpeg(datasets_dir):
    with zipfile.ZipFile(datasets_dir / "fer2013" / "fer2013-train.zip") as zf:
        first = min(n for n in zf.namelist() if n.startswith("train/angry/") and not n.endswith("/"))
        return zf.read(first)


def test_real_fer_jpeg_decodes_gray(real_jpeg):
    image = decode_image(real_jpeg)
    assert isinstance(image, np.ndarray) and image.shape == (48, 48) and image.dtype == np.uint8


def test_jaffe_palette_tiff_goes_through_its_palette_to_gray(datasets_dir):
    path = datasets_dir / "jaffe" / "jaffe" / "KA.AN1.39.tiff"
    pil = Image.open(path)
    assert pil.mode == "P"
    image = decode_image(path.read_bytes())
    assert image.shape == (256, 256) and image.dtype == np.uint8
    assert np.array_equal(image, np.array(pil.convert("L")))


def test_colour_and_odd_formats():
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    for data in (
        png_bytes(rgb),
        _pil_bytes(rgb, "BMP"),
        _pil_bytes(rgb, "TIFF"),
        _pil_bytes(rgb, "GIF"),
        _pil_bytes(rgb, "WEBP", lossless=True),
    ):
        out = decode_image(data)
        assert out.shape == (10, 12, 3) and tuple(out[0, 0]) == (200, 0, 0), sniff_format(data)
    jpg = decode_image(jpeg_bytes(rgb, quality=100))
    assert jpg.shape == (10, 12, 3) and jpg[0, 0, 0] > 180 and jpg[0, 0, 2] < 30  # RGB order, not BGR
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 2] = 255  # BGRA: red
    rgba[..., 3] = 10
    ok, buf = cv2.imencode(".png", rgba)
    assert tuple(decode_image(buf.tobytes())[0, 0]) == (255, 0, 0)
    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)
    ok, buf = cv2.imencode(".png", sixteen)
    out = decode_image(buf.tobytes())
    assert out.dtype == np.uint8 and np.array_equal(out, (sixteen >> 8).astype(np.uint8))
    colour_palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    bio = io.BytesIO()
    colour_palette.save(bio, "PNG")
    assert decode_image(bio.getvalue()).shape == (10, 12, 3)  # a colour palette keeps its colour


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("fmt", ["jpeg", "png", "tiff"])
def test_bad_bytes_are_reported_not_decoded(kind, fmt):
    face = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    good = {"jpeg": jpeg_bytes(face), "png": png_bytes(face), "tiff": _pil_bytes(face, "TIFF")}[fmt]
    out = decode_image(bad_bytes(kind, good))
    assert isinstance(out, DecodeFailure)
    assert out.reason == BAD_REASON[kind], out.detail


def test_truncation_detected_even_one_byte_short():
    face = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
    for good in (jpeg_bytes(face), png_bytes(face)):
        for cut in (1, 2, 12, 100):
            out = decode_image(good[:-cut])
            assert isinstance(out, DecodeFailure) and out.reason == "corrupt_image"
    tiff = _pil_bytes(face, "TIFF")  # Pillow writes the strips before the IFD? either way it is caught
    out = decode_image(tiff[: len(tiff) - 300])
    assert isinstance(out, DecodeFailure) and out.reason == "corrupt_image"


def test_not_an_image_texts():
    for data in (b"hello", b"GIF8", b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 40, b"RIFF\x00\x00\x00\x00AVI LIST"):
        out = decode_image(data)
        assert isinstance(out, DecodeFailure) and out.reason == "not_an_image"
    assert decode_image(b"").reason == "zero_byte_file"


@pytest.mark.parametrize("name", UNSAFE_MEMBER_NAMES + ("a\\..\\..\\x.jpg", "\\\\server\\share\\x.jpg"))
def test_unsafe_member_names(name):
    assert unsafe_member_reason(name) is not None


@pytest.mark.parametrize("name", ["train/angry/Training_1.jpg", "fer2013/train/x.jpg", "a..b/c.jpg", "..x/y.jpg"])
def test_safe_member_names(name):
    assert unsafe_member_reason(name) is None


def test_file_classification():
    assert classify_name("Training_1.JPG") == "image"
    assert classify_name("x.tiff") == "image"
    for name in (
        "README",
        "readme.md",
        "JAFFE_labels.txt",
        ".DS_Store",
        "._Training_1.jpg",
        "__MACOSX/train/angry/x.jpg",
        "Thumbs.db",
        "session.xml",
        "LICENSE",
    ):
        assert classify_name(name) == "skip", name
    for name in ("notes.doc", "clip.mp3", "data.bin", "noext"):
        assert classify_name(name) == "other", name
    assert is_os_litter("fer/__MACOSX/a") and not is_os_litter("train/angry/x.jpg")


# ---- image_too_large: decided from the header, before any decoding ------------------------------------------
def bomb_png(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of width x height zeros, compressed row by row (a few hundred KB for 20000^2)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"])
def test_declared_size_reads_the_header(fmt):
    from pipelines.readers.image_decoding import declared_size

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((30, 41), dtype=np.uint8)).convert("RGB" if fmt in ("JPEG", "WEBP", "PPM") else "L").save(
        buffer, fmt
    )
    assert declared_size(buffer.getvalue()) == (41, 30)


def test_a_header_over_the_limit_is_refused_without_decoding():
    from pipelines.readers.image_decoding import pixel_limit

    bomb = bomb_png(20000, 20000)
    assert len(bomb) < 2_000_000  # 400 megapixels in a small file
    refused = decode_image(bomb, max_pixels=50_000_000)
    assert isinstance(refused, DecodeFailure) and refused.reason == QuarantineReason.IMAGE_TOO_LARGE
    assert "20000x20000" in refused.detail and "not decoded" in refused.detail
    # the header alone decides: the same header over garbage image data is refused the same way
    garbage = bomb[:33] + b"\x00\x00\x00\x10IDAT" + bytes(20) + bomb[-12:]
    assert decode_image(garbage, max_pixels=50_000_000).reason == QuarantineReason.IMAGE_TOO_LARGE
    # the limit from the context variable (what read_source sets from params), and an image under it
    token = pixel_limit.set(100)
    try:
        assert decode_image(bomb_png(11, 10)).reason == QuarantineReason.IMAGE_TOO_LARGE
        assert decode_image(bomb_png(10, 10)).shape == (10, 10)
    finally:
        pixel_limit.reset(token)
    assert decode_image(bomb_png(11, 10)).shape == (10, 11)  # no limit outside a reader
