"""Suboptimality curves of trained runs: the long table behind every convergence figure and the
``plots/convergence-<problem>.csv`` files DVC plots.

f − f* is computed in one place, ``analysis.suboptimality``; this module only selects, labels and
thins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.context import Context, slug
from pipeline.reporting.render import Section
from pipeline.store.writer import write_text

PLOT_POINTS = 400  # rows of a history drawn per curve (the first, the last, and log-spaced between)
PLOT_COLUMNS = ["run", "optimizer", "preprocess", "iteration", "passes", "subopt", "rel_subopt"]


def thin(hist: pd.DataFrame, n: int = PLOT_POINTS) -> pd.DataFrame:
    """At most ``n`` rows of a history: log-spaced in the row index, first and last kept."""
    if len(hist) <= n:
        return hist
    idx = np.unique(np.concatenate([[0, len(hist) - 1],
                                    np.geomspace(1, len(hist) - 1, n - 2).astype(np.int64)]))
    return hist.iloc[idx]


def curves(ctx: Context, rids: list[str], with_f_star: bool = True) -> pd.DataFrame:
    """Long table of the runs' histories (thinned) with ``subopt`` = f − f* where f* is known,
    labelled by run (short label), optimizer, preprocessing (with λ when the runs' λ differ)."""
    runs = ctx.runs
    if runs is None:
        return pd.DataFrame()
    parts = []
    several_l2 = len({runs.runs.loc[x, "l2"] for x in rids}) > 1
    for rid in rids:
        h = runs.histories.get(rid)
        if h is None or len(h) == 0:
            continue
        oid = analysis.objective_of(runs, rid)
        ref = ctx.refs.get(oid) if (oid and with_f_star) else None
        h = analysis.suboptimality(h, ref.f_star) if ref else h.assign(subopt=np.nan)
        r = runs.runs.loc[rid]
        pre = str(r["preprocess"]) + (f", λ={r['l2']:g}" if several_l2 else "")
        parts.append(thin(h).assign(run=ctx.label(rid), run_id=rid, optimizer=str(r["optimizer"]),
                                    preprocess=pre, model=str(r["model"])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def plot_table(ctx: Context, rids: list[str]) -> pd.DataFrame:
    """Every history row of the runs with a certified f*, in the DVC plots' long format (rows with
    f − f* ≤ 0 dropped)."""
    runs = ctx.runs
    parts = []
    for rid in rids if runs is not None else []:
        oid = analysis.objective_of(runs, rid)
        ref = ctx.refs.get(oid) if oid else None
        h = runs.histories.get(rid)
        if ref is None or not ref.certified or h is None or len(h) == 0:
            continue
        raw = h["loss"].to_numpy(np.float64) - ref.f_star
        sub = analysis.suboptimality(h, ref.f_star)[raw > 0]
        r = runs.runs.loc[rid]
        passes = sub["passes"] if "passes" in sub else np.nan
        parts.append(pd.DataFrame({
            "run": ctx.label(rid), "optimizer": str(r["optimizer"]),
            "preprocess": str(r["preprocess"]), "iteration": sub["iteration"].astype(np.int64),
            "passes": passes, "subopt": sub["subopt"], "rel_subopt": sub["rel_subopt"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PLOT_COLUMNS)


def write_plot_files(ctx: Context, plots_dir: Path) -> list[Path]:
    """``<plots_dir>/convergence-<study>-<data>-<model>.csv`` for every problem of the headline
    study; the paths written."""
    if ctx.runs is None:
        return []
    df = ctx.runs.runs
    study = str(ctx.rep["headline_study"])
    written = []
    for (data, model), grp in df[df["study"] == study].groupby(["data", "model"], sort=True):
        tab = plot_table(ctx, list(grp.index))
        if tab.empty:
            continue
        path = plots_dir / f"convergence-{slug(study, data, model)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, tab.to_csv(index=False))
        written.append(path)
    return written


def problems(ctx: Context, studies: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(study, data, model) of the runs with a certified f* (optionally only ``studies``)."""
    if ctx.runs is None:
        return []
    out = []
    for key, grp in ctx.runs.runs.groupby(["study", "data", "model"], sort=True):
        if studies is not None and str(key[0]) not in studies:
            continue
        if str(key[2]) in analysis.NONCONVEX:
            continue
        oids = {analysis.objective_of(ctx.runs, r) for r in grp.index}
        if any(o in ctx.refs and ctx.refs[o].certified for o in oids):
            out.append((str(key[0]), str(key[1]), str(key[2])))
    return out


def draw_problem(ctx: Context, study: str, data: str, model: str) -> str | None:
    """The convergence figure of one problem (every run of it); its relative path."""
    from pipeline.reporting import figures

    df = ctx.runs.runs
    rids = list(df[(df["study"] == study) & (df["data"] == data) & (df["model"] == model)].index)
    cur = curves(ctx, rids)
    if cur.empty:
        return None
    path, rel = ctx.figure(f"convergence-{study}-{data}-{model}")
    figures.convergence(cur, f"{model} regression on {data} (study {study})", path)
    return rel


def objectives_note(ctx: Context, study: str, data: str, model: str) -> str | None:
    """A note when one problem's runs minimize several objectives (penalty space or λ differ)."""
    df = ctx.runs.runs
    rids = df[(df["study"] == study) & (df["data"] == data) & (df["model"] == model)].index
    oids = {analysis.objective_of(ctx.runs, r) for r in rids}
    if len(oids) < 2:
        return None
    return (f"{model} on {data} (study {study}): {len(oids)} objectives — the penalty acts on "
            "other coordinates (preprocess.penalty_space=transformed) or λ differs, so these runs "
            "have different f*; compare rates, not loss values.")


def add_problem_figures(ctx: Context, s: Section, found: list[tuple[str, str, str]],
                        caption: str) -> None:
    """One convergence figure per (study, data, model) into ``s`` (``caption`` formatted with
    them), and the note where a problem's runs minimize several objectives."""
    for study, data, model in found:
        rel = draw_problem(ctx, study, data, model)
        if rel:
            s.figure(rel, caption.format(study=study, data=data, model=model))
        note = objectives_note(ctx, study, data, model)
        if note:
            s.note(note)
