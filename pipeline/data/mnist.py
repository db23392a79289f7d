"""MNIST: find (or download) the four IDX files, verify their SHA-256, return uint8 arrays.

Source order: the ``root`` argument (config ``data.root``) → ``$CURVLAB_DATA_DIR`` → the
project cache ``<project>/data/raw/mnist/`` → download into that cache from public mirrors
(refused when ``$CURVLAB_OFFLINE=1``). Each file may be ``.gz`` or uncompressed; the SHA-256
of its *decompressed* payload is checked whatever the source, so gzip settings do not matter.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.idx import MAGIC_IMAGES, MAGIC_LABELS, parse_idx, read_bytes
from pipeline.errors import DataError

# SHA-256 of the decompressed IDX payloads (independent of gzip settings)
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FILES: tuple[str, ...] = tuple(SHA256)
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
ENV_DATA_DIR = "CURVLAB_DATA_DIR"
ENV_OFFLINE = "CURVLAB_OFFLINE"
_DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True, eq=False)
class MnistRaw:
    """The four MNIST arrays as stored (uint8, read-only) and where they came from."""

    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    source: str  # the directory the files were read from
    sha256: dict[str, str] = field(default_factory=dict)  # verified payload digests by file name


def project_root() -> Path:
    """The directory holding ``pyproject.toml``: above this package, else above the cwd, else cwd."""
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for cand in (start, *start.parents):
            if (cand / "pyproject.toml").is_file():
                return cand
    return Path.cwd().resolve()


def cache_dir() -> Path:
    """The project's download cache ``<project>/data/raw/mnist``."""
    return project_root() / "data" / "raw" / "mnist"


def _find_file(directory: Path, name: str) -> Path | None:
    """``name.gz`` or ``name`` in ``directory`` (the compressed one first), or None."""
    for cand in (directory / f"{name}.gz", directory / name):
        if cand.is_file():
            return cand
    return None


def _has_all(directory: Path) -> bool:
    return directory.is_dir() and all(_find_file(directory, n) is not None for n in FILES)


def _check_dir(directory: Path, origin: str) -> Path:
    """A user-named data directory must exist and hold the four files."""
    if not directory.is_dir():
        raise DataError(
            f"{directory}: MNIST directory not found (from {origin}); "
            f"fix {origin} or point it to a directory with the four IDX files"
        )
    missing = [n for n in FILES if _find_file(directory, n) is None]
    if missing:
        raise DataError(
            f"{directory}: missing MNIST file {missing[0]}.gz (or uncompressed {missing[0]}) "
            f"(from {origin}); copy the four IDX files there or fix {origin}"
        )
    return directory


def resolve_source(root: str | Path | None = None) -> Path:
    """The directory to read MNIST from, downloading into the cache when nothing else has it."""
    if root is not None and str(root) != "":
        return _check_dir(Path(root).expanduser(), "data.root")
    env = os.environ.get(ENV_DATA_DIR, "")
    if env:
        return _check_dir(Path(env).expanduser(), f"${ENV_DATA_DIR}")
    cache = cache_dir()
    if _has_all(cache):
        return cache
    download(cache)
    return cache


def _verify(name: str, payload: bytes, path: Path | str) -> str:
    """SHA-256 of the decompressed payload; a mismatch is a DataError."""
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHA256[name]:
        raise DataError(
            f"{path}: SHA-256 mismatch (got {digest[:12]}…, expected {SHA256[name][:12]}…; file "
            "corrupt or not MNIST); delete it and rerun to re-download, or copy a good one"
        )
    return digest


def download(dest: Path, mirrors: tuple[str, ...] = MIRRORS) -> None:
    """Download the missing MNIST files into ``dest``, trying each mirror in turn (atomic, verified)."""
    if os.environ.get(ENV_OFFLINE, "") not in ("", "0"):
        raise DataError(
            f"MNIST not found (no data.root, no ${ENV_DATA_DIR}, nothing in {dest}) and downloading "
            f"is disabled by {ENV_OFFLINE}=1; set {ENV_DATA_DIR} to a directory with the four IDX files"
        )
    from tqdm.auto import tqdm

    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if _find_file(dest, name) is not None:
            continue
        errors: list[str] = []
        for mirror in mirrors:
            url = f"{mirror}{name}.gz"
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
            tmp = Path(tmp_name)
            try:
                with (
                    os.fdopen(fd, "wb") as out,
                    urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp,
                ):
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}.gz") as bar:
                        while chunk := resp.read(1 << 16):
                            out.write(chunk)
                            bar.update(len(chunk))
                _verify(name, read_bytes(tmp), url)  # verified BEFORE the rename
                os.replace(tmp, dest / f"{name}.gz")
                break
            except (urllib.error.URLError, OSError, TimeoutError, DataError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(
                f"could not download {name}.gz from any mirror ({'; '.join(errors)}); "
                f"download the four files by hand into {dest} or set {ENV_DATA_DIR}"
            )


_CACHE: dict[tuple, MnistRaw] = {}


def load_mnist(root: str | Path | None = None) -> MnistRaw:
    """Load MNIST as uint8 arrays, verified against the SHA-256 of each decompressed payload."""
    directory = resolve_source(root).resolve()
    paths = {n: _find_file(directory, n) for n in FILES}
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths.values() if p)
    if key in _CACHE:
        return _CACHE[key]
    payloads = {n: read_bytes(p) for n, p in paths.items() if p is not None}
    arrays = {}
    for n, buf in payloads.items():
        magic = MAGIC_IMAGES if "images" in n else MAGIC_LABELS
        arr = parse_idx(buf, name=str(paths[n]), expected_magic=magic)
        if magic == MAGIC_IMAGES and arr.shape[1:] != (28, 28):
            raise DataError(
                f"{paths[n]}: images are {arr.shape[1:]}, not 28x28; replace it with MNIST"
            )
        arrays[n] = arr
    for split in ("train", "t10k"):
        n_img = arrays[f"{split}-images-idx3-ubyte"].shape[0]
        n_lab = arrays[f"{split}-labels-idx1-ubyte"].shape[0]
        if n_img != n_lab:
            raise DataError(
                f"{directory}: {split} images/labels count mismatch ({n_img} images, {n_lab} labels); "
                "the two files come from different sets, replace them with a matching pair"
            )
    digests = {n: _verify(n, payloads[n], paths[n]) for n in FILES}
    raw = MnistRaw(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"],
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"],
        source=str(directory),
        sha256=digests,
    )
    _CACHE.clear()  # keep at most one copy (≈ 55 MB) in memory
    _CACHE[key] = raw
    return raw


def _timed_load(root: str | Path | None = None) -> tuple[MnistRaw, float]:
    """``load_mnist`` and its wall time in seconds (bypassing the in-process cache)."""
    _CACHE.clear()
    t0 = time.perf_counter()
    raw = load_mnist(root)
    return raw, time.perf_counter() - t0
