"""IDX data sets declared in conf/data/: find (or download) the four files, verify their SHA-256,
load them.

A data set (``IdxSpec``, from its ``data`` config) names its four files, the SHA-256 of each
decompressed payload, its download mirrors and its ``folder``. Source order: ``data.root`` →
``$CURVLAB_DATA_DIR`` → the project cache ``<project>/data/raw/<folder>/`` → download into that
cache (refused when ``$CURVLAB_OFFLINE=1``). ``data.root`` and ``$CURVLAB_DATA_DIR`` may each name
the folder holding the files or a parent folder holding one ``<folder>/`` per data set. Each file
may be ``.gz`` or uncompressed; the SHA-256 of its *decompressed* payload is checked whatever the
source, and a file that belongs to another data set declared in conf/data/ is named as such.
No file is read or downloaded further than its IDX header declares (at most limits.memory_gb).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.core.errors import DataError
from pipeline.data.catalog import data_config, known_files, project_root
from pipeline.data.idx import (
    DEFAULT_MAX_BYTES,
    MAGIC_IMAGES,
    MAGIC_LABELS,
    declared_size,
    parse_idx,
    read_bytes,
)

SPLITS: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")
ENV_DATA_DIR = "CURVLAB_DATA_DIR"
ENV_OFFLINE = "CURVLAB_OFFLINE"
_DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class IdxSpec:
    """What identifies an IDX data set: its four files and their payload checksums, mirrors,
    folder."""

    name: str  # the conf/data/ file name (data=<name>)
    title: str  # in messages, e.g. "Fashion-MNIST"
    folder: str  # sub-folder under a parent data folder and under data/raw/
    files: dict[str, str]  # split (SPLITS) -> file name without .gz
    sha256: dict[str, str]  # file name -> SHA-256 of the decompressed payload
    mirrors: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> IdxSpec:
        """The spec of a validated ``data`` config (``format: idx``)."""
        files = {s: str(cfg["files"][s]["name"]) for s in SPLITS}
        return cls(
            name=str(cfg["name"]),
            title=str(cfg.get("title") or cfg["name"]),
            folder=str(cfg.get("folder") or cfg["name"]),
            files=files,
            sha256={files[s]: str(cfg["files"][s]["sha256"]).lower() for s in SPLITS},
            mirrors=tuple(m if m.endswith("/") else f"{m}/" for m in (cfg.get("mirrors") or ())),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.files[s] for s in SPLITS)


@dataclass(frozen=True, eq=False)
class IdxRaw:
    """The four arrays as stored (read-only) and where they came from."""

    train_images: np.ndarray  # (n_train, h, w) uint8
    train_labels: np.ndarray  # (n_train,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # the directory the files were read from
    sha256: dict[str, str] = field(default_factory=dict)  # verified payload digests by file name


def cache_dir(folder: str) -> Path:
    """The project's download cache for one data set, ``<project>/data/raw/<folder>``."""
    return project_root() / "data" / "raw" / folder


def _find_file(directory: Path, name: str) -> Path | None:
    """``name.gz`` or ``name`` in ``directory`` (the compressed one first), or None."""
    for cand in (directory / f"{name}.gz", directory / name):
        if cand.is_file():
            return cand
    return None


def _has_all(directory: Path, spec: IdxSpec) -> bool:
    return directory.is_dir() and all(_find_file(directory, n) is not None for n in spec.names)


def _check_dir(directory: Path, spec: IdxSpec, origin: str) -> Path:
    """The folder a user named (``origin``): it holds the files, or its ``<folder>/`` sub-folder
    does."""
    if not directory.is_dir():
        raise DataError(
            f"{directory}: {spec.title} directory not found (from {origin}); fix {origin} or point "
            "it to "
            f"a directory with the four IDX files (or to a parent folder holding {spec.folder}/)"
        )
    here = [n for n in spec.names if _find_file(directory, n) is not None]
    sub = directory / spec.folder
    if not here and sub.is_dir():
        directory, here = sub, [n for n in spec.names if _find_file(sub, n) is not None]
    missing = [n for n in spec.names if n not in here]
    if missing and not here:
        raise DataError(
            f"{directory}: no {spec.title} files here (e.g. {missing[0]}.gz) and no {spec.folder}/ "
            f"sub-folder (from {origin}); point {origin} at the {spec.title} files or at a parent "
            "folder "
            f"holding {spec.folder}/"
        )
    if missing:
        raise DataError(
            f"{directory}: missing {spec.title} file {missing[0]}.gz (or uncompressed "
            f"{missing[0]}) "
            f"(from {origin}); copy the four IDX files there or fix {origin}"
        )
    return directory


