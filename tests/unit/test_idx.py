"""IDX reader: round trips of hand-built files and one DataError per kind of damage."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.data.idx import MAGIC_IMAGES, MAGIC_LABELS, parse_idx, read_idx


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX payload built independently of the reader (struct-packed header)."""
    header = struct.pack(">BBBB", 0, 0, type_code, arr.ndim) + struct.pack(
        f">{arr.ndim}I", *arr.shape
    )
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_raw_and_gz(tmp_path: Path, images: np.ndarray, compress: bool) -> None:
    data = idx_bytes(images)
    path = tmp_path / ("imgs.gz" if compress else "imgs")
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path, expected_magic=MAGIC_IMAGES)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_labels_magic_and_other_types(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    p = tmp_path / "labels"
    p.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(p, expected_magic=MAGIC_LABELS), labels)
    ints = np.array([[-5, 70000], [1, 2]], dtype=np.int32)
    np.testing.assert_array_equal(parse_idx(idx_bytes(ints, 0x0C)), ints)


def test_wrong_magic(tmp_path: Path, images: np.ndarray) -> None:
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(idx_bytes(images))  # an images file under a labels name
    with pytest.raises(DataError) as ei:
        read_idx(p, expected_magic=MAGIC_LABELS)
    msg = one_line_error(ei)
    assert "wrong magic number 2051" in msg and "2049" in msg and str(p) in msg


def test_garbage_header(tmp_path: Path) -> None:
    p = tmp_path / "junk"
    p.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="bad IDX magic"):
        read_idx(p)


@pytest.mark.parametrize("cut", [3, 10, -1])
def test_truncated_payload(tmp_path: Path, images: np.ndarray, cut: int) -> None:
    p = tmp_path / "imgs"
    p.write_bytes(idx_bytes(images)[:cut])
    with pytest.raises(DataError) as ei:
        read_idx(p)
    assert str(p) in one_line_error(ei)


def test_trailing_bytes(tmp_path: Path, images: np.ndarray) -> None:
    p = tmp_path / "imgs"
    p.write_bytes(idx_bytes(images) + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(p)


def test_truncated_gzip(tmp_path: Path, images: np.ndarray) -> None:
    gz = gzip.compress(idx_bytes(images))
    p = tmp_path / "imgs.gz"
    p.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError) as ei:
        read_idx(p)
    msg = one_line_error(ei)
    assert "truncated or corrupt gzip" in msg and str(p) in msg


def test_corrupt_gzip(tmp_path: Path, images: np.ndarray) -> None:
    gz = bytearray(gzip.compress(idx_bytes(images)))
    gz[len(gz) // 2] ^= 0xFF  # a flipped byte in the deflate stream (or the CRC fails)
    p = tmp_path / "imgs.gz"
    p.write_bytes(bytes(gz))
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_idx(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")
