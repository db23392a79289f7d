"""Suboptimality curves, speed and accuracy tables from a RunSet and the reference optima f*."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import CurvlabError
from pipeline.reporting.reference import Reference
from pipeline.reporting.runs import RunSet

OBJECTIVE_KEYS = ("data", "preprocess", "model", "l2")


def rel_denominator(f_star: float) -> float:
    """|f*|, or 1 when |f*| < 1e-12 (relative suboptimality (f − f*)/|f*|)."""
    return abs(f_star) if abs(f_star) >= 1.0e-12 else 1.0


def objective_of(runs: RunSet, run_id: str) -> tuple[Any, ...]:
    """(data, preprocess, model, λ) — the objective a run minimizes."""
    r = runs.runs.loc[run_id]
    return tuple(r[k] for k in OBJECTIVE_KEYS)


def fit_intercept_of(runs: RunSet, run_id: str) -> bool:
    """The run's effective intercept (metrics.json ``fit_intercept``, else config.yaml's model.fit_intercept)."""
    r = runs.runs.loc[run_id]
    if "fit_intercept" in r.index and isinstance(r["fit_intercept"], bool | np.bool_):
        return bool(r["fit_intercept"])
    model = runs.configs.get(run_id, {}).get("model", {})
    return bool(model.get("fit_intercept", True)) if isinstance(model, dict) else True


def optimizer_name(runs: RunSet, run_id: str) -> str:
    """optimizer.name from config.yaml (metrics.json names the Hydra choice, e.g. ``gd_armijo``)."""
    cfg = runs.configs.get(run_id, {}).get("optimizer", {})
    if isinstance(cfg, dict) and cfg.get("name"):
        return str(cfg["name"])
    return str(runs.runs.loc[run_id, "optimizer"])


def data_id_of(runs: RunSet, run_id: str) -> str:
    """data.id from config.yaml, else metrics.json's ``data``."""
    cfg = runs.configs.get(run_id, {}).get("data", {})
    if isinstance(cfg, dict) and cfg.get("id"):
        return str(cfg["id"])
    return str(runs.runs.loc[run_id, "data"])


def prepared_file(runs: RunSet, run_id: str, prepared_dir: str | Path) -> Path:
    """The prepared ``.npz`` a run was trained on: ``<data.id>-<preprocess.id>.npz``."""
    cfg = runs.configs.get(run_id, {})
    if isinstance(cfg.get("data"), dict) and isinstance(cfg.get("preprocess"), dict):
        try:
            from pipeline.prepared import prepared_path

            return prepared_path(prepared_dir, cfg["data"], cfg["preprocess"])
        except (ImportError, KeyError):
            pass
    r = runs.runs.loc[run_id]
    return Path(prepared_dir) / f"{data_id_of(runs, run_id)}-{r['preprocess']}.npz"


def best_weights(runs: RunSet, rids: Sequence[str]) -> np.ndarray | None:
    """The flat weights ``w`` of the run with the lowest final loss (a warm start for f*), or None."""
    from pipeline.reporting.runs import load_weights

    finite = [(float(runs.runs.loc[r, "train_loss"]), r) for r in rids
              if np.isfinite(runs.runs.loc[r, "train_loss"]) and r in runs.dirs]
    for _, r in sorted(finite):
        w = load_weights(runs.dirs[r])
        if w is not None and "w" in w and np.all(np.isfinite(w["w"])):
            return np.asarray(w["w"], dtype=np.float64).ravel()
    return None


def attach_references(
    runs: RunSet,
    prepared_dir: str | Path,
    solve: Callable[..., Reference] | None,
    nonconvex_models: Sequence[str] = ("logistic_mse",),
) -> tuple[dict[tuple[Any, ...], Reference], list[str]]:
    """f* per objective: the reference solve, lowered to the best loss any run reached; notes for the page."""
    refs: dict[tuple[Any, ...], Reference] = {}
    notes: list[str] = []
    groups: dict[tuple[Any, ...], list[str]] = {}
    for rid in runs.runs.index:
        groups.setdefault(objective_of(runs, rid), []).append(rid)
    for key, rids in groups.items():
        best = min(
            (float(np.nanmin(runs.histories[r]["loss"].to_numpy())) for r in rids
             if r in runs.histories and np.isfinite(runs.histories[r]["loss"]).any()),
            default=float("nan"),
        )
        ref: Reference | None = None
        data, pre, model, l2 = key
        label = f"{data}/{pre}/{model}/λ={l2:g}"
        if solve is not None and model not in nonconvex_models:
            path = prepared_file(runs, rids[0], prepared_dir)
            try:
                ref = solve(path, str(model), float(l2), fit_intercept_of(runs, rids[0]),
                            w0=best_weights(runs, rids))
            except (CurvlabError, ImportError, MemoryError) as err:
                notes.append(f"{label}: no reference solve ({' '.join(str(err).split())}); "
                             "f* = the best loss any run reached.")
        if ref is None:
            if not math.isfinite(best):
                continue
            why = "non-convex objective" if model in nonconvex_models else "no reference solve"
            ref = Reference(f_star=best, source="best run", status="n/a", note=why)
        elif math.isfinite(best) and best < ref.f_star:
            gap = (ref.f_star - best) / rel_denominator(ref.f_star)
            if gap > 1.0e-9:
                notes.append(f"{label}: a run reached f={best:.12g} below the reference "
                             f"f*={ref.f_star:.12g} (relative gap {gap:.1e}); f* lowered to it.")
            ref.f_star = best
        refs[key] = ref
    return refs, notes


