"""curvlab's default for numpy's transparent huge pages (pipeline/__init__.py): a process that
imports curvlab before numpy (every stage, every benchmark) keeps numpy's large arrays on 4 kB
pages, unless the user set NUMPY_MADVISE_HUGEPAGE themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VAR = "NUMPY_MADVISE_HUGEPAGE"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# numpy's own switch (private, numpy >= 1.19) and, on Linux, the huge pages a freshly written
# 64 MB array holds (/proc/self/smaps_rollup)
PROBE = """
import json, pathlib, sys
import pipeline
import numpy as np
from numpy._core import multiarray
a = np.empty(1 << 23)
a[:] = 1.0
rollup = pathlib.Path("/proc/self/smaps_rollup")
huge = None
if rollup.exists():
    line = next(l for l in rollup.read_text().splitlines() if l.startswith("AnonHugePages:"))
    huge = int(line.split()[1])
print(json.dumps({"madvise": bool(multiarray._get_madvise_hugepage()), "huge_kb": huge}))
"""


def _probe(value: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != VAR}
    if value is not None:
        env[VAR] = value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_curvlab_imported_first_keeps_numpy_off_huge_pages() -> None:
    seen = _probe(None)
    assert seen["madvise"] is False
    if THP.exists() and "[madvise]" in THP.read_text():  # huge pages only where asked for
        assert seen["huge_kb"] == 0


def test_a_users_own_setting_wins() -> None:
    assert _probe("1")["madvise"] is True
    assert _probe("0")["madvise"] is False


def test_the_stages_import_curvlab_before_numpy() -> None:
    """`python -m pipeline.<stage>` runs pipeline/__init__.py first; so does each benchmark."""
    for bench in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        text = bench.read_text(encoding="utf-8")
        if "import numpy" not in text or "from pipeline" not in text:
            continue
        assert text.index("import pipeline") < text.index("import numpy"), bench.name
