"""Byte-identical snapshots of a folder, and the one-line error rule of the stage command lines."""

from __future__ import annotations

import stat
from pathlib import Path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative path → bytes), dot-folders included; FIFOs,
    sockets and devices are never opened."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if stat.S_ISREG(p.lstat().st_mode)}


def error_lines(err: str) -> list[str]:
    """The lines of a command's stderr, log lines (Hydra's, INFO) and blank lines aside."""
    return [ln for ln in err.splitlines()
            if ln.strip() and " INFO " not in ln and "[HYDRA]" not in ln]


def one_error_line(err: str, prog: str) -> str:
    """The stderr of a failed command must be exactly one ``prog: error:`` line (log lines
    aside)."""
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return lines[0]
