"""Figures on disk are real PNG images."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """A real PNG: signature, IHDR size > 0, and matplotlib can decode it."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    w, h = struct.unpack(">II", data[16:24])
    assert w > 50 and h > 50, (path, w, h)
    img = mpimg.imread(path)
    assert img.shape[0] == h and img.shape[1] == w
    assert float(np.std(img)) > 0.01, f"{path} is blank"
