"""Shared fixtures. Tests read MNIST from $CURVLAB_DATA_DIR (CI: ../shared/data/mnist) and never download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path | None:
    for cand in (os.environ.get("CURVLAB_DATA_DIR"), str(REPO_ROOT.parent / "shared" / "data" / "mnist")):
        if cand and (Path(cand) / "train-images-idx3-ubyte.gz").exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Directory holding the four verified MNIST IDX files (skips when absent)."""
    d = _mnist_dir()
    if d is None:
        pytest.skip("MNIST not found: set CURVLAB_DATA_DIR to a directory with the four IDX .gz files")
    return d


@pytest.fixture(autouse=True)
def _no_network_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: the loader refuses the network when this variable is set."""
    monkeypatch.setenv("CURVLAB_OFFLINE", "1")
