"""The project path policy: configured paths are absolute, relative ones against the current directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_path(p: str | os.PathLike[str]) -> Path:
    """A configured path made absolute (relative ones against the current directory)."""
    return Path(p).expanduser().absolute()
