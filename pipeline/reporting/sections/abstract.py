"""The abstract: the answers in numbers, every number the text of a table cell on the page."""

from __future__ import annotations

import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section, fmt
from pipeline.reporting.sections.accuracy import best_row, table
from pipeline.reporting.sections.common import cost_text, pct, tol_text
from pipeline.reporting.sections.headline import factors, headline_rows

KEY = "abstract"
NEEDS = "trained"
TITLE = "Abstract"
FASTEST = """{model} regression on `{data}`: {optimizer} on {preprocess} inputs reaches {tol}
fastest — {iters} {iteration_s}, {passes} passes over the data, {secs} s{versus}."""
VERSUS = "; the best GD run ({preprocess} inputs) would need {iters} iterations ({secs} s)"
PREPROCESS = """Against raw inputs, GD on {problem} needs {ratios} the iterations to {tol}, and
Newton-CG {cg_ratios} — same objective, other coordinates."""
ACCURACY = """The best {data} classifier ({optimizer} on {preprocess} inputs) scores {acc} test
accuracy against the published {reference}."""


def _pick(grp: pd.DataFrame, t: str) -> pd.Series:
    """The row reaching the tolerance in the fewest seconds (measured first, then projected)."""
    measured = grp[grp[f"basis_{t}"] == "measured"]
    pool = measured if len(measured) else grp
    return pool.sort_values(f"seconds_to_{t}", kind="stable").iloc[0]


def fastest_lines(ctx: Context, tab: pd.DataFrame) -> list[str]:
    """One sentence per problem: the fastest method to the last tolerance, and GD's cost."""
    tol = ctx.tols[-1]
    t = analysis.tol_key(tol)
    lines = []
    for (data, model), grp in tab.groupby(["data", "model"], sort=True):
        best = _pick(grp, t)
        cell = {k: cost_text(best[f"{k}_to_{t}"], best[f"basis_{t}"])
                for k in ("iters", "passes", "seconds")}
        gd = grp[grp["optimizer"] == "gd"]
        versus = ""
        if len(gd) and best["optimizer"] != "gd":
            g = gd.sort_values(f"iters_to_{t}", kind="stable").iloc[0]
            versus = VERSUS.format(preprocess=g["preprocess"],
                                   iters=cost_text(g[f"iters_to_{t}"], g[f"basis_{t}"]),
                                   secs=cost_text(g[f"seconds_to_{t}"], g[f"basis_{t}"]))
        lines.append(" ".join(FASTEST.split()).format(
            model=str(model).capitalize(), data=data, optimizer=best["optimizer"],
            preprocess=best["preprocess"], tol=tol_text(tol),
            iters=cell["iters"], passes=cell["passes"], secs=cell["seconds"], versus=versus,
            iteration_s="iteration" if cell["iters"] == "1" else "iterations"))
    return lines


def preprocess_line(ctx: Context) -> str | None:
    """What each preprocessing does to GD's and Newton-CG's iterations on the configured data."""
    fac = factors(ctx)
    data = str(ctx.rep["conditioning"]["data"])
    fac = fac[(fac["data"] == data) & (fac["preprocess"] != "none")] if len(fac) else fac
    if fac.empty:
        return None
    parts = {}
    for opt in ("gd", "newton_cg"):
        rows = fac[fac["optimizer"] == opt]
        parts[opt] = ", ".join(f"{fmt(r['iterations_vs_raw'])}× ({r['preprocess']})"
                               for _, r in rows.iterrows()) or "–"
    return " ".join(PREPROCESS.split()).format(
        problem=f"`{data}`", ratios=parts["gd"], cg_ratios=parts["newton_cg"],
        tol=tol_text(ctx.tols[-1]))


def accuracy_line(ctx: Context) -> str | None:
    """The best classifier on the configured data against its published reference point."""
    acc = table(ctx)
    if acc.empty:
        return None
    best = best_row(ctx, acc)
    if not best["reference"]:
        return None
    return " ".join(ACCURACY.split()).format(
        data=str(ctx.rep["conditioning"]["data"]), optimizer=best["optimizer"],
        preprocess=best["preprocess"],
        acc=pct(best["test_accuracy"]), reference=best["reference"])


def section(ctx: Context) -> list[Section]:
    """Three to six sentences: per problem the fastest method, preprocessing, accuracy."""
    tab = headline_rows(ctx)
    if tab.empty:
        return []
    lines = fastest_lines(ctx, tab)[:4]
    lines += [x for x in (preprocess_line(ctx), accuracy_line(ctx)) if x]
    s = Section(KEY, TITLE, "")
    s.abstract(" ".join(lines))
    return [s]
