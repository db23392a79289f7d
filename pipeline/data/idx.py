"""IDX file reader (the MNIST container format): big-endian header, then a flat C-order payload.

Layout: magic ``0x0000 TT NN`` (``TT`` = element type, ``NN`` = number of dimensions), then
``NN`` big-endian uint32 sizes, then the elements. MNIST images have magic 2051 (``0x00000803``:
uint8, 3-D) and labels 2049 (``0x00000801``: uint8, 1-D). Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError

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


def read_bytes(path: str | Path) -> bytes:
    """The decompressed content of ``path`` (gzip detected by its magic bytes, not the suffix)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; check the path or set CURVLAB_DATA_DIR") from None
    except OSError as err:
        raise DataError(
            f"{p}: cannot read ({err.strerror}); check the file's permissions"
        ) from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        # EOFError: truncated stream; BadGzipFile (an OSError) / zlib.error: corrupt data or CRC
        raise DataError(
            f"{p}: truncated or corrupt gzip ({err}); delete it and rerun to re-download, "
            "or copy it again from a good source"
        ) from None


def parse_idx(buf: bytes, name: str = "<idx>", expected_magic: int | None = None) -> np.ndarray:
    """Parse an in-memory IDX payload into an array of the header's shape (zero-copy, read-only)."""
    if len(buf) < 4:
        raise DataError(
            f"{name}: only {len(buf)} bytes, not an IDX file; replace it with a good copy"
        )
    magic = int.from_bytes(buf[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{name}: wrong magic number {magic} (expected {expected_magic}); "
            "the file is not the IDX file its name says, replace it with a good copy"
        )
    type_code, ndim = buf[2], buf[3]
    if buf[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{name}: bad IDX magic number {magic:#010x}; replace it with a good copy")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{name}: truncated IDX header; replace it with a good copy")
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX payload {what} ({len(buf)} bytes, header {shape} needs {expected}); "
            "replace it with a good copy"
        )
    return np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into an array shaped by its header (uint8 for MNIST)."""
    p = Path(path)
    return parse_idx(read_bytes(p), name=str(p), expected_magic=expected_magic)