def resolve_source(spec: IdxSpec, root: str | Path | None = None,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Path, str]:
    """The directory to read the data set from (and which setting named it), downloading when
    needed."""
    if root is not None and str(root) != "":
        return _check_dir(Path(root).expanduser(), spec, "data.root"), "data.root"
    env = os.environ.get(ENV_DATA_DIR, "")
    if env:
        origin = f"${ENV_DATA_DIR}"
        return _check_dir(Path(env).expanduser(), spec, origin), origin
    cache = cache_dir(spec.folder)
    if not _has_all(cache, spec):
        download(spec, cache, max_bytes=max_bytes)
    return cache, f"the download cache {cache}"


def _mismatch(spec: IdxSpec, name: str, digest: str, path: Path | str, origin: str) -> DataError:
    """The error for a payload whose SHA-256 is not the declared one, naming the data set it belongs
    to."""
    other = known_files().get(digest)
    if other is not None:
        title, data_name, file = other
        if title != spec.title:
            return DataError(
                f"{path}: this is {title}'s {file} (by its SHA-256), not {spec.title}'s {name} "
                f"(data={spec.name}); use data={data_name} for {title}, or point {origin} at the "
                f"{spec.title} files (or a parent folder holding {spec.folder}/)"
            )
        return DataError(
            f"{path}: this is {title}'s {file} (by its SHA-256), not its {name}; the files are "
            "mixed up, "
            f"copy the four {spec.title} files again"
        )
    return DataError(
        f"{path}: SHA-256 mismatch (got {digest[:12]}…, expected {spec.sha256[name][:12]}…; file "
        f"corrupt or not {spec.title}); delete it and rerun to re-download, or copy a good one"
    )