def suboptimality(hist: pd.DataFrame, f_star: float) -> pd.DataFrame:
    """History with ``subopt`` = f − f* (clipped at 1e-16·max(1,|f*|)) and ``rel_subopt`` = (f − f*)/|f*|."""
    out = hist.copy()
    floor = 1.0e-16 * max(1.0, abs(f_star))
    out["subopt"] = np.maximum(out["loss"].to_numpy(np.float64) - f_star, floor)
    out["rel_subopt"] = out["subopt"] / rel_denominator(f_star)
    return out


def first_reach(sub: pd.DataFrame, tol: float) -> tuple[float | None, float | None]:
    """(iteration, seconds) of the first row with relative suboptimality ≤ tol, or (None, None)."""
    hit = np.flatnonzero(sub["rel_subopt"].to_numpy() <= tol)
    if hit.size == 0:
        return None, None
    i = int(hit[0])
    return float(sub["iteration"].iloc[i]), float(sub["time_s"].iloc[i])


def measured_rate(sub: pd.DataFrame, f_star: float) -> float | None:
    """Per-iteration contraction r of f − f* ≈ C rᵏ: least squares on log(f − f*) over the tail."""
    s = sub["loss"].to_numpy(np.float64) - f_star
    k = sub["iteration"].to_numpy(np.float64)
    ok = np.isfinite(s) & (s > 1.0e-11 * max(1.0, abs(f_star)))
    ok[0] = False
    idx = np.flatnonzero(ok)
    if idx.size < 4:
        return None
    idx = idx[idx.size // 2:]
    if idx.size < 3:
        return None
    slope = np.polyfit(k[idx], np.log(s[idx]), 1)[0]
    return float(math.exp(slope))


def speed_table(runs: RunSet, refs: dict[tuple[Any, ...], Reference],
                tols: Sequence[float] = (1.0e-4, 1.0e-8)) -> pd.DataFrame:
    """Per run: iterations / seconds to relative suboptimality ≤ tol, measured vs predicted GD rate."""
    rows = []
    for rid, r in runs.runs.iterrows():
        ref = refs.get(objective_of(runs, rid))
        hist = runs.histories.get(rid)
        row: dict[str, Any] = {
            "run_id": rid, "study": r["study"], "data": r["data"], "preprocess": r["preprocess"],
            "model": r["model"], "optimizer": r["optimizer"], "l2": r["l2"], "lr": r["lr"],
            "status": r["status"], "iterations": r["iterations"], "train_time_s": r["train_time_s"],
            "f_star": ref.f_star if ref else np.nan,
            "f_star_source": ref.source if ref else "none",
        }
        n_done = int(hist["iteration"].iloc[-1]) if hist is not None and len(hist) else 0
        certified = ref is not None and ref.source != "best run"
        for tol in tols:
            it = sec = None
            if not certified:
                row[f"iters_to_{tol:.0e}"] = row[f"seconds_to_{tol:.0e}"] = "n/a (no reference f*)"
                continue
            if hist is not None and ref is not None:
                it, sec = first_reach(suboptimality(hist, ref.f_star), tol)
            row[f"iters_to_{tol:.0e}"] = (f"{int(it)}" if it is not None
                                          else f"not reached in {n_done}")
            row[f"seconds_to_{tol:.0e}"] = (f"{sec:.3g}" if sec is not None
                                            else f"not reached in {n_done}")
        rate = bound = kappa = kappa_gd = None
        if hist is not None and certified and optimizer_name(runs, rid) == "gd":
            rate = measured_rate(suboptimality(hist, ref.f_star), ref.f_star)
            if ref.mu is not None and np.isfinite(r["lr"]) and ref.mu > 0:
                bound = 1.0 - float(r["lr"]) * ref.mu  # = 1 − 1/κ when lr = 1/L
                kappa_gd = 1.0 / (float(r["lr"]) * ref.mu)  # κ seen by GD: L_used/μ, L_used = 1/lr
        if ref is not None:
            kappa = ref.kappa
        row["kappa"] = kappa
        row["kappa_gd"] = kappa_gd
        row["rate_measured"] = rate
        row["rate_predicted"] = bound
        if rate is not None and bound is not None:
            # (1 − μ/L)ᵏ bounds f − f*; on a quadratic the asymptotic rate is (1 − μ/L)².
            row["rate_check"] = ("agrees (≤ 1 − 1/κ)" if rate <= bound + 1.0e-6
                                 else "DISAGREES: slower than 1 − 1/κ")
        else:
            row["rate_check"] = "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def reference_point(runs: RunSet, run_id: str, model: str) -> tuple[str, float] | None:
    """The published test accuracy for this model on the run's data set (its data YAML's ``reference_accuracy``)."""
    data = runs.configs.get(run_id, {}).get("data", {})
    refs = data.get("reference_accuracy") if isinstance(data, dict) else None
    point = refs.get(model) if isinstance(refs, dict) else None
    if isinstance(point, dict) and point.get("accuracy") is not None:
        return str(point.get("source", "")), float(point["accuracy"])
    return None


def accuracy_table(runs: RunSet, data_prefix: str = "mnist") -> pd.DataFrame:
    """Train/test accuracy and loss per classification run on one data set, with the published reference point."""
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
