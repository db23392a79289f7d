"""Speed of every trained run: convergence figures not shown with a claim, and the speed table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.context import Context
from pipeline.reporting.convergence import add_problem_figures, problems
from pipeline.reporting.render import Cell, Section
from pipeline.reporting.sections.common import (
    device_columns,
    devices_in,
    one_device_as_before,
    seconds_header,
    speed_display,
    tol_text,
    with_run_cells,
)

KEY = "convergence"
NEEDS = "trained"
TITLE = "Speed of every trained run"
INTRO = """Suboptimality f − f* (log scale) against iterations, passes over the data and wall
time, and the gradient norm, one line per optimizer × preprocessing, for the studies no claim
above shows. A straight line on the log scale is linear convergence (GD, rate ≈ 1 − 1/κ); a
curve that bends down ever faster is Newton's quadratic convergence. f* comes from the reference
stage (see the last section)."""
RATES = """{n} GD run(s) converge at least as fast as the predicted 1 − 1/κ per iteration. Here
κ = L/μ with μ = λ_min(∇²f(w*)) in the run's coordinates and L = 1/ε the smoothness constant GD
used: with ε = 1/L from a global bound this κ exceeds the local κ of ∇²f(w*), and on a quadratic
the asymptotic rate is (1 − 1/κ)² — so a measured rate below the bound is expected."""
# speed-table columns shown when the speed table has them (column → header), after the rates
OPTIONAL_COLUMNS = {"rate_theory": "rate predicted (theory, reference file)",
                    "iters_predicted": "iters predicted"}


THEORY = """The column "rate predicted (theory)" is the reference file's linear rate for the
run's method in its coordinates, from μ and L of ∇²f(w*): GD with lr=auto 1 − μ/L_bound, GD with
ε = 1/L 1 − 1/κ, heavy ball (√κ − 1)/(√κ + 1), Nesterov 1 − 1/√κ (κ = L/μ); "—" where it is
unknown (μ ≤ 0, or a Hessian too large to form); "n/a" for methods without a linear-rate
prediction. "rate measured" fits f − f*, which on a quadratic contracts at up to the square of
the iterate's rate, so a measured rate below the predicted one is expected."""


def theory_cells(ctx: Context, speed: pd.DataFrame) -> list[Cell]:
    """The predicted-rate column as page text: 6 significant digits, "—" where unknown for a
    linearly converging method, "n/a" for the others."""
    out = []
    for rid, v in zip(speed["run_id"], speed["rate_theory"], strict=True):
        linear = analysis.optimizer_name(ctx.runs, str(rid)) in analysis.LINEAR_METHODS
        text = f"{float(v):.6g}" if np.isfinite(v) else ("—" if linear else "n/a")
        out.append(Cell(text, numeric=True))
    return out


def columns(ctx: Context, present: set[str], devices: int = 1) -> dict[str, str]:
    """Speed-table column → header: the fixed ones, then every optional column present; with
    runs from more than one device (``devices``), the device beside the seconds."""
    cols = {"run_id": "run", "status": "status", "iterations": "iterations",
            **device_columns(devices)}
    for tol in ctx.tols:
        t = analysis.tol_key(tol)
        cols[f"projected_iters_to_{t}"] = f"iters to {tol_text(tol)}"
        cols[f"seconds_to_{t}"] = seconds_header(tol, devices)
    cols |= {"kappa": "κ of ∇²f(w*)", "kappa_gd": "κ for GD = 1/(εμ)",
             "rate_measured": "rate measured", "rate_predicted": "1 − 1/κ",
             "rate_check": "theory check"}
    return cols | {k: v for k, v in OPTIONAL_COLUMNS.items() if k in present}


def section(ctx: Context) -> list[Section]:
    """Figures of the problems no claim draws, notes on f*, the speed table."""
    if not ctx.has_runs:
        return []
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    trained = ctx.rep["trained_studies"]
    shown = {str(n) for n in [*trained["newton_vs_gd"], *(trained.get("adam") or [])]}
    add_problem_figures(ctx, s, [p for p in problems(ctx) if p[0] not in shown],
                        "Study {study}: {model} regression on {data} — f − f* and ‖∇f‖ against "
                        "iteration, passes over the data and wall time.")
    for n in ctx.ref_notes:
        s.note(n)
    speed = ctx.speed
    if speed.empty:
        s.note("No run has a converged reference optimum yet: no speed table (run `dvc repro`).")
        return [s]
    devices = devices_in(speed)
    rel = ctx.save_table(one_device_as_before(speed), "speed")
    shown_tab = with_run_cells(ctx, speed_display(speed, ctx.tols,
                                                  kinds=("projected_iters", "seconds")))
    if "rate_theory" in speed:
        shown_tab["rate_theory"] = theory_cells(ctx, speed)
    s.table(shown_tab, rel, "Speed: iterations and seconds to relative suboptimality "
            "(f − f*)/|f*| ≤ tol (≈ = projected at the run's measured rate; – = not reached; the "
            "CSV has passes too, and a reached/projected column per tolerance)",
            columns(ctx, set(speed.columns), devices))
    dis = speed[speed["rate_check"].str.startswith("DISAGREES")]
    if len(dis):
        s.note(f"{len(dis)} GD run(s) DISAGREE with the bound f − f* ≤ (1 − 1/κ)ᵏ(f₀ − f*): "
               + ", ".join(ctx.label(r) for r in dis["run_id"]) + ". Possible causes: f* not "
               "tight, ε ≠ 1/L with L the local curvature, or the run stopped before the "
               "asymptotic regime.")
    if "rate_theory" in speed:
        s.text(" ".join(THEORY.split()))
    ok = speed[speed["rate_check"].str.startswith("agrees")]
    if len(ok):
        s.text(" ".join(RATES.split()).format(n=len(ok)))
    return [s]
