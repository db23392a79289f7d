"""Claim 1 — the learning rate: too small, about right, above 2/L (analytic study)."""

from __future__ import annotations

from pipeline.reporting import figures
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import analytic_study

KEY = "claim1"
NEEDS = "claim1"
TITLE = "Claim 1 — the learning rate: too small, about right, above 2/L"
INTRO = """Gradient descent w ← w − ε∇f on a quadratic converges for 0 < ε < 2/L; small ε crawls,
ε near 2/(L+μ) is fastest, ε between 1/L and 2/L overshoots and oscillates along the steep axis,
and ε > 2/L diverges. Each panel shows the level sets and the GD path."""


def section(ctx: Context) -> list[Section]:
    """One figure per function (a panel per ε), the prediction table and the verdict."""
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    got = analytic_study(ctx, "claim1", s)
    if got is None:
        return [s]
    meta, table, arrays = got
    for f in meta["figures"]:
        key = f["key"]
        path, rel = ctx.figure(f"claim1-{key}")
        paths = [(label, arrays[f"{key}/path{i}"]) for i, label in enumerate(f["labels"])]
        figures.gd_paths((arrays[f"{key}/x"], arrays[f"{key}/y"], arrays[f"{key}/f"]), paths,
                         f["title"], path)
        s.figure(rel, f["title"] + " — one panel per learning rate ε; the black square is the "
                                   "start.")
    s.table(table, ctx.save_table(table, "claim1-gd-paths"),
            "Predicted behaviour (from |1 − εL| and |1 − εμ|) and measured f − f* after the steps")
    bad = table[table["predicted"].astype(str).str.contains("disagrees")]
    diverged = table[table["predicted"].astype(str).str.contains("diverges")]
    n = len(table)
    s.verdict(
        f"agrees — {n - len(bad)} of {n} paths behave as max |1 − ελ| predicts (< 1 converges, "
         f"> 1 diverges: {len(diverged)} path(s) with ε > 2/L blow up, every other one converges)."
         if not len(bad) else
         f"DISAGREES on {len(bad)} of {n} paths (threshold: max |1 − ελ| < 1 ⇔ converges); see "
         "the table.")
    return [s]
