import gzip
import hashlib
import struct

import numpy as np
import pytest

from pipelines.readers.mnist import IdxFormatError, load_mnist, read_idx


def _write_idx(path, array: np.ndarray, type_code=0x08, compress=False, extra=b""):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes() + extra
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def test_round_trip_plain_and_gzip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    assert np.array_equal(read_idx(_write_idx(tmp_path / "a-idx3-ubyte", a)), a)
    got = read_idx(_write_idx(tmp_path / "a-idx3-ubyte.gz", a, compress=True))
    assert np.array_equal(got, a) and got.dtype == np.uint8 and got.flags.writeable


def test_big_endian_int32_payload(tmp_path):
    a = np.array([1, -2, 70000], dtype=np.int32)
    got = read_idx(_write_idx(tmp_path / "i.idx", a, type_code=0x0C))
    assert got.tolist() == [1, -2, 70000]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x08\x01\x00\x00\x00\x01\x05",  # second byte not zero
        b"\x00\x00\x07\x01\x00\x00\x00\x01\x05",  # unknown type code
        b"\x00\x00\x08\x00",  # zero dimensions
        b"<htm",  # an error page saved under the right name
    ],
)
def test_bad_magic_is_rejected(tmp_path, raw):
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(raw)
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(p)


def test_truncated_and_oversized_payloads_are_rejected(tmp_path):
    a = np.zeros((4, 2, 2), dtype=np.uint8)
    p = _write_idx(tmp_path / "x", a)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(IdxFormatError, match="payload"):
        read_idx(p)
    with pytest.raises(IdxFormatError, match="payload"):
        read_idx(_write_idx(tmp_path / "y", a, extra=b"\x00"))
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # ends inside the dimension list
    with pytest.raises(IdxFormatError, match="header"):
        read_idx(p)


def test_label_count_must_match_images(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8), compress=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2, np.uint8), compress=True)
    with pytest.raises(IdxFormatError, match="labels"):
        load_mnist(tmp_path, "test")


def test_missing_files_and_bad_split(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError):
        load_mnist(tmp_path, "validation")


def test_real_mnist_test_split(datasets_dir):
    images, labels = load_mnist(datasets_dir / "mnist", "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert set(np.unique(labels).tolist()) == set(range(10))
    # the canonical content checksums (PROVENANCE.txt): the reader's bytes are the file's bytes
    header_images = bytes([0, 0, 8, 3]) + struct.pack(">III", 10000, 28, 28)
    assert hashlib.md5(header_images + images.tobytes()).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    header_labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 10000)
    assert (
        hashlib.md5(header_labels + labels.astype(np.uint8).tobytes()).hexdigest() == "27ae3e4e09519cfbb04c329615203637"
    )


def test_real_mnist_train_split(datasets_dir):
    images, labels = load_mnist(datasets_dir / "mnist", "train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 60000 and counts.min() > 5000  # every digit well represented
    assert images.max() == 255 and images.min() == 0
