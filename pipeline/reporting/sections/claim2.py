"""Claim 2 — spherical vs ellipsoidal level sets: GD iterations grow linearly in κ (analytic),
accelerated methods as √κ (the per-method panel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.reporting import figures
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import analytic_study
from pipeline.store.reading import DataError
from pipeline.store.studies import read_study_tables

KEY = "claim2"
NEEDS = "claim2"
TITLE = "Claim 2 — spherical vs ellipsoidal level sets (condition number κ)"
INTRO = """On least squares the Hessian is (1/n) X̃ᵀX̃; GD with ε = 1/L needs about κ·log(1/tol)
iterations, so elongated (ellipsoidal) level sets slow it down linearly in κ. Whitening makes the
Hessian the identity — spherical level sets — and one step with ε = 1 lands on the minimum."""
METHODS = """The same family of raw least-squares problems (λ = 0, L and μ exact) for every
method: GD with ε = 1/L needs O(κ) iterations, heavy ball and Nesterov with their optimal
parameters O(√κ), L-BFGS fewer still, Newton one step whatever κ. The slope of log(iterations)
against log κ reads the power of κ off the data."""
SLOPE_RANGE = (0.7, 1.3)  # log–log slope of iterations against κ read as "linear in κ"
# log–log slope of iterations against κ read as "the method's power of κ", per method
METHOD_SLOPES = {"gd": (0.7, 1.3), "heavy_ball": (0.3, 0.7), "nesterov": (0.3, 0.7)}
SLOPE_COLUMNS = {"method": "method", "slope": "log–log slope", "expected": "expected",
                 "points": "points (κ > 1.5)", "kappa_min": "κ min", "kappa_max": "κ max",
                 "all_converged": "all converged"}


def method_tables(ctx: Context, meta: dict[str, Any], s: Section
                  ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame] | None:
    """(method → iterations table, slopes table) named in study.json ``tables``; None when the
    study has no per-method part (a note when its files are unreadable)."""
    names = [str(n) for n in meta.get("tables") or []]
    if "slopes" not in names:
        return None
    folder = Path(ctx.paths["analytic_dir"]) / str(ctx.rep["analytic"][KEY])
    try:
        got = read_study_tables(folder, names)
    except DataError as err:
        s.note(f"The per-method panel is missing ({err}).")
        return None
    iters = {n.removeprefix("iterations_"): t for n, t in got.items()
             if n.startswith("iterations_")}
    return iters, got["slopes"]


def slope_checks(slopes: pd.DataFrame) -> list[tuple[str, float, tuple[float, float], bool]]:
    """(method, slope, range, inside) for each method with an expected range and a fitted slope."""
    out = []
    for rec in slopes.itertuples():
        rng = METHOD_SLOPES.get(str(rec.method))
        if rng is None or not pd.notna(rec.slope):
            continue
        out.append((str(rec.method), float(rec.slope), rng, rng[0] <= float(rec.slope) <= rng[1]))
    return out


def methods_part(ctx: Context, meta: dict[str, Any], s: Section) -> list | None:
    """The per-method figure and slopes table; the slope checks (None without the panel)."""
    got = method_tables(ctx, meta, s)
    if got is None:
        return None
    iters, slopes = got
    s.text(" ".join(METHODS.split()))
    titles = [f["title"] for f in meta.get("figures", [])
              if f.get("kind") == "iterations_vs_kappa_methods"]
    path, rel = ctx.figure("claim2-iterations-vs-kappa-methods")
    figures.iterations_vs_kappa_methods(iters, titles[0] if titles else "Iterations against κ",
                                        path)
    s.figure(rel, "Iterations to tolerance against κ on raw least squares, one line per method "
                  "(log–log; grey: slopes 1 and ½ for reference).")
    s.table(slopes, ctx.save_table(slopes, "claim2-slopes"),
            "Fitted log–log slope of iterations against κ per method (over κ > 1.5)",
            SLOPE_COLUMNS)
    return slope_checks(slopes)


def verdict(slope: float | None, n_white: Any, checks: list | None) -> str:
    """The GD slope, the whitened step count and, with the per-method panel, every method's slope
    against its expected range."""
    lo, hi = SLOPE_RANGE
    linear = slope is not None and lo <= slope <= hi
    one_step = n_white is not None and int(n_white) == 1
    ok = [linear, one_step] + [c[3] for c in checks or []]
    word = "agrees" if all(ok) else ("partly" if any(ok) else "DISAGREES")
    slope_txt = "–" if slope is None else f"{slope:.2f}"
    text = (f"{word} — the log–log slope {slope_txt} is {'inside' if linear else 'outside'} "
            f"[{lo}, {hi}] (linear in κ), and whitened inputs need "
            f"{'–' if n_white is None else int(n_white)} step(s) (threshold: 1)")
    if checks:
        text += "; per method: " + ", ".join(
            f"{m} {v:.2f} ({'inside' if inside else 'outside'} [{a}, {b}])"
            for m, v, (a, b), inside in checks)
    return text + "."


def section(ctx: Context) -> list[Section]:
    """The κ sweep's figure and table, the log–log slope and the whitened step count; the
    per-method panel and slopes where the study has them."""
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    got = analytic_study(ctx, "claim2", s)
    if got is None:
        return [s]
    meta, table, _ = got
    path, rel = ctx.figure("claim2-iterations-vs-kappa")
    figures.iterations_vs_kappa(table, meta["figures"][0]["title"], path)
    s.figure(rel, "Iterations to tolerance against the κ of the raw data (raw inputs: GD with "
                  "ε = 1/L; whitened inputs: their κ is 1 whatever the raw κ, and ε as "
                  "configured).")
    s.table(table, ctx.save_table(table, "claim2-kappa-sweep"),
            "GD iterations per requested κ and preprocessing (predicted ≈ κ·ln(‖∇f₀‖/tol))")
    m = meta["metrics"]
    slope, n_white = m.get("loglog_slope_iterations_vs_kappa"), m.get("whitened_max_iterations")
    if slope is not None:
        s.text(f"Log–log slope of iterations against κ for raw inputs: {slope:.2f}.")
    if n_white is not None:
        s.text(f"Whitened inputs: κ ≤ {m.get('whitened_max_kappa', float('nan')):.3g} and at "
               f"most {int(n_white)} iteration(s) whatever the raw κ.")
    checks = methods_part(ctx, meta, s)
    s.verdict(verdict(slope, n_white, checks))
    return [s]