def download(spec: IdxSpec, dest: Path, mirrors: tuple[str, ...] | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Download the missing files into ``dest``, trying each mirror in turn (atomic, verified, each
    stopped once it sends more than its IDX header declares, at most ``max_bytes`` decompressed)."""
    mirrors = spec.mirrors if mirrors is None else mirrors
    if os.environ.get(ENV_OFFLINE, "") not in ("", "0"):
        raise DataError(
            f"{spec.title} not found (no data.root, no ${ENV_DATA_DIR}, nothing in {dest}) and "
            "downloading "
            f"is disabled by {ENV_OFFLINE}=1; set {ENV_DATA_DIR} to a directory with the four IDX "
            "files "
            f"(or to a parent folder holding {spec.folder}/)"
        )
    if not mirrors:
        raise DataError(
            f"{spec.title} not found (no data.root, no ${ENV_DATA_DIR}, nothing in {dest}) and its "
            "config "
            f"lists no download mirrors (data.mirrors); copy the four IDX files into {dest} or set "
            f"{ENV_DATA_DIR}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for name in spec.names:
        if _find_file(dest, name) is not None:
            continue
        errors: list[str] = []
        for mirror in mirrors:
            url = f"{mirror}{name}.gz"
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    fetch(url, out, max_bytes)
                digest = hashlib.sha256(read_bytes(tmp, max_bytes)).hexdigest()
                if digest != spec.sha256[name]:  # verified BEFORE the rename
                    raise _mismatch(spec, name, digest, url, "data.mirrors")
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


def gzip_bound(size: int) -> int:
    """The most bytes a gzip file of ``size`` decompressed bytes takes: deflate's stored blocks add
    5 bytes per 16 KiB at worst; 64 KiB cover the gzip header, its file name and trailer."""
    return size + size // 1000 + (1 << 16)


def fetch(url: str, out: BinaryIO, max_bytes: int) -> int:
    """Stream ``url`` into ``out``, stopping as soon as it sends more than its IDX header declares
    (at most ``max_bytes`` decompressed); returns the bytes written."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        limit = gzip_bound(max_bytes)
        if total is not None and total > limit:
            raise DataError(f"announces {total} bytes, more than the {limit} bytes "
                            "limits.memory_gb allows; the mirror is wrong")
        head, got, declared = b"", 0, None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := resp.read(1 << 16):
                got += len(chunk)
                if got > limit:
                    raise DataError(f"sent more than {limit} bytes (the most its IDX header "
                                    "allows); stopped, the mirror is wrong")
                out.write(chunk)
                bar.update(len(chunk))
                if declared is None:
                    head += chunk
                    declared = declared_size(head, url, max_bytes)
                    if declared is None and len(head) >= 1 << 20:
                        raise DataError("its first MiB holds no IDX header; not an IDX file")
                    if declared is not None:
                        limit = gzip_bound(declared) if head[:2] == b"\x1f\x8b" else declared
                        head = b""
    return got


_CACHE: dict[tuple, IdxRaw] = {}


def load_idx_set(spec: IdxSpec, root: str | Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> IdxRaw:
    """Load a data set's four IDX files as arrays, verified against the SHA-256 of each decompressed
    payload; no file is read beyond its header's size or ``max_bytes``."""
    directory, origin = resolve_source(spec, root, max_bytes)
    directory = directory.resolve()
    paths = {n: _find_file(directory, n) for n in spec.names}
    key = (
        tuple(sorted(spec.sha256.items())),
        *((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths.values() if p),
    )
    if key in _CACHE:
        return _CACHE[key]
    magics = {n: MAGIC_IMAGES if s.endswith("images") else MAGIC_LABELS
              for s, n in spec.files.items()}
    payloads = {n: read_bytes(p, max_bytes, magics[n]) for n, p in paths.items() if p is not None}
    digests = {n: hashlib.sha256(buf).hexdigest() for n, buf in payloads.items()}
    bad = [n for n in spec.names if digests[n] != spec.sha256[n]]
    known = known_files() if bad else {}
    foreign = [n for n in bad if digests[n] in known]
    if foreign:  # a file of another declared data set: say so before any structural complaint
        n = foreign[0]
        raise _mismatch(spec, n, digests[n], paths[n], origin)  # type: ignore[arg-type]
    arrays = {}
    for split, n in spec.files.items():
        arrays[split] = parse_idx(payloads[n], name=str(paths[n]), expected_magic=magics[n])
    check_shapes(arrays, directory)
    if bad:
        first = bad[0]
        raise _mismatch(spec, first, digests[first], paths[first], origin)  # type: ignore[arg-type]
    raw = IdxRaw(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        source=str(directory),
        sha256=digests,
    )
    _CACHE.clear()  # keep at most one data set (≈ 55 MB) in memory
    _CACHE[key] = raw
    return raw


def check_shapes(arrays: Mapping[str, np.ndarray], directory: Path) -> None:
    """Images and labels of a split agree in number, train and test images in shape; images have
    pixels."""
    for split in ("train", "test"):
        n_img, n_lab = arrays[f"{split}_images"].shape[0], arrays[f"{split}_labels"].shape[0]
        if n_img != n_lab:
            raise DataError(
                f"{directory}: {split} images/labels count mismatch ({n_img} images, "
                f"{n_lab} labels); "
                "the two files come from different sets, replace them with a matching pair"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(
            f"{directory}: train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}; the files come from different data sets, "
            "replace them"
        )
    if math.prod(arrays["train_images"].shape[1:]) == 0:
        raise DataError(
            f"{directory}: the images are {arrays['train_images'].shape[1:]}, without a pixel; "
            "replace the image files with good copies"
        )


def mnist_spec() -> IdxSpec:
    """MNIST as declared in conf/data/mnist.yaml."""
    return IdxSpec.from_config(data_config("mnist"))


def load_mnist(root: str | Path | None = None) -> IdxRaw:
    """MNIST (conf/data/mnist.yaml) as uint8 arrays, verified; ``root`` as ``data.root``."""
    return load_idx_set(mnist_spec(), root)
