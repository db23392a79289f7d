"""The project path policy: configured paths are absolute, relative ones against the current
directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_path(p: str | os.PathLike[str]) -> Path:
    """A configured path made absolute (relative ones against the current directory)."""
    return Path(p).expanduser().absolute()


EXPERIMENTS = "experiments"  # the default paths.experiments_dir, as dvc.yaml's stages name it
# Folders under the experiments folder that a DVC stage owns as a whole (``dvc repro`` deletes and
# rewrites them): name → (the stage's command, the paths key that names the folder).
RESERVED_DIRS: dict[str, tuple[str, str]] = {
    "reference": ("python -m pipeline.reference", "paths.reference_dir"),
    "analytic": ("python -m pipeline.analytic", "paths.analytic_dir"),
}


def reserved_folders(paths: dict[str, str]) -> dict[Path, str]:
    """Absolute reserved folders → their name: ``<experiments>/<name>`` for the default and the
    configured experiments folder, and the folder each owner key names."""
    roots = {project_path(EXPERIMENTS), project_path(paths.get("experiments_dir") or EXPERIMENTS)}
    found = {root / name: name for root in roots for name in RESERVED_DIRS}
    for name, (_stage, key) in RESERVED_DIRS.items():
        if paths.get(key.partition(".")[2]):
            found[project_path(paths[key.partition(".")[2]])] = name
    return found
