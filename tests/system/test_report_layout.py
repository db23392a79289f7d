"""The report page fits a 1280-px browser window: rendered in headless Chromium
(tests/support/browser.py), the document never scrolls sideways, no element passes the right
edge, a table too wide for the page scrolls inside its own box, a table that fits is shown
whole, and long ids wrap instead of widening tables."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support.browser import layout_problems, measure, scroll_box

from pipeline.reporting import render

RUN_ID = "claim5_newton_vs_gd/mnist-5k-whiten_transformed-softmax-newton_cg,optimizer.lr=0.5"
WORD = "unbroken_" * 40  # a 360-character "word" in running text


def _png(path: Path, width: int, height: int) -> None:
    """A plain grey PNG of the given size (a figure wider than the page)."""
    raw = b"".join(b"\x00" + b"\xa0" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _tables() -> dict[str, pd.DataFrame]:
    huge = pd.DataFrame(
        [
            {
                "run_id": f"{RUN_ID},seed={i}",
                **{
                    f"seconds_to_1e-{k:02d}_tolerance": (
                        "not reached in 500" if k % 3 else 1.234567e-7 * (k + 1) * (i + 1)
                    )
                    # 25 columns: cannot fit, must scroll
                    for k in range(24)
                },
            }
            for i in range(4)
        ]
    )
    speed = pd.DataFrame(
        [
            {
                "run_id": f"{RUN_ID},seed={i}",
                "optimizer": "newton_cg",
                "preprocess": "whiten_transformed",
                "status": "converged",
                "iterations": 500,
                "iters to 1e-04": "not reached in 500",
                "seconds to 1e-04": 12.34,
                "iters to 1e-08": "not reached in 500",
                "seconds to 1e-08": 0.001234,
                "κ of ∇²f(w*)": 3325.28358254631,
                "κ for GD = 1/(εμ)": 664201.8021078622,
                "GD rate measured": 0.9894616910291528,
                "1 − 1/κ = 1 − εμ": 0.9999984944334737,
                # fits once the ids wrap
                "theory check": "agrees (≤ 1 − 1/κ)",
            }
            for i in range(3)
        ]
    )
    small = pd.DataFrame(
        {
            "optimizer": ["gd", "newton"],
            "iterations": [500, 11],
            "f_star": [0.004958709819211203, 1e-9],
        }
    )
    return {"Huge table": huge, "Speed-like table": speed, "Small table": small}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("layout")
    (tmp / "figures").mkdir()
    _png(tmp / "figures" / "wide.png", 2400, 120)
    s = render.Section("speed", "Speed " + WORD, f"Intro with a long word {WORD} and a run id "
                                                 f"`{RUN_ID}`.")
    for caption, df in _tables().items():
        s.table(df, f"tables/{caption.split()[0].lower()}.csv", caption)
    s.text(f"Best run {RUN_ID} and `{RUN_ID}{WORD}` in code.")
    s.note(f"A note naming {WORD}.")
    s.figure("figures/wide.png", f"A figure 2400 px wide: {WORD}")
    path = tmp / "index.html"
    path.write_text(render.to_html("Layout " + WORD, f"Subtitle {WORD}", [s]), encoding="utf-8")
    return path


def _table(m: dict[str, Any], caption: str) -> dict[str, Any]:
    found = [e for e in m["elements"] if e["tag"] == "table" and e["before"].startswith(caption)]
    assert len(found) == 1, (caption, [e["before"] for e in m["elements"] if e["tag"] == "table"])
    return found[0]


def test_page_fits_1280px(page: Path, chromium: str) -> None:
    t0 = time.perf_counter()
    m = measure(chromium, page, width=1280)
    # less a vertical scrollbar, if any
    assert m["innerWidth"] == 1280 and 1250 <= m["clientWidth"] <= 1280, m
    assert not layout_problems(m), "\n".join(layout_problems(m))
    assert m["scrollWidth"] <= m["clientWidth"]
    width = m["clientWidth"]
    # text wraps inside its own box: nothing spills out of a paragraph or heading
    for e in m["elements"]:
        if e["tag"] in ("p", "h1", "h2", "figure", "section"):
            assert e["scrollWidth"] <= e["clientWidth"] + 1, e
        if e["tag"] == "img":
            assert e["complete"] and e["naturalWidth"] == 2400 and e["right"] <= width, e

    huge = _table(m, "Huge table")
    box = scroll_box(huge)
    # scrolls inside its own box ...
    assert box is not None and box["overflowX"] in ("auto", "scroll"), huge
    assert box["clientWidth"] <= width and box["right"] <= width, box  # ... which stays on the page
    # (and really is too wide)
    assert box["scrollWidth"] > box["clientWidth"] and huge["columns"] == 25, box

    for caption in ("Speed-like table", "Small table"):  # these fit: shown whole, nothing to scroll
        t = _table(m, caption)
        box = scroll_box(t)
        assert t["right"] <= width and t["clippedCells"] == 0, t
        assert box is None or box["scrollWidth"] <= box["clientWidth"], (caption, box)
    small = _table(m, "Small table")
    assert small["wrappedCells"] == 0, small  # not squeezed: every cell on one line
    assert small["width"] < width / 2, small  # at its natural width, not stretched
    speed = _table(m, "Speed-like table")
    assert speed["wrappedCells"] > 0  # it fits because its long ids and headers wrap
    widest = max(scroll_box(e)["scrollWidth"] if scroll_box(e) else e["width"]
                 for e in m["elements"] if e["tag"] == "table")
    print(f"measured in {time.perf_counter() - t0:.1f} s; widest table content {widest} px "
          f"in a {width}-px viewport")


def test_page_fits_800px(page: Path, chromium: str) -> None:
    """A narrower window: still nothing passes the right edge (the speed-like table now scrolls in
    its box)."""
    m = measure(chromium, page, width=800)
    assert m["innerWidth"] == 800
    assert not layout_problems(m), "\n".join(layout_problems(m))
