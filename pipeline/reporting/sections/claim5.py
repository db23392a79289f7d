"""Claim 5 — Newton vs gradient descent: quadratic against linear convergence."""

from __future__ import annotations

import pandas as pd

from pipeline.config.schemas import PreprocessConfig
from pipeline.reporting import analysis
from pipeline.reporting.context import Context
from pipeline.reporting.convergence import add_problem_figures, problems
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import (
    cost_text,
    speed_display,
    tol_text,
    with_percent,
    with_run_cells,
)

KEY = "claim5"
NEEDS = "trained"
TITLE = "Claim 5 — Newton vs gradient descent"
INTRO = """Newton's step w ← w − H⁻¹∇f uses the curvature, so near w* the error squares each
iteration (quadratic convergence, independent of κ), while GD's shrinks by a constant factor
(linear convergence). Each Newton step costs more; the table weighs iterations against passes
and wall time, on raw and preprocessed inputs."""
PENALTY = """Where the L2 penalty acts: with preprocess.penalty_space=input (the default) every
preprocessing minimizes the raw pixels' objective λ/2‖W_x‖² — same f*, same accuracy, only the
conditioning changes; `*_transformed` penalizes the transformed weights λ/2‖W_z‖² instead,
another objective with its own f* and accuracy."""
SECOND_ORDER = ("newton", "newton_cg")


def penalty_contrast(ctx: Context, studies: list[str]) -> pd.DataFrame:
    """One row per run of ``studies``: preprocess, penalty space, optimizer, final f, accuracy."""
    rows = []
    for rid, r in ctx.runs.runs.iterrows():
        if str(r.get("study")) not in studies:
            continue
        pre = ctx.runs.configs.get(rid, {}).get("preprocess", {})
        space = pre.get("penalty_space", PreprocessConfig.penalty_space) if isinstance(
            pre, dict) else "?"
        rows.append({"study": r.get("study"), "preprocess": r.get("preprocess"),
                     "penalty_space": space, "optimizer": r.get("optimizer"),
                     "objective": r.get("objective"), "status": r.get("status"),
                     "final_f": r.get("train_loss"), "test_accuracy": r.get("test_accuracy"),
                     "iterations": r.get("iterations")})
    df = pd.DataFrame(rows)
    if len(df) == 0 or "transformed" not in set(df["penalty_space"]):
        return pd.DataFrame()
    return df.sort_values(["study", "optimizer", "penalty_space", "preprocess"]).reset_index(
        drop=True)


def verdict(ctx: Context, sp: pd.DataFrame) -> str:
    """Per problem, on raw inputs: the second-order method's iterations to the last tolerance
    against GD's (whitened GD is itself a Newton step on a quadratic, so it is not the foil)."""
    t = analysis.tol_key(ctx.tols[-1])
    worst = None
    n = 0
    for _, grp in sp[sp["preprocess"] == "none"].groupby(["study", "data", "model"], sort=True):
        second = grp[grp["optimizer"].isin(SECOND_ORDER) & (grp[f"basis_{t}"] == "measured")]
        gd = grp[grp["optimizer"] == "gd"]
        if second.empty or gd.empty:
            continue
        n += 1
        a = second.sort_values(f"projected_iters_to_{t}").iloc[0]
        b = gd.sort_values(f"projected_iters_to_{t}").iloc[0]
        ratio = float(b[f"projected_iters_to_{t}"]) / float(a[f"projected_iters_to_{t}"])
        if worst is None or ratio < worst[0]:
            worst = (ratio, a, b)
    if worst is None:
        return ("not decided — no problem has both a converged second-order run and a GD run "
                "on raw inputs.")
    ratio, a, b = worst
    word = "agrees" if ratio > 1 else "DISAGREES"
    return (f"{word} — on raw inputs, on each of {n} problem(s), a second-order method reaches "
            f"{tol_text(ctx.tols[-1])} in fewer iterations than GD (threshold: GD / Newton "
            f"iterations > 1; the smallest ratio is {ratio:.3g}): `{ctx.label(a['run_id'])}` in "
            f"{cost_text(a[f'projected_iters_to_{t}'], a[f'basis_{t}'])} against "
            f"`{ctx.label(b['run_id'])}` in "
            f"{cost_text(b[f'projected_iters_to_{t}'], b[f'basis_{t}'])} (GD's iterations "
            f"{'projected' if b[f'basis_{t}'] == 'projected' else 'measured'}).")


def section(ctx: Context) -> list[Section]:
    """Convergence figures of the claim's studies, their speed rows, the penalty contrast."""
    names = [str(n) for n in ctx.rep["trained_studies"]["newton_vs_gd"]]
    sp = ctx.speed[ctx.speed["study"].isin(names)] if len(ctx.speed) else ctx.speed
    if sp is None or len(sp) == 0:
        return []
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    add_problem_figures(ctx, s, problems(ctx, names),
                        "{model} regression on {data} (study {study}): f − f* and ‖∇f‖ against "
                        "iterations, passes over the data and wall time.")
    costs = [f"{k}_to_{analysis.tol_key(t)}" for t in ctx.tols
             for k in ("iters", "passes", "seconds")]
    cols = ["run_id", "model", "optimizer", "preprocess", "iterations", "status",
            "train_time_s", *costs, "rate_measured"]
    shown = ["run_id", "iterations", "status", "train_time_s", *costs, "rate_measured"]
    basis = [f"basis_{analysis.tol_key(t)}" for t in ctx.tols]
    s.table(with_run_cells(ctx, speed_display(sp[cols + basis], ctx.tols))[shown],
            ctx.save_table(sp[cols], "claim5-newton-vs-gd"),
            "Iterations, passes over the data and seconds to each tolerance (measured; – = not "
            "reached)")
    contrast = penalty_contrast(ctx, names)
    if len(contrast):
        s.text(" ".join(PENALTY.split()))
        s.table(with_percent(contrast), ctx.save_table(contrast, "claim5-penalty-space"),
                "Same objective vs penalty on the transformed weights (final f ≈ f* for "
                "converged runs)")
    s.verdict(verdict(ctx, sp))
    return [s]
