"""IDX data sets (MNIST as declared in conf/data/mnist.yaml): source order, verified payloads, one
DataError per bad file."""

from __future__ import annotations

import gzip
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.data import idxsets
from pipeline.data.catalog import data_config
from pipeline.data.idxsets import load_mnist, mnist_spec

MNIST = mnist_spec()
FILES = MNIST.names
SHA256 = MNIST.sha256


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    idxsets._CACHE.clear()


def linked_copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """A directory with symlinks to the good files, except those named in ``skip``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if name not in skip:
            (dst / f"{name}.gz").symlink_to(src / f"{name}.gz")
    return dst


def one_line(ei: pytest.ExceptionInfo) -> str:
    msg = str(ei.value)
    assert "\n" not in msg and msg
    return msg


def _sums(folder: Path) -> dict[str, str]:
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        pytest.skip("no SHA256SUMS beside the data")
    return dict(
        line.split()[::-1]
        for line in sums.read_text().splitlines()
        if line and not line.startswith("#")
    )


def test_sha256sums_file_matches_config(mnist_dir: Path) -> None:
    assert _sums(mnist_dir) == SHA256
    # the canonical payload digests
    assert SHA256["train-images-idx3-ubyte"].startswith("ba891046e650")


def test_fashion_sha256sums_match_config(fashion_dir: Path) -> None:
    cfg = data_config("fashion_mnist")
    assert _sums(fashion_dir) == {f["name"]: f["sha256"] for f in cfg["files"].values()}


def test_load_from_root(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURVLAB_DATA_DIR", raising=False)
    t0 = time.perf_counter()
    raw = load_mnist(mnist_dir)
    seconds = time.perf_counter() - t0
    print(f"\nMNIST load (decompress + parse + SHA-256 of 55 MB): {seconds:.2f} s")
    assert raw.train_images.shape == (60000, 28, 28) and raw.train_images.dtype == np.uint8
    assert raw.test_images.shape == (10000, 28, 28) and raw.test_labels.shape == (10000,)
    assert raw.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels
    assert raw.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(raw.train_labels).tolist()[1] == 6742  # count of ones in the training set
    assert raw.source == str(mnist_dir)
    assert raw.sha256 == SHA256
    # the arrays hash to the verified payloads (header + pixels), computed independently here
    header = np.array([2049, 10000], dtype=">u4").tobytes()
    assert (
        hashlib.sha256(header + raw.test_labels.tobytes()).hexdigest()
        == SHA256["t10k-labels-idx1-ubyte"]
    )


def test_env_dir_used_and_root_wins(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CURVLAB_DATA_DIR", str(mnist_dir))
    assert load_mnist().source == str(mnist_dir)
    monkeypatch.setenv("CURVLAB_DATA_DIR", str(tmp_path / "nowhere"))
    assert load_mnist(mnist_dir).source == str(mnist_dir)  # data.root comes first
    with pytest.raises(DataError) as ei:
        load_mnist()
    msg = one_line(ei)
    assert "nowhere" in msg and "not found" in msg and "CURVLAB_DATA_DIR" in msg


def test_cache_dir_then_offline_refusal(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CURVLAB_DATA_DIR", raising=False)
    cache = tmp_path / "data" / "raw" / "mnist"
    monkeypatch.setattr(idxsets, "cache_dir", lambda folder: cache)
    with pytest.raises(DataError) as ei:  # nothing anywhere and CURVLAB_OFFLINE=1 (conftest)
        load_mnist()
    assert "CURVLAB_OFFLINE=1" in one_line(ei)
    assert not cache.exists() or not any(cache.iterdir())
    linked_copy(mnist_dir, cache)
    assert load_mnist().source == str(cache.resolve())


def test_project_root_holds_pyproject() -> None:
    assert (idxsets.project_root() / "pyproject.toml").is_file()
    assert idxsets.cache_dir(MNIST.folder) == idxsets.project_root() / "data" / "raw" / "mnist"


def test_uncompressed_files_accepted(mnist_dir: Path, tmp_path: Path) -> None:
    d = linked_copy(
        mnist_dir, tmp_path / "raw", skip=("t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte")
    )
    for name in ("t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (d / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    raw = load_mnist(d)
    assert raw.test_images.shape == (10000, 28, 28) and raw.test_labels[:3].tolist() == [7, 2, 1]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as ei:
        load_mnist(tmp_path / "absent")
    msg = one_line(ei)
    assert "absent" in msg and "directory not found" in msg and "data.root" in msg


def test_missing_file(mnist_dir: Path, tmp_path: Path) -> None:
    d = linked_copy(mnist_dir, tmp_path / "m", skip=("t10k-labels-idx1-ubyte",))
    with pytest.raises(DataError) as ei:
        load_mnist(d)
    msg = one_line(ei)
    assert "missing MNIST file t10k-labels-idx1-ubyte" in msg


def _labels_payload(mnist_dir: Path, name: str = "t10k-labels-idx1-ubyte") -> bytes:
    return gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())


def test_truncated_gzip(mnist_dir: Path, tmp_path: Path) -> None:
    d = linked_copy(mnist_dir, tmp_path / "m", skip=("t10k-labels-idx1-ubyte",))
    good = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(good[: len(good) - 100])
    with pytest.raises(DataError) as ei:
        load_mnist(d)
    msg = one_line(ei)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "truncated or corrupt gzip" in msg


def test_wrong_magic(mnist_dir: Path, tmp_path: Path) -> None:
    d = linked_copy(mnist_dir, tmp_path / "m", skip=("t10k-labels-idx1-ubyte",))
    payload = bytearray(_labels_payload(mnist_dir))
    payload[3] = 3  # 2049 -> 2051
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError) as ei:
        load_mnist(d)
    msg = one_line(ei)
    assert "wrong magic number" in msg and "t10k-labels" in msg


def test_count_mismatch(mnist_dir: Path, tmp_path: Path) -> None:
    d = linked_copy(mnist_dir, tmp_path / "m", skip=("t10k-labels-idx1-ubyte",))
    payload = _labels_payload(mnist_dir)
    short = np.array([2049, 9999], dtype=">u4").tobytes() + payload[8 : 8 + 9999]
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(short))
    with pytest.raises(DataError) as ei:
        load_mnist(d)
    msg = one_line(ei)
    assert "count mismatch" in msg and "10000 images, 9999 labels" in msg


def test_checksum_mismatch(mnist_dir: Path, tmp_path: Path) -> None:
    d = linked_copy(mnist_dir, tmp_path / "m", skip=("t10k-labels-idx1-ubyte",))
    payload = bytearray(_labels_payload(mnist_dir))
    payload[100] = (payload[100] + 1) % 10  # one wrong label: structurally valid, wrong content
    (d / "t10k-labels-idx1-ubyte").write_bytes(bytes(payload))  # also via the uncompressed path
    with pytest.raises(DataError) as ei:
        load_mnist(d)
    msg = one_line(ei)
    assert "SHA-256 mismatch" in msg and "t10k-labels-idx1-ubyte" in msg and "re-download" in msg


def test_download_tries_mirrors_and_verifies(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """file:// mirrors stand in for the network: a corrupt mirror is skipped, nothing half-written
    stays."""
    monkeypatch.delenv("CURVLAB_OFFLINE")
    monkeypatch.delenv("CURVLAB_DATA_DIR", raising=False)
    bad = tmp_path / "bad_mirror"
    bad.mkdir()
    for name in FILES:
        payload = bytearray(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
        payload[-1] ^= 1
        (bad / f"{name}.gz").write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    dest = tmp_path / "cache"
    idxsets.download(
        MNIST, dest,
        mirrors=(f"file://{tmp_path}/absent/", f"file://{bad}/", f"file://{mnist_dir}/")
    )
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        f"{n}.gz" for n in FILES
    )  # no temp files
    monkeypatch.setattr(idxsets, "cache_dir", lambda folder: dest)
    assert load_mnist().sha256 == SHA256


def test_download_all_mirrors_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURVLAB_OFFLINE")
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as ei:
        idxsets.download(MNIST, dest, mirrors=(f"file://{tmp_path}/a/", f"file://{tmp_path}/b/"))
    msg = one_line(ei)
    assert "could not download train-images-idx3-ubyte.gz" in msg and "CURVLAB_DATA_DIR" in msg
    assert list(dest.iterdir()) == []


def test_cached_copy_is_reused(mnist_dir: Path) -> None:
    a = load_mnist(mnist_dir)
    b = load_mnist(mnist_dir)
    assert a is b
    assert not a.train_images.flags.writeable  # shared arrays cannot be changed by a caller
