"""Suboptimality curves, speed and accuracy tables from a RunSet and the reference optima f*.

Every table here is computed, not rendered: numbers stay numbers (NaN where a run has no value,
``inf`` where a projection never reaches a tolerance) with separate text columns saying what a
number is (``basis_<tol>`` = measured | projected | never).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.reporting.gather import RunSet
from pipeline.store.references import Reference

NONCONVEX = ("logistic_mse",)  # no certified f*: shown as loss curves (claim 4)


def tol_key(tol: float) -> str:
    """A tolerance as it appears in column names: 1e-04, 1e-08."""
    return f"{tol:.0e}"


def rel_denominator(f_star: float) -> float:
    """|f*|, or 1 when |f*| < 1e-12 (relative suboptimality (f − f*)/|f*|)."""
    return abs(f_star) if abs(f_star) >= 1.0e-12 else 1.0


def objective_of(runs: RunSet, run_id: str) -> str | None:
    """The objective id a run minimizes (metrics.json ``objective``; None for runs of older
    versions)."""
    value = runs.runs.loc[run_id].get("objective")
    return str(value) if isinstance(value, str) and value else None


def optimizer_name(runs: RunSet, run_id: str) -> str:
    """optimizer.name from config.yaml (metrics.json names the Hydra choice, e.g. ``gd_armijo``)."""
    cfg = runs.configs.get(run_id, {}).get("optimizer", {})
    if isinstance(cfg, dict) and cfg.get("name"):
        return str(cfg["name"])
    return str(runs.runs.loc[run_id, "optimizer"])


STOCHASTIC = ("sgd",)  # always minibatch
MINIBATCH_CAPABLE = ("adam", "adagrad")  # minibatch when optimizer.batch_size is set
# the reference file's predicted linear rate per method (coordinates[<preprocess>]); gd by its lr
THEORY_RATES = {"heavy_ball": "rate_heavy_ball", "nesterov": "rate_nesterov"}
LINEAR_METHODS = ("gd", *THEORY_RATES)


def is_stochastic(runs: RunSet, run_id: str) -> bool:
    """Whether a run follows minibatch gradients (sgd; adam/adagrad with a batch_size): its error
    levels off at its step size's noise instead of contracting at a linear rate."""
    name = optimizer_name(runs, run_id)
    if name in STOCHASTIC:
        return True
    cfg = runs.configs.get(run_id, {}).get("optimizer", {})
    return name in MINIBATCH_CAPABLE and isinstance(cfg, dict) and \
        cfg.get("batch_size") is not None


def theory_rate(runs: RunSet, run_id: str, curv: dict[str, Any]) -> float:
    """The linear rate the reference file predicts for a run's method in its coordinates:
    gd with lr=auto 1 − μ/L_bound (``rate_gd_lr_auto``), gd with ε = 1/L_local 1 − 1/κ
    (``rate_gd``), heavy ball (√κ − 1)/(√κ + 1) and Nesterov 1 − 1/√κ at their automatic
    parameters; nan where unknown or for hand-set parameters."""
    name = optimizer_name(runs, run_id)
    cfg = runs.configs.get(run_id, {}).get("optimizer", {})
    cfg = cfg if isinstance(cfg, dict) else {}
    lr = cfg.get("lr")
    # heavy ball and Nesterov: the rates of their optimal parameters, i.e. lr (and heavy ball's
    # momentum) auto; config.yaml lists every option, so Nesterov's unused momentum is ignored
    tuned = lr == "auto" and (name != "heavy_ball" or cfg.get("momentum", "auto") == "auto")
    key = THEORY_RATES.get(name) if tuned else None
    if name == "gd":
        L = curv.get("L_local")
        if lr == "auto":
            key = "rate_gd_lr_auto"
        elif isinstance(lr, int | float) and L and abs(float(lr) * float(L) - 1.0) < 1.0e-6:
            key = "rate_gd"
    value = curv.get(key) if key else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def data_id_of(runs: RunSet, run_id: str) -> str:
    """data.id from config.yaml, else metrics.json's ``data``."""
    cfg = runs.configs.get(run_id, {}).get("data", {})
    if isinstance(cfg, dict) and cfg.get("id"):
        return str(cfg["id"])
    return str(runs.runs.loc[run_id, "data"])


