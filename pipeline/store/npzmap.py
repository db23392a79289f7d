"""The arrays of an ``.npz`` file, its stored (uncompressed) members memory-mapped read-only.

``np.load(..., mmap_mode='r')`` maps only ``.npy`` files; an ``.npz`` is a zip archive whose
uncompressed members are ``.npy`` files at known offsets, so each is mapped where it lies. Pages
are read when the array is used, and the operating system may drop them again: the inputs of a
prepared file cost page cache, not process memory.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Container
from pathlib import Path

import numpy as np

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_LOCAL_MAGIC = b"PK\x03\x04"


def _member_offset(fh: object, info: zipfile.ZipInfo) -> int:
    """Where a member's data begins: after its local header, name and extra field."""
    fh.seek(info.header_offset)  # type: ignore[attr-defined]
    local = fh.read(_LOCAL_HEADER)  # type: ignore[attr-defined]
    if len(local) != _LOCAL_HEADER or local[:4] != _LOCAL_MAGIC:
        raise ValueError(f"bad zip local header of member {info.filename}")
    n_name, n_extra = struct.unpack("<HH", local[26:30])
    return info.header_offset + _LOCAL_HEADER + n_name + n_extra


def map_member(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """Member ``name`` (``<name>.npy``) memory-mapped read-only; None when it is compressed, empty
    or holds objects (read it with ``np.load`` then)."""
    info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(_member_offset(fh, info))
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype.hasobject or int(np.prod(shape)) == 0:
        return None
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def npz_arrays(path: Path, mapped: Container[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles); those named in ``mapped`` memory-mapped when
    stored uncompressed, the others read into memory."""
    out: dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            arr = map_member(Path(path), z.zip, k) if k in mapped else None
            out[k] = z[k] if arr is None else arr
    return out
