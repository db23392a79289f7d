"""Fixtures of the system tests: a repo copy with the tiny data prepared, a headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.project import prepare_tiny
from support.repo_copy import copy_repo


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get (root) when absent, else the test is skipped."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("headless Chromium unavailable: `apt-get install -y chromium` failed or not "
                    "root")
    return exe


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's repo copy with the tiny data set prepared (in-process: fast), raw and whitened."""
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    prepare_tiny(root / "data" / "prepared", ["none", "whiten"], conf=root / "conf")
    return root
