"""Shared fixtures. Tests read MNIST / Fashion-MNIST from $CURVLAB_DATA_DIR (CI: ../shared/data, one
sub-folder per data set; a folder holding MNIST's files directly works too) and never download."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir(folder: str) -> Path | None:
    """A data set's IDX folder: $CURVLAB_DATA_DIR itself (MNIST only, as before), its <folder>/, else ../shared/data/<folder>."""
    env = os.environ.get("CURVLAB_DATA_DIR")
    cands = ([env] if env and folder == "mnist" else []) + ([str(Path(env) / folder)] if env else [])
    for cand in [*cands, str(REPO_ROOT.parent / "shared" / "data" / folder)]:
        if (Path(cand) / "train-images-idx3-ubyte.gz").exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Directory holding the four verified MNIST IDX files (skips when absent)."""
    d = data_dir("mnist")
    if d is None:
        pytest.skip("MNIST not found: set CURVLAB_DATA_DIR to a directory with the four IDX .gz files")
    return d


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Directory holding the four verified Fashion-MNIST IDX files (skips when absent)."""
    d = data_dir("fashion-mnist")
    if d is None:
        pytest.skip("Fashion-MNIST not found: set CURVLAB_DATA_DIR to a folder holding fashion-mnist/")
    return d


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get (root) when absent, else the test is skipped."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("headless Chromium unavailable: `apt-get install -y chromium` failed or not root")
    return exe


@pytest.fixture(autouse=True)
def _no_network_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: the loader refuses the network when this variable is set."""
    monkeypatch.setenv("CURVLAB_OFFLINE", "1")
