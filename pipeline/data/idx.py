"""IDX file reader (the MNIST container format): big-endian header, then a flat C-order payload.

Layout: magic ``0x0000 TT NN`` (``TT`` = element type, ``NN`` = number of dimensions), then
``NN`` big-endian uint32 sizes, then the elements. MNIST images have magic 2051 (``0x00000803``:
uint8, 3-D) and labels 2049 (``0x00000801``: uint8, 1-D). Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.memory import MEMORY_GB, budget_bytes

MAGIC_IMAGES = 2051
MAGIC_LABELS = 2049

# IDX element-type codes -> numpy dtypes (multi-byte types are big-endian)
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = budget_bytes(MEMORY_GB)  # the largest IDX file read (limits.memory_gb)


def _read_upto(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream`` (fewer only at its end)."""
    parts, got = [], 0
    while got < n and (chunk := stream.read(min(n - got, _CHUNK))):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _check_header(head: bytes, name: str) -> tuple[int, int]:
    """(type code, ndim) of the first 4 bytes, or the DataError of a file that is no IDX file."""
    if len(head) < 4:
        raise DataError(
            f"{name}: only {len(head)} bytes, not an IDX file; replace it with a good copy"
        )
    type_code, ndim = head[2], head[3]
    if head[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        magic = int.from_bytes(head[:4], "big")
        raise DataError(f"{name}: bad IDX magic number {magic:#010x}; replace it with a good copy")
    return type_code, ndim


def idx_size(header: bytes) -> tuple[tuple[int, ...], int]:
    """(shape, total bytes = 4 + 4·ndim + itemsize·∏ shape) of a whole IDX header (Python ints)."""
    ndim = header[3]
    shape = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return shape, 4 + 4 * ndim + _IDX_DTYPES[header[2]].itemsize * math.prod(shape)


def _sized(size: int, name: str, shape: tuple[int, ...], expected: int) -> DataError:
    """The error of an IDX file of ``size`` bytes whose header needs ``expected``."""
    what = "truncated" if size < expected else "has trailing bytes"
    return DataError(
        f"{name}: IDX payload {what} ({size} bytes, header {shape} needs {expected}); "
        "replace it with a good copy"
    )


def read_header(stream: BinaryIO, name: str, max_bytes: int,
                head: bytes = b"") -> tuple[bytes, tuple[int, ...], int]:
    """The header bytes, shape and total size an IDX stream declares (``head``: its first bytes,
    read already); the size at most ``max_bytes``."""
    head += _read_upto(stream, 4 - len(head))
    _, ndim = _check_header(head, name)
    head += _read_upto(stream, 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated IDX header; replace it with a good copy")
    shape, total = idx_size(head)
    if total > max_bytes:
        raise DataError(
            f"{name}: IDX header {shape} declares {total} bytes, more than the {max_bytes} "
            "bytes of limits.memory_gb; replace it with a good copy (or raise limits.memory_gb)"
        )
    return head, shape, total


def declared_size(head: bytes, name: str, max_bytes: int) -> int | None:
    """The total size the first bytes of an IDX stream (gzip or raw) declare, at most ``max_bytes``;
    None while they are too few to tell. A stream that is no IDX file is refused here."""
    data = head
    if head[:2] == _GZIP_MAGIC:
        try:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 4 + 4 * 255)
        except zlib.error as err:
            raise DataError(f"{name}: corrupt gzip ({err}); not an IDX file") from None
    if len(data) < 4:
        return None
    _, ndim = _check_header(data[:4], name)
    if len(data) < 4 + 4 * ndim:
        return None
    return read_header(io.BytesIO(data), name, max_bytes)[2]


def _wrong_magic(name: str, magic: int, expected: int) -> DataError:
    return DataError(
        f"{name}: wrong magic number {magic} (expected {expected}); "
        "the file is not the IDX file its name says, replace it with a good copy"
    )


def _read_stream(stream: BinaryIO, name: str, max_bytes: int, size: int | None,
                 expected_magic: int | None) -> bytearray:
    """Header, then exactly the payload it declares (+ 1 byte to see trailing data); ``size``: the
    file's size when the stream is uncompressed, checked before the payload is read. A file whose
    magic is not ``expected_magic`` is read when sound (it may be another data set's file), and
    refused for its magic when not."""
    first = _read_upto(stream, 4)
    try:
        return _read_payload(stream, first, name, max_bytes, size)
    except DataError:
        magic = int.from_bytes(first, "big")
        if expected_magic is not None and len(first) == 4 and magic != expected_magic:
            raise _wrong_magic(name, magic, expected_magic) from None
        raise


def _read_payload(stream: BinaryIO, first: bytes, name: str, max_bytes: int,
                  size: int | None) -> bytearray:
    """The header (after its ``first`` bytes) and the payload it declares, nothing beyond."""
    head, shape, total = read_header(stream, name, max_bytes, first)
    if size is not None and size != total:
        raise _sized(size, name, shape, total)
    buf = bytearray(total)
    buf[: len(head)] = head
    view, got = memoryview(buf), len(head)
    while got < total and (n := stream.readinto(view[got: min(total, got + _CHUNK)])):
        got += n
    if got < total:
        raise _sized(got, name, shape, total)
    if stream.read(1):
        raise DataError(
            f"{name}: IDX payload has trailing bytes (more than the {total} bytes header {shape} "
            "needs); replace it with a good copy"
        )
    return buf


def read_bytes(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES,
               expected_magic: int | None = None) -> bytearray:
    """The decompressed IDX content of ``path`` (gzip detected by its magic bytes, not the suffix),
    read no further than its header declares; a header declaring more than ``max_bytes`` is refused
    (a file that is unsound and not of ``expected_magic`` is refused for its magic)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            if fh.read(2) != _GZIP_MAGIC:
                fh.seek(0)
                size = os.fstat(fh.fileno()).st_size
                return _read_stream(fh, str(p), max_bytes, size, expected_magic)
            fh.seek(0)
            with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                return _read_stream(gz, str(p), max_bytes, None, expected_magic)  # type: ignore
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; check the path or set CURVLAB_DATA_DIR") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        # EOFError: truncated stream; BadGzipFile / zlib.error: corrupt data or CRC
        raise DataError(
            f"{p}: truncated or corrupt gzip ({err}); delete it and rerun to re-download, "
            "or copy it again from a good source"
        ) from None
    except OSError as err:
        raise DataError(
            f"{p}: cannot read ({err.strerror}); check the file's permissions"
        ) from None


def parse_idx(buf: bytes | bytearray, name: str = "<idx>",
              expected_magic: int | None = None) -> np.ndarray:
    """Parse an in-memory IDX payload into an array of the header's shape (zero-copy, read-only)."""
    if len(buf) >= 4 and expected_magic is not None:
        magic = int.from_bytes(buf[:4], "big")
        if magic != expected_magic:
            raise _wrong_magic(name, magic, expected_magic)
    type_code, ndim = _check_header(bytes(buf[:4]), name)
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{name}: truncated IDX header; replace it with a good copy")
    shape, expected = idx_size(bytes(buf[:header]))
    if len(buf) != expected:
        raise _sized(len(buf), name, shape, expected)
    out = np.frombuffer(buf, dtype=_IDX_DTYPES[type_code], offset=header).reshape(shape)
    out.flags.writeable = False
    return out


def read_idx(path: str | Path, expected_magic: int | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into an array shaped by its header (uint8 for MNIST)."""
    p = Path(path)
    buf = read_bytes(p, max_bytes, expected_magic)
    return parse_idx(buf, name=str(p), expected_magic=expected_magic)
