"""Claim 7, "Newton inspired Adam", measured: Adam's effective per-coordinate step η/(√v̂ + δ)
beside Newton's per-coordinate step 1/diag ∇²f at the same iterate, compared by rank.

If Adam's scaling were a curvature estimate, coordinates with a large Hessian diagonal would get
small steps: the Spearman rank correlation between η/(√v̂ + δ) and 1/diag ∇²f would be near 1.
v̂ averages the squared gradient, so the scaling follows the gradient's size, which near w* is
not the curvature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pipeline.core.objectives import make_objective
from pipeline.core.solvers.adaptive import ADAM_DEFAULTS, AdamRule
from pipeline.core.solvers.diag_newton import hessian_diagonal

FloatArray = np.ndarray


def spearman(a: Any, b: Any) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks of a and b (ties share their
    mean rank); nan if either is constant or there are fewer than two entries."""
    ra = rankdata(np.asarray(a, dtype=np.float64))
    rb = rankdata(np.asarray(b, dtype=np.float64))
    if ra.size < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))


def adam_checkpoints(obj: Any, lr: float, opts: Mapping[str, Any],
                     checkpoints: Sequence[int]) -> list[dict[str, Any]]:
    """Full-batch bias-corrected Adam (``AdamRule``, the ``adam`` method's update) from w = 0;
    at each checkpoint k: w_k, ∇f(w_k), f(w_k), v̂_k and the effective step η/(√v̂_k + δ)."""
    rule = AdamRule({**ADAM_DEFAULTS, **opts})
    w = np.zeros(obj.n_params, dtype=np.float64)
    out, last = [], max(checkpoints)
    for k in range(1, last + 1):
        rule(w, obj.value_grad(w)[1], lr)
        if k in checkpoints:
            f, g = obj.value_grad(w)
            assert rule.v is not None
            v_hat = rule.v / (1.0 - rule.b2 ** rule.t)
            out.append({"iteration": k, "w": w.copy(), "loss": float(f), "grad": g,
                        "v_hat": v_hat, "step": lr / (np.sqrt(v_hat) + rule.delta)})
    return out


def compare(obj: Any, point: Mapping[str, Any]) -> tuple[dict[str, Any], FloatArray, FloatArray]:
    """Adam's step against 1/diag ∇²f at one iterate, over the coordinates with v̂ > 0 and
    diag ∇²f > 0: (row, the two vectors)."""
    D = hessian_diagonal(obj, point["w"])
    keep = (point["v_hat"] > 0) & (D > 0)
    step, inv_h = point["step"][keep], 1.0 / D[keep]
    g = np.abs(point["grad"][keep])
    return ({"iteration": point["iteration"], "loss": point["loss"],
             "grad_norm": float(np.linalg.norm(point["grad"])),
             "coordinates": int(keep.sum()), "coordinates_left_out": int((~keep).sum()),
             "spearman_step_vs_inv_hess_diag": spearman(step, inv_h),
             "spearman_step_vs_inv_abs_grad": spearman(step, 1.0 / np.maximum(g, 1e-300)),
             "spearman_hess_diag_vs_abs_grad": spearman(D[keep], g),
             "step_median": float(np.median(step)),
             "inv_hess_diag_median": float(np.median(inv_h))}, step, inv_h)


def study_adam_scaling(cfg: Mapping[str, Any], load_dataset: Callable[[dict[str, Any]], Any],
                       seed: int = 0) -> tuple[pd.DataFrame, dict[str, FloatArray]]:
    """Claim 7: per problem and checkpoint a table row (the rank correlations) and the two vectors
    ``<problem>/it<k>/adam_step``, ``<problem>/it<k>/inv_hess_diag`` for a scatter plot."""
    rows, arrays = [], {}
    opts = {k: cfg[k] for k in ("beta1", "beta2", "delta") if k in cfg}
    for spec in cfg["problems"]:
        ds = load_dataset({**dict(spec["data"]), "seed": seed})
        obj = make_objective(str(spec["model"]), ds.X_train, ds.y_train,
                             l2=float(spec.get("l2", 0.0)), fit_intercept=True,
                             n_classes=ds.n_classes, dtype="float64")
        for point in adam_checkpoints(obj, float(cfg["lr"]), opts,
                                      [int(k) for k in cfg["checkpoints"]]):
            row, step, inv_h = compare(obj, point)
            name = str(spec["name"])
            rows.append({"problem": name, "model": str(spec["model"]),
                         "n_params": int(obj.n_params), **row})
            arrays[f"{name}/it{row['iteration']}/adam_step"] = step
            arrays[f"{name}/it{row['iteration']}/inv_hess_diag"] = inv_h
    return pd.DataFrame(rows), arrays
