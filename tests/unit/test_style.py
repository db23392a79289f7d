"""The project's declared line limit (pyproject.toml: ruff line-length = 100) holds in every Python
file, and no name is undefined or unused (ruff's E501 and F rules, pinned here so a new ruff
release with new rules cannot fail the suite)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("pipeline", "tests", "benchmarks", "hydra_plugins")


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return [found]


def test_no_line_over_the_declared_limit_and_no_undefined_or_unused_name() -> None:
    proc = subprocess.run([*_ruff(), "check", "--select", "E501,F", "--output-format", "concise",
                           *FOLDERS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_line_over_the_limit_even_behind_a_pragma_or_url() -> None:
    """ruff's E501 forgives a line that ends in a pragma comment or a URL; the limit does not."""
    long = [
        f"{p.relative_to(REPO)}:{i}"
        for folder in FOLDERS
        for p in sorted((REPO / folder).rglob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > 100
    ]
    assert not long, long


def test_the_check_sees_a_long_line(tmp_path: Path) -> None:
    """The rule is live: a 101-character line fails it."""
    bad = tmp_path / "bad.py"
    bad.write_text("x = '" + "a" * 95 + "'\n", encoding="utf-8")
    proc = subprocess.run([*_ruff(), "check", "--select", "E501", "--line-length", "100",
                           "--no-cache", str(bad)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "E501" in proc.stdout
