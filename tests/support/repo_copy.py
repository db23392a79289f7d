"""Test helpers (helper C): a throw-away copy of the repository and subprocess runs inside it.

The copy holds what a ``git clone`` would hold plus uncommitted working files (tracked and
untracked-but-not-ignored), is its own git repository (DVC needs one), and gets its own
``mlflow.db``, so nothing a test runs lands in the real working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def copy_repo(dest: Path) -> Path:
    """Copy the working tree's git-visible files into ``dest`` and make it a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.email=test@curvlab", "-c", "user.name=test"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def env_for(root: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess in ``root``: venv on PATH, offline, no inherited MLflow URI."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "HYDRA_", "CURVLAB_MLFLOW", "CURVLAB_SWEEP"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CURVLAB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(root)
    env.pop("CI", None)
    env.update(extra or {})
    return env


def run_cmd(
    args: Sequence[str],
    cwd: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 600,
    code_root: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command in ``cwd`` (``python`` = this interpreter; code imported from ``code_root``,
    default ``cwd``) and capture its output."""
    argv = [sys.executable if a == "python" else a for a in args]
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env_for(code_root or cwd, extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
