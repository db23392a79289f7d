"""The headline: per problem, optimizer × preprocessing → cost to each tolerance."""

from __future__ import annotations

import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import (
    device_columns,
    devices_in,
    one_device_as_before,
    seconds_header,
    speed_display,
    tol_text,
    with_percent,
    with_run_cells,
)

KEY = "headline"
NEEDS = "trained"
TITLE = "Headline — how fast each optimizer reaches the optimum"
INTRO = """Study `{study}`: per problem, every optimizer × preprocessing on the same objective (the
L2 penalty acts on the input-space weights, so each problem has one f*, from the reference stage).
Cost to a relative suboptimality (f − f*)/|f*| ≤ tol in iterations, passes over the data (one full
gradient = 1) and seconds (each run's own clock): measured where the run got there; otherwise
projected from the run's measured linear rate (≈, an extrapolation); 'never' where the measured
rate does not converge."""
CAPTION = """Cost to each tolerance (≈ projected at the run's measured linear rate — an
extrapolation, optimistic for GD, whose rate slows as the flattest directions take over; 'never':
the measured rate does not converge; 'stochastic': minibatch methods (SGD, minibatch Adam or
AdaGrad) level off at their step size's noise, no linear rate to project)"""
AFFINE = """Exact Newton is affine invariant: on one objective its steps do not depend on the
coordinates. GD's iterations follow the conditioning of ∇²f in the coordinates it runs in;
Newton-CG's inner CG iterations too, unless a preconditioner already absorbs it."""
SECOND_ORDER = ("newton", "newton_cg")


def headline_rows(ctx: Context) -> pd.DataFrame:
    """The headline table (typed): ``analysis.headline_table`` of the headline study."""
    return analysis.headline_table(ctx.speed, str(ctx.rep["headline_study"]), ctx.tols)


def factors(ctx: Context) -> pd.DataFrame:
    """Per problem and optimizer: each preprocessing's cost to the last tolerance against raw."""
    return analysis.coordinates_factors(ctx.speed, str(ctx.rep["headline_study"]), ctx.tols[-1])


def columns(ctx: Context, devices: int = 1) -> dict[str, str]:
    """Headline column → header; with runs from more than one device (``devices``), the device
    beside the seconds."""
    cols = {"run_id": "run", "status": "status", "iterations": "iters run",
            **device_columns(devices)}
    for tol in ctx.tols:
        t = analysis.tol_key(tol)
        cols |= {f"iters_to_{t}": f"iters to {tol_text(tol)}",
                 f"passes_to_{t}": f"passes to {tol_text(tol)}",
                 f"seconds_to_{t}": seconds_header(tol, devices)}
    return cols | {"test_accuracy": "test acc"}


def shown(ctx: Context, tab: pd.DataFrame) -> pd.DataFrame:
    """The headline table as shown: costs as text, run labels with tooltips, accuracy in %."""
    return with_percent(with_run_cells(ctx, speed_display(tab, ctx.tols)))


FACTOR_COLUMNS = {"data": "data", "model": "model", "optimizer": "optimizer",
                  "preprocess": "preprocess", "basis": "basis", "cg_iterations": "CG iterations",
                  "iterations_vs_raw": "iterations / raw", "passes_vs_raw": "passes / raw",
                  "kappa": "κ of ∇²f(w*)"}


def section(ctx: Context) -> list[Section]:
    """The headline table, the second-order check and the coordinates factors."""
    study = str(ctx.rep["headline_study"])
    s = Section(KEY, TITLE, " ".join(INTRO.split()).format(study=study))
    tab = headline_rows(ctx)
    if tab.empty:
        s.note(f"No runs of study {study!r} with a converged reference optimum; run `dvc repro`.")
        return [s]
    rel = ctx.save_table(one_device_as_before(tab), "headline")
    for (data, model), grp in tab.groupby(["data", "model"], sort=True):
        s.table(shown(ctx, grp), rel, f"{model} regression on {data}: " + " ".join(CAPTION.split())
                if data == tab["data"].iloc[0] else f"{model} regression on {data}",
                columns(ctx, devices_in(tab)))
    last = ctx.tols[-1]
    t_last = analysis.tol_key(last)
    second = tab[tab["optimizer"].isin(SECOND_ORDER)]
    if len(second):
        ok = second[f"basis_{t_last}"].eq("measured")
        s.text(f"Second-order runs reaching {tol_text(last)}: {int(ok.sum())} of {len(second)}"
               + ("." if ok.all() else " — DISAGREES with running them to their tolerance: "
                  + ", ".join(ctx.label(r) for r in second.loc[~ok, "run_id"]) + "."))
    fac = factors(ctx)
    if len(fac):
        cols = dict(FACTOR_COLUMNS)
        cols = {**{k: v for k, v in cols.items() if k != "cg_iterations"},
                f"iterations_to_{t_last}": "iterations", f"passes_to_{t_last}": "passes",
                "cg_iterations": "CG iterations"}
        order = ["data", "model", "optimizer", "preprocess", "basis", f"iterations_to_{t_last}",
                 "cg_iterations", f"passes_to_{t_last}", "iterations_vs_raw", "passes_vs_raw",
                 "kappa"]
        s.table(fac, ctx.save_table(fac, "whitening-factors"),
                f"One objective, other coordinates: cost to {tol_text(last)} of each "
                "preprocessing and its ratio to raw pixels (< 1: faster)",
                {k: cols[k] for k in order if k in cols})
        s.text(" ".join(AFFINE.split()))
    return [s]
