"""Layout measurements of an HTML page rendered in headless Chromium (no selenium / playwright).

``measure(chromium, page, width=1280)`` copies the page into a temporary folder with a ``<base>``
pointing back at the page's own folder (so its figures still load) and an injected script that, on
``load``, measures the layout and writes it as JSON (base64) into the DOM; ``chromium --headless
--dump-dom`` prints that DOM and the JSON is read back. The result::

    {"innerWidth": 1280, "clientWidth": 1280, "scrollWidth": 1280, "scrollbar": 0,
     "elements": [{"tag": "table", "text": "...", "right": 1230.0, "width": ..., "scrollWidth": ...,
                   "clientWidth": ..., "overflowX": "visible", "clipped": false, "scroller": {...} |
                   null,
                   "wrappedCells": 0, "cells": 25, "section": "speed", "before": "<caption p>"},
                   ...]}

``clientWidth`` is the layout viewport less a vertical scrollbar (the width the page may use);
``scrollbar`` = innerWidth − clientWidth. For each element, ``scroller`` is its nearest ancestor
(below <body>) that clips or scrolls horizontally (its right edge, clientWidth, scrollWidth), or
null: an element inside a scroller may extend past the page, the scroller may not.
``layout_problems(m)`` lists what sticks out of the page (empty = every element fits).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

TAGS = (
    "table",
    "figure",
    "img",
    "pre",
    "p",
    "section",
    "h1",
    "h2",
    "h3",
    "nav",
    "ul",
    "div",
    "code",
)

_SCRIPT = r"""
<script>
window.addEventListener("load", function () {
  var de = document.documentElement, tags = %(tags)s;
  function clipper(el) {
    for (var a = el.parentElement; a && a !== document.body && a !== de; a = a.parentElement) {
      var ox = getComputedStyle(a).overflowX;
      if (ox !== "visible") {
        var r = a.getBoundingClientRect();
        return {tag: a.tagName.toLowerCase(), cls: a.className, overflowX: ox, right: r.right,
                clientWidth: a.clientWidth, scrollWidth: a.scrollWidth};
      }
    }
    return null;
  }
  function wrapped(cell) {  // a cell whose text is laid out on more than one line
    var rg = document.createRange(); rg.selectNodeContents(cell);
    var tops = {}, n = 0, rs = rg.getClientRects();
    for (var i = 0; i < rs.length; i++) {
      var t = Math.round(rs[i].top);
      if (!(t in tops)) { tops[t] = 1; n++; }
    }
    return n > 1;
  }
  var out = [];
  document.querySelectorAll(tags.join(",")).forEach(function (el) {
    if (el.id === "__layout__") return;
    var r = el.getBoundingClientRect(), cs = getComputedStyle(el), sec = el.closest("section");
    var text = (el.textContent || el.alt || el.src || "").trim().slice(0, 80);
    var rec = {tag: el.tagName.toLowerCase(), cls: el.className || "", text: text,
               section: sec ? sec.id : null, left: r.left, right: r.right, width: r.width,
               scrollWidth: el.scrollWidth, clientWidth: el.clientWidth, overflowX: cs.overflowX,
               display: cs.display, scroller: clipper(el)};
    for (var n = el; n && n !== document.body && !n.previousElementSibling; n = n.parentElement) {}
    var prev = n && n.previousElementSibling;
    rec.before = prev ? prev.textContent.trim().slice(0, 80) : "";
    if (rec.tag === "table") {
      var cells = el.querySelectorAll("th,td"), w = 0, clippedCells = 0;
      cells.forEach(function (c) {
        if (wrapped(c)) w++;
        if (c.scrollWidth > c.clientWidth + 1) clippedCells++;
      });
      rec.cells = cells.length; rec.wrappedCells = w; rec.clippedCells = clippedCells;
      var rows = el.rows; rec.columns = rows.length ? rows[0].cells.length : 0;
    }
    if (rec.tag === "img") { rec.naturalWidth = el.naturalWidth; rec.complete = el.complete; }
    out.push(rec);
  });
  var res = {innerWidth: window.innerWidth, clientWidth: de.clientWidth,
             scrollWidth: de.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
             scrollbar: window.innerWidth - de.clientWidth,
             devicePixelRatio: window.devicePixelRatio, elements: out};
  var m = document.createElement("meta"); m.id = "__layout__"; m.name = "x-layout";
  m.content = btoa(unescape(encodeURIComponent(JSON.stringify(res))));
  document.head.appendChild(m);
});
</script>
"""


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or ``chromium-browser``) on PATH, else None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _flags(profile: Path, width: int, height: int) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", f"--user-data-dir={profile}", f"--window-size={width},{height}"]


def measure(chromium: str, page: Path, width: int = 1280, height: int = 2000,
            tags: tuple[str, ...] = TAGS, timeout: float = 120) -> dict[str, Any]:
    """Render ``page`` at ``width`` × ``height`` and return the layout measurements (see module
    doc)."""
    page = Path(page).resolve()
    src = page.read_text(encoding="utf-8")
    base = f'<base href="{html.escape(page.parent.as_uri())}/">'
    script = _SCRIPT % {"tags": json.dumps(list(tags))}
    src = re.sub(r"<head([^>]*)>", lambda m: f"<head{m.group(1)}>{base}", src, count=1)
    src = src.replace("</body>", script + "</body>", 1) if "</body>" in src else src + script
    with tempfile.TemporaryDirectory(prefix="curvlab-layout-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(src, encoding="utf-8")
        proc = subprocess.run(
            [chromium, *_flags(Path(tmp) / "profile", width, height), "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LANG": "C.UTF-8"},
        )
    found = re.search(r'<meta[^>]*id="__layout__"[^>]*content="([A-Za-z0-9+/=]+)"', proc.stdout)
    if found is None:
        raise RuntimeError(f"no layout measurements in chromium's DOM (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(base64.b64decode(found.group(1)).decode("utf-8"))


def layout_problems(m: dict[str, Any], tol: float = 0.5) -> list[str]:
    """What does not fit the page: horizontal page scroll; elements (outside a scroller) whose box
    or visible
    content passes the viewport's right edge (clientWidth); scrollers that do; tables cut off by a
    box that
    does not scroll."""
    page = m["clientWidth"]
    out = []
    if m["scrollWidth"] > page:
        out.append(f"the page scrolls horizontally: scrollWidth {m['scrollWidth']} > clientWidth "
                   f"{page}")
    for e in m["elements"]:
        sc = e["scroller"]
        if sc is None and e["right"] > page + tol:
            out.append(f"<{e['tag']}> in #{e['section']} ends at {e['right']:.0f} px > {page}: "
                       f"{e['text'][:60]!r}")
        if (
            sc is None
            and e["overflowX"] == "visible"
            and e["tag"] != "img"
            and e["left"] + e["scrollWidth"] > page + tol
        ):
            out.append(f"the content of <{e['tag']}> in #{e['section']} reaches "
                       f"{e['left'] + e['scrollWidth']:.0f} px "
                       f"> {page}: {e['text'][:60]!r}")
        if sc is not None and sc["right"] > page + tol:
            out.append(f"scroller <{sc['tag']} class={sc['cls']!r}> of <{e['tag']}> in "
                       f"#{e['section']} ends at "
                       f"{sc['right']:.0f} px > {page}")
        box = scroll_box(e) if e["tag"] == "table" else None
        if (
            box is not None
            and box["scrollWidth"] > box["clientWidth"] + 1
            and box["overflowX"] not in ("auto", "scroll")
        ):
            out.append(f"<table> in #{e['section']} is cut off (overflow-x: {box['overflowX']}, "
                       f"{box['scrollWidth']} px in a {box['clientWidth']}-px box): "
                       f"{e['before'][:60]!r}")
    return out


def scroll_box(e: dict[str, Any]) -> dict[str, Any] | None:
    """The box an element is clipped / scrolled in: itself when it scrolls (overflow-x not visible),
    else its
    nearest scrolling ancestor, else None (it lies on the page itself)."""
    if e["overflowX"] != "visible":
        return {"tag": e["tag"], "cls": e["cls"], "overflowX": e["overflowX"], "right": e["right"],
                "clientWidth": e["clientWidth"], "scrollWidth": e["scrollWidth"]}
    return e["scroller"]


def dump_dom(chromium: str, url: str, profile: Path, width: int = 1600, height: int = 900,
             budget_ms: int = 25000, timeout: float = 180) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time (a single-page app has rendered),
    in a fresh browser profile (nothing remembered from earlier visits)."""
    proc = subprocess.run(
        [chromium, *_flags(profile, width, height), f"--virtual-time-budget={budget_ms}",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "LANG": "C.UTF-8"})
    return proc.stdout
