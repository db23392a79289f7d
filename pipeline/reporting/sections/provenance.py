"""Provenance: the code version, each study's preset and where each run's MLflow page is."""

from __future__ import annotations

from pipeline.reporting.context import Context
from pipeline.reporting.render import Cell, Section

KEY = "provenance"
NEEDS = None
TITLE = "Provenance"
INTRO = """What produced this page: the code version, the configuration of each study (its preset,
`conf/experiment/<study>.yaml`) and the MLflow store the run links point into."""


def section(ctx: Context) -> list[Section]:
    """Git commit, tracking URI and one row per study with its preset and run count."""
    p = ctx.provenance
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    s.text(f"Code: git commit `{p.get('git_commit') or 'unknown'}`.")
    if p.get("tracking_uri"):
        ui = p.get("mlflow_ui")
        how = ("" if p.get("ui_is_server") else
               f" (start the UI with `mlflow ui --backend-store-uri {p['tracking_uri']}`)")
        s.text(f"MLflow: tracking URI `{p['tracking_uri']}`; run links open {ui}{how}.")
    if ctx.runs is None:
        return [s]
    import pandas as pd

    rows = []
    for study, grp in ctx.runs.runs.groupby("study", sort=True):
        for name, link in (p.get("presets") or {}).get(str(study)) or [("–", None)]:
            rows.append({"study": str(study), "runs": len(grp),
                         "preset": Cell(name, link or "", link)})
    tab = pd.DataFrame(rows)
    csv = tab.assign(preset=[c.text for c in tab["preset"]])
    s.table(tab, ctx.save_table(csv, "provenance"), "Studies in this page and their presets")
    return [s]
