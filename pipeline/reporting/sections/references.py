"""Reference optima f*: one certified minimum per objective (the reference stage)."""

from __future__ import annotations

from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.store.references import reference_table

KEY = "reference"
NEEDS = "trained"
TITLE = "Reference optima f*"
INTRO = """Each objective has its own minimum f*, computed once by the reference stage (`python -m
pipeline.reference`): damped Newton (or Newton-CG) to ‖∇f‖ ≤ reference.tol, stopped on that
tolerance and an iteration cap only. With preprocess.penalty_space=input every preprocessing of a
data set minimizes the same objective, so one solve serves all of them; where the Hessian fits
densely w* is mapped into each coordinate system (f here: f there, the same f*) and κ =
λ_max/λ_min of the regularized ∇²f(w*) is given per coordinates."""
COLUMNS = {"objective": "objective", "coordinates": "coordinates", "method": "method",
           "status": "status", "iterations": "steps", "f_star": "f*", "grad_norm": "‖∇f‖",
           "f_here": "f here", "mu": "μ", "L_local": "L at w*", "kappa": "κ",
           "L_bound": "L bound", "seconds": "s"}


def section(ctx: Context) -> list[Section]:
    """The table of every reference optimum file."""
    if not ctx.has_runs:
        return []
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    tab = reference_table(dict(ctx.all_refs))
    if tab.empty:
        s.note(f"No reference optima under {ctx.paths['reference_dir']}; run `dvc repro`.")
        return [s]
    s.table(tab, ctx.save_table(tab, "reference-optima"), "f* per objective, κ per coordinates",
            COLUMNS)
    bad = tab[tab["status"] != "converged"]
    if len(bad):
        s.note(f"{bad['objective'].nunique()} reference solve(s) did not converge (DISAGREES "
               "with a certified f*): " + ", ".join(sorted(set(bad["objective"]))))
    return [s]