def prepared_file(runs: RunSet, run_id: str, prepared_dir: str | Path) -> Path:
    """The prepared ``.npz`` a run was trained on: ``<data.id>-<preprocess.id>.npz``."""
    from pipeline.spec import prepared_stem
    from pipeline.store.prepared import prepared_path

    stem = prepared_stem(str(data_id_of(runs, run_id)), str(runs.runs.loc[run_id, "preprocess"]))
    return prepared_path(prepared_dir, stem)


def match_references(
    runs: RunSet, refs: dict[str, Reference]
) -> tuple[dict[str, Reference], list[str]]:
    """f* per objective id of the runs: the reference file's, checked against the best loss any run
    reached; objectives without a reference get the best run's loss (uncertified) and a note."""
    out: dict[str, Reference] = {}
    notes: list[str] = []
    groups: dict[str, list[str]] = {}
    for rid in runs.runs.index:
        oid = objective_of(runs, rid)
        if oid is not None:
            groups.setdefault(oid, []).append(rid)
    old = [rid for rid in runs.runs.index if objective_of(runs, rid) is None]
    if old:
        notes.append(f"{len(old)} run(s) record no objective id (trained by an older curvlab): "
                     + ", ".join(old[:5]) + ("…" if len(old) > 5 else "")
                     + "; retrain them to compare with f*.")
    missing: list[str] = []
    for oid, rids in groups.items():
        losses = [float(np.nanmin(runs.histories[r]["loss"].to_numpy())) for r in rids
                  if r in runs.histories and np.isfinite(runs.histories[r]["loss"]).any()]
        best = min(losses, default=float("nan"))
        model = str(runs.runs.loc[rids[0], "model"])
        ref = refs.get(oid)
        if ref is None:
            if not math.isfinite(best):
                continue
            why = ("non-convex objective" if model in NONCONVEX else
                   "no reference optimum: run `python -m pipeline.reference` with the runs' "
                   "overrides")
            if model not in NONCONVEX:
                missing.append(oid)
            out[oid] = Reference(objective=oid, f_star=best, status="n/a", source="best run",
                                 note=why)
            continue
        ref = Reference(**{**ref.__dict__})  # a copy: the lowering below is this report's
        if not ref.certified:
            notes.append(f"{oid}: the reference solve ended {ref.status!r}, not converged; its "
                         "runs are left "
                         "out of the speed tables (raise reference.max_iter and rerun the "
                         "reference stage).")
        if math.isfinite(best) and best < ref.f_star:
            gap = (ref.f_star - best) / rel_denominator(ref.f_star)
            if gap > 1.0e-9:
                notes.append(f"{oid}: a run reached f = {best:.12g} below the reference f* = "
                             f"{ref.f_star:.12g} "
                             f"(relative gap {gap:.1e}, DISAGREES with a converged reference); f* "
                             "lowered to it.")
            ref.f_star = best
        out[oid] = ref
    if missing:
        shown = ", ".join(f"`{o}`" for o in sorted(missing)[:3]) + ("…" if len(missing) > 3 else "")
        notes.append(f"{len(missing)} objective(s) have no reference optimum ({shown}); their "
                     "runs are left out of the speed tables (`python -m pipeline.reference` "
                     "with the runs' overrides computes one).")
    return out, notes


def suboptimality(hist: pd.DataFrame, f_star: float) -> pd.DataFrame:
    """History with ``subopt`` = f − f* (clipped at 1e-16·max(1,|f*|)) and ``rel_subopt`` = (f −
    f*)/|f*|."""
    out = hist.copy()
    floor = 1.0e-16 * max(1.0, abs(f_star))
    out["subopt"] = np.maximum(out["loss"].to_numpy(np.float64) - f_star, floor)
    out["rel_subopt"] = out["subopt"] / rel_denominator(f_star)
    return out


