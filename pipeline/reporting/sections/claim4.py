"""Claim 4 — bad initialization: the squared loss's gradient vanishes, the log-loss's does not."""

from __future__ import annotations

import numpy as np

from pipeline.reporting import figures
from pipeline.reporting.context import Context
from pipeline.reporting.convergence import curves
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import pct, with_percent, with_run_cells

KEY = "claim4"
NEEDS = "trained"
TITLE = "Claim 4 — bad initialization and the attenuated gradient"
INTRO = """With a sigmoid output and the squared loss, ∂f/∂z = (σ(z) − y)·σ(z)(1 − σ(z)): from a
saturated start σ′ ≈ 0, the gradient vanishes and GD barely moves. The log-loss gradient σ(z) − y
has no σ′ factor and recovers at once."""
GAP = 0.05  # log-loss must beat the squared loss by 5 points of test accuracy
COLUMNS = ["run_id", "model", "optimizer", "preprocess", "iterations", "status", "train_loss",
           "grad_norm", "train_accuracy", "test_accuracy"]


def section(ctx: Context) -> list[Section]:
    """Loss curves from the saturated start, the start/end table and the verdict."""
    name = str(ctx.rep["trained_studies"]["bad_init"])
    df = ctx.runs.runs[ctx.runs.runs["study"] == name] if ctx.runs is not None else None
    if df is None or df.empty:
        return []
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    cur = curves(ctx, list(df.index), with_f_star=False)
    if not cur.empty:
        path, rel = ctx.figure(f"claim4-{name}")
        figures.loss_curves(cur, f"Saturated start: squared loss vs log-loss (study {name})",
                            path, hue="model")
        s.figure(rel, "Training loss and gradient norm from the same saturated initialization.")
    hist = ctx.runs.histories
    tab = df[COLUMNS].copy()
    tab.insert(5, "grad_norm_start", [float(hist[r]["grad_norm"].iloc[0]) if r in hist
                                      else np.nan for r in tab["run_id"]])
    tab.insert(6, "loss_start", [float(hist[r]["loss"].iloc[0]) if r in hist else np.nan
                                 for r in tab["run_id"]])
    s.table(with_percent(with_run_cells(ctx, tab)), ctx.save_table(tab, f"claim4-{name}"),
            "Start and end of each run")
    acc = tab.set_index("model")["test_accuracy"]
    if {"logistic", "logistic_mse"} <= set(acc.index):
        a_ce, a_mse = float(acc["logistic"].max()), float(acc["logistic_mse"].max())
        word = "agrees" if a_ce > a_mse + GAP else "DISAGREES (check init_scale)"
        s.verdict(f"{word} — after the same budget the log-loss reaches {pct(a_ce)} test "
                  f"accuracy, the squared loss {pct(a_mse)} (threshold: log-loss ahead by more "
                  f"than {GAP * 100:.0f} points).")
    else:
        s.verdict("not decided — the study lacks a logistic or a logistic_mse run.")
    return [s]