def _tail(sub: pd.DataFrame, f_star: float) -> np.ndarray:
    """Row indices of the tail used for the rate fit: the second half of the finite rows above
    rounding."""
    s = sub["loss"].to_numpy(np.float64) - f_star
    ok = np.isfinite(s) & (s > 1.0e-11 * max(1.0, abs(f_star)))
    ok[0] = False
    idx = np.flatnonzero(ok)
    return idx[idx.size // 2:] if idx.size >= 4 else idx[:0]


def measured_rate(sub: pd.DataFrame, f_star: float) -> float | None:
    """Per-iteration contraction r of f − f* ≈ C rᵏ: least squares on log(f − f*) over the tail."""
    idx = _tail(sub, f_star)
    if idx.size < 3:
        return None
    k = sub["iteration"].to_numpy(np.float64)[idx]
    s = sub["loss"].to_numpy(np.float64)[idx] - f_star
    return float(math.exp(np.polyfit(k, np.log(s), 1)[0]))


@dataclass(frozen=True)
class Reach:
    """When a run reaches a relative suboptimality: measured, projected at its fitted rate, or
    never."""

    iterations: float
    passes: float
    seconds: float
    basis: str  # measured | projected | never | stochastic


def reach(sub: pd.DataFrame, f_star: float, tol: float, stochastic: bool = False,
          rate: float | None = None) -> Reach:
    """Iterations, passes and seconds to (f − f*)/|f*| ≤ tol: the first history row that does,
    else the last row extrapolated at the fitted linear rate r (k = k_last + ln(tol / e_last)/ln r,
    passes and seconds at the tail's cost per iteration); ``inf`` with basis 'never' when r ≥ 1 or
    cannot be fitted, and 'stochastic' for minibatch runs (``is_stochastic``), whose error has no
    linear rate (it levels off at its step size's noise).
    ``rate``: ``measured_rate(sub, f_star)`` where the caller has it already."""
    rel = sub["rel_subopt"].to_numpy(np.float64)
    it = sub["iteration"].to_numpy(np.float64)
    passes = sub["passes"].to_numpy(np.float64) if "passes" in sub else np.full_like(it, np.nan)
    secs = sub["time_s"].to_numpy(np.float64)
    hit = np.flatnonzero(rel <= tol)
    if hit.size:
        i = int(hit[0])
        return Reach(float(it[i]), float(passes[i]), float(secs[i]), "measured")
    if stochastic:
        return Reach(math.inf, math.inf, math.inf, "stochastic")
    rate = measured_rate(sub, f_star) if rate is None else rate
    idx = _tail(sub, f_star)
    finite = np.flatnonzero(np.isfinite(rel))
    if rate is None or not rate < 1.0 or idx.size < 2 or finite.size == 0:
        return Reach(math.inf, math.inf, math.inf, "never")
    last = int(finite[-1])
    k = it[last] + math.log(tol / rel[last]) / math.log(rate)
    span = it[idx[-1]] - it[idx[0]]
    per_pass = (passes[idx[-1]] - passes[idx[0]]) / span if span > 0 else math.nan
    per_sec = (secs[idx[-1]] - secs[idx[0]]) / span if span > 0 else math.nan
    extra = k - it[last]
    return Reach(
        float(k),
        float(passes[last] + extra * per_pass),
        float(secs[last] + extra * per_sec),
        "projected",
    )


def run_device(run: Any) -> str:
    """The device a run's seconds were measured on: its record's ``device`` (``cpu``,
    ``cuda:0 (NVIDIA H200)``); a run recorded without one ran on the CPU (numpy)."""
    device = run.get("device")
    return device if isinstance(device, str) and device else "cpu"


def speed_table(runs: RunSet, refs: dict[str, Reference],
                tols: Sequence[float] = (1.0e-4, 1.0e-8)) -> pd.DataFrame:
    """Per run with a certified f*: iterations, passes and seconds to each relative suboptimality —
    measured (``iters_to_<tol>``, NaN when not reached) and measured-or-projected
    (``projected_iters_to_<tol>``, ``basis_<tol>``) — and the GD rate measured vs predicted from
    κ."""
    rows = []
    for rid, r in runs.runs.iterrows():
        oid = objective_of(runs, rid)
        ref = refs.get(oid) if oid else None
        hist = runs.histories.get(rid)
        if ref is None or not ref.certified or hist is None or len(hist) == 0:
            continue
        sub = suboptimality(hist, ref.f_star)
        curv = ref.curvature(str(r["preprocess"]))
        row: dict[str, Any] = {
            "run_id": rid,
            "study": r["study"],
            "data": r["data"],
            "preprocess": r["preprocess"],
            "model": r["model"],
            "optimizer": r["optimizer"],
            "objective": oid,
            "l2": r["l2"],
            "lr": r["lr"],
            "status": r["status"],
            "iterations": r["iterations"],
            "passes": r.get("passes"),
            "cg_iterations": r.get("cg_iterations"),
            "train_time_s": r["train_time_s"],
            "device": run_device(r),
            "test_accuracy": r.get("test_accuracy"),
            "f_star": ref.f_star,
            "final_rel_subopt": float(sub["rel_subopt"].iloc[-1]),
        }
        stochastic = is_stochastic(runs, rid)
        rate = measured_rate(sub, ref.f_star)
        for tol in tols:
            t = tol_key(tol)
            got = reach(sub, ref.f_star, tol, stochastic, rate)
            measured = got.basis == "measured"
            row[f"reached_{t}"] = measured
            row[f"iters_to_{t}"] = got.iterations if measured else np.nan
            row[f"passes_to_{t}"] = got.passes if measured else np.nan
            row[f"seconds_to_{t}"] = got.seconds if measured else np.nan
            row[f"projected_iters_to_{t}"] = got.iterations
            row[f"projected_passes_to_{t}"] = got.passes
            row[f"projected_seconds_to_{t}"] = got.seconds
            row[f"basis_{t}"] = got.basis
        row["rate_measured"] = rate
        mu, lr = curv.get("mu"), r["lr"]
        gd = optimizer_name(runs, rid) == "gd"
        bound = (
            1.0 - float(lr) * float(mu)
            if gd and mu is not None and mu > 0 and np.isfinite(lr)
            else None
        )
        row["kappa"] = curv.get("kappa")
        row["kappa_gd"] = 1.0 / (float(lr) * float(mu)) if bound is not None else None
        row["rate_predicted"] = bound
        row["rate_theory"] = theory_rate(runs, rid, curv)
        if gd and rate is not None and bound is not None:
            # (1 − μ/L)ᵏ bounds f − f*; on a quadratic the asymptotic rate is (1 − μ/L)².
            row["rate_check"] = ("agrees (≤ 1 − 1/κ)" if rate <= bound + 1.0e-6
                                 else "DISAGREES: slower than 1 − 1/κ")
        else:
            row["rate_check"] = "n/a"
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in (
        "rate_measured",
        "kappa",
        "kappa_gd",
        "rate_predicted",
        "rate_theory",
        "passes",
        "cg_iterations",
        "test_accuracy",
    ):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    return df


def headline_table(speed: pd.DataFrame, study: str, tols: Sequence[float]) -> pd.DataFrame:
    """The report's first table: per problem (data, model) of ``study``, optimizer × preprocessing →
    iterations, passes and seconds to each tolerance (measured or projected) and test accuracy."""
    if speed.empty:
        return pd.DataFrame()
    sel = speed[speed["study"] == study]
    if sel.empty:
        return pd.DataFrame()
    cols = [
        "data",
        "model",
        "optimizer",
        "preprocess",
        "status",
        "iterations",
        "passes",
        "train_time_s",
        *(["device"] if "device" in sel else []),
    ]
    for tol in tols:
        t = tol_key(tol)
        cols += [
            f"projected_iters_to_{t}",
            f"projected_passes_to_{t}",
            f"projected_seconds_to_{t}",
            f"basis_{t}",
        ]
    cols += ["test_accuracy", "run_id"]
    out = sel[cols].rename(
        columns={c: c.replace("projected_", "") for c in cols if c.startswith("projected_")}
    )
    return out.sort_values(["data", "model", "optimizer", "preprocess"], ignore_index=True)


def coordinates_factors(
    speed: pd.DataFrame, study: str, tol: float, baseline: str = "none"
) -> pd.DataFrame:
    """One objective, other coordinates: per (data, model, optimizer) of ``study``, the iterations,
    CG
    iterations and passes to ``tol`` (measured or projected) of each preprocessing and their ratio
    to
    ``baseline`` (raw inputs) — the conditioning effect on its own, since f* is the same."""
    if speed.empty:
        return pd.DataFrame()
    t = tol_key(tol)
    sel = speed[speed["study"] == study]
    rows = []
    for (data, model, opt), grp in sel.groupby(["data", "model", "optimizer"], sort=True):
        if baseline not in set(grp["preprocess"]) or len(grp) < 2:
            continue
        base = grp[grp["preprocess"] == baseline].iloc[0]
        b_it, b_ps = base[f"projected_iters_to_{t}"], base[f"projected_passes_to_{t}"]
        for _, rec in grp.iterrows():
            it, ps = rec[f"projected_iters_to_{t}"], rec[f"projected_passes_to_{t}"]
            rows.append(
                {
                    "data": data,
                    "model": model,
                    "optimizer": opt,
                    "preprocess": rec["preprocess"],
                    "basis": rec[f"basis_{t}"],
                    f"iterations_to_{t}": it,
                    "cg_iterations": rec["cg_iterations"],
                    f"passes_to_{t}": ps,
                    "iterations_vs_raw": it / b_it if b_it and np.isfinite(b_it) else np.nan,
                    "passes_vs_raw": ps / b_ps if b_ps and np.isfinite(b_ps) else np.nan,
                    "kappa": rec["kappa"],
                }
            )
    return pd.DataFrame(rows)


def reference_point(runs: RunSet, run_id: str, model: str) -> tuple[str, float] | None:
    """The published test accuracy for this model on the run's data set (its data YAML's
    ``reference_accuracy``)."""
    data = runs.configs.get(run_id, {}).get("data", {})
    refs = data.get("reference_accuracy") if isinstance(data, dict) else None
    point = refs.get(model) if isinstance(refs, dict) else None
    if isinstance(point, dict) and point.get("accuracy") is not None:
        return str(point.get("source", "")), float(point["accuracy"])
    return None


def accuracy_table(runs: RunSet, data_prefix: str = "mnist") -> pd.DataFrame:
    """Train/test accuracy and loss per classification run on one data set, with the published
    reference point."""
    df = runs.runs
    sel = df[df["test_accuracy"].notna() & df["data"].astype(str).str.startswith(data_prefix)]
    cols = ["run_id", "study", "data", "model", "optimizer", "preprocess", "l2", "status",
            "iterations", "train_accuracy", "test_accuracy", "train_loss", "test_loss"]
    out = sel[cols].reset_index(drop=True).copy()
    ref_txt, ref_gap = [], []
    for rid, model, acc in zip(out["run_id"], out["model"], out["test_accuracy"], strict=True):
        point = reference_point(runs, str(rid), str(model))
        ref_txt.append(f"{point[0]}: {point[1]:.1%}" if point else "")
        ref_gap.append(float(acc) - point[1] if point else np.nan)
    out["reference"] = ref_txt
    out["test_minus_reference"] = ref_gap
    return out.sort_values(["data", "model", "test_accuracy"], ascending=[True, True, False],
                           ignore_index=True)
