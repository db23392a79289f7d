"""The lecture's analytic studies, computed from conf values by the ``analytic`` stage.

1. GD paths on 2-D quadratics for step sizes below, near and above 2/L;
2. GD iterations to tolerance against κ on synthetic least squares, raw vs whitened inputs;
3. convexity by the Hessian's smallest eigenvalue: the lecture's exercise functions on a grid and
   linear / logistic / softmax regression on a subsample of MNIST.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import ConfigError
from pipeline.core.memory import MEMORY_GB, check_memory, hessian_bytes

Grad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Function2D:
    """A 2-D function with its gradient and Hessian, vectorized over arrays x, y of one shape."""

    label: str
    f: Callable[[np.ndarray, np.ndarray], np.ndarray]
    grad: Grad
    # hxx, hxy, hyy
    hess: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def quadratic(a: float, b: float, c: float = 0.0) -> Function2D:
    """f(x, y) = a x² + b y² + c: Hessian diag(2a, 2b), so L = 2·max(a, b), κ = max/min."""
    return Function2D(
        f"{a:g}x² + {b:g}y²" + (f" {'+' if c > 0 else '−'} {abs(c):g}" if c else ""),
        lambda x, y: a * x**2 + b * y**2 + c,
        lambda x, y: (2.0 * a * x, 2.0 * b * y),
        lambda x, y: (np.full_like(x, 2.0 * a), np.zeros_like(x), np.full_like(x, 2.0 * b)),
    )


def min_eig_2x2(hxx: np.ndarray, hxy: np.ndarray, hyy: np.ndarray) -> np.ndarray:
    """λ_min of [[hxx, hxy], [hxy, hyy]] = (hxx + hyy)/2 − √(((hxx − hyy)/2)² + hxy²)."""
    return 0.5 * (hxx + hyy) - np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2)


def gd_path(fn: Function2D, start: Sequence[float], lr: float, n_steps: int) -> np.ndarray:
    """Iterates p_{k+1} = p_k − ε ∇f(p_k), k < n_steps (stops early once non-finite); shape (k+1,
    2)."""
    pts = np.empty((n_steps + 1, 2), dtype=np.float64)
    pts[0] = np.asarray(start, dtype=np.float64)
    k = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(n_steps):  # a 2-D recursion: the loop is over iterations, not examples
            gx, gy = fn.grad(pts[k, 0], pts[k, 1])
            pts[k + 1] = pts[k] - lr * np.array([gx, gy])
            if not np.all(np.isfinite(pts[k + 1])) or np.abs(pts[k + 1]).max() > 1e12:
                return pts[: k + 2]
    return pts[: k + 2]


def study_gd_paths(cfg: Mapping[str, Any]) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Claim 1: for each quadratic in ``cfg.functions`` the GD path per learning rate, and a summary
    table."""
    figures: list[dict[str, Any]] = []
    rows = []
    for spec in cfg["functions"]:
        fn = quadratic(float(spec["a"]), float(spec["b"]), float(spec.get("c", 0.0)))
        L = 2.0 * max(float(spec["a"]), float(spec["b"]))
        mu = 2.0 * min(float(spec["a"]), float(spec["b"]))
        f_star = float(spec.get("c", 0.0))
        paths = []
        for lr in spec["learning_rates"]:
            lr = float(lr)
            pts = gd_path(fn, spec["start"], lr, int(cfg["n_steps"]))
            f_end = float(fn.f(pts[-1, 0], pts[-1, 1]))
            contraction = max(abs(1.0 - lr * L), abs(1.0 - lr * mu))
            # along eigen-direction i the error is multiplied by (1 − ελ_i) each step
            verdict = ("diverges" if contraction > 1.0 else
                       "oscillates, converges" if lr * L > 1.0 else "converges")
            if contraction > 1.0 and np.isfinite(f_end) and f_end - f_star < 1e-6:
                verdict += " (MEASURED: converged — disagrees)"
            rows.append({"function": fn.label, "L": L, "mu": mu, "kappa": L / mu, "lr": lr,
                         "lr_times_L": lr * L, "predicted": verdict,
                         "max_abs_1_minus_lr_lambda": contraction, "steps": len(pts) - 1,
                         "f_end_minus_f_star": f_end - f_star if np.isfinite(f_end) else np.inf})
            paths.append((f"ε = {lr:g} (εL = {lr * L:.2f}): {verdict}", pts))
        lim = float(spec.get("extent", 2.0))
        gx, gy = np.meshgrid(np.linspace(-lim, lim, 201), np.linspace(-lim, lim, 201))
        figures.append({"name": spec["name"], "title": f"GD on f = {fn.label} (L = {L:g}, 2/L = "
                                                       f"{2 / L:.3g})",
                        "grid": (gx, gy, fn.f(gx, gy)), "paths": paths})
    return figures, pd.DataFrame(rows)


def study_convexity_functions(
    cfg: Mapping[str, Any],
) -> tuple[list[tuple[str, Any, Any, Any]], pd.DataFrame]:
    """Claim 3a: λ_min(∇²f) over a grid for the lecture's exercise functions (pipeline.core.theory);
    convex ⇔ λ_min ≥ 0."""
    from pipeline.core.theory import LECTURE_FUNCTIONS

    lim = float(cfg.get("extent", 2.0))
    xs = np.linspace(-lim, lim, 81)
    gx, gy = np.meshgrid(xs, xs)
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    maps, rows = [], []
    for key in cfg["functions"]:
        if key not in LECTURE_FUNCTIONS:
            raise ConfigError(f"report.convexity.functions: unknown {key!r}; choose from "
                              f"{sorted(LECTURE_FUNCTIONS)}")
        fn = LECTURE_FUNCTIONS[key]()
        H = np.stack([fn.hessian(p) for p in pts])  # (n_points, 2, 2): a loop over grid points
        lam = min_eig_2x2(H[:, 0, 0], H[:, 0, 1], H[:, 1, 1]).reshape(gx.shape)
        label = fn.formula.replace("^2", "²").replace("^4", "⁴")
        maps.append((f"f = {label}", gx, gy, lam))
        rows.append({"problem": f"f = {label}", "points_checked": lam.size,
                     "min_eig_min": float(lam.min()), "min_eig_max": float(lam.max()),
                     "convex": bool(lam.min() >= -1e-12)})
    return maps, pd.DataFrame(rows)


def study_convexity_models(cfg: Mapping[str, Any], load_dataset: Callable[[dict[str, Any]], Any],
                           seed: int = 0, memory_gb: float = MEMORY_GB) -> pd.DataFrame:
    """Claim 3b: λ_min of the dense Hessian of each model's loss on a small MNIST subsample at
    random points
    (``load_dataset(data_cfg)`` gives the data set of each entry)."""
    from pipeline.core.objectives import make_objective
    from pipeline.core.theory import check_convexity

    rng = np.random.default_rng(seed)
    rows = []
    loaded: dict[str, Any] = {}
    for i, spec in enumerate(cfg["models"]):
        data_cfg = dict(spec["data"])
        data_cfg.setdefault("seed", seed)
        key = repr(sorted(data_cfg.items()))
        ds = loaded[key] = loaded.get(key) or load_dataset(data_cfg)
        X = ds.X_train
        pool = int(spec.get("pool", 1))
        if pool > 1:  # average-pool the 28×28 images so the dense Hessian stays small
            side = int(round(np.sqrt(X.shape[1])))
            X = (
                X.reshape(-1, side // pool, pool, side // pool, pool)
                .mean(axis=(2, 4))
                .reshape(X.shape[0], -1)
            )
        obj = make_objective(str(spec["model"]), X, ds.y_train, l2=0.0, fit_intercept=True,
                             n_classes=ds.n_classes, dtype="float64")
        what = f"analytic.convexity.models[{i}] ({spec['model']}, {obj.n_params} parameters)"
        check_memory(hessian_bytes(obj.n_params), what, memory_gb,
                     f"raise analytic.convexity.models[{i}].pool")
        t0 = time.perf_counter()
        n_pts = int(cfg.get("n_points", 3))
        points = np.vstack(
            [
                np.zeros((1, obj.n_params)),
                rng.normal(0.0, float(cfg.get("point_scale", 1.0)), (n_pts - 1, obj.n_params)),
            ]
        )
        rep = check_convexity(obj, points, tol=1.0e-9)
        rows.append({"problem": f"{spec['model']} on {ds.name} (n={X.shape[0]}, d={X.shape[1]}, "
                                "λ=0)",
                     "points_checked": n_pts, "min_eig_min": rep.min_eigenvalue,
                     "min_eig_max": float(rep.eigenvalues.max()), "convex": rep.psd,
                     "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def study_kappa_sweep(cfg: Mapping[str, Any], load_dataset: Callable[[dict[str, Any]], Any],
                      seed: int = 0) -> pd.DataFrame:
    """Claim 2: GD (ε = 1/L) iterations until ‖∇f‖ ≤ tol on least squares vs κ; whitened: one step
    at ε = 1
    (``load_dataset(data_cfg)`` makes the synthetic problem of each κ)."""
    from pipeline.core.objectives import make_objective
    from pipeline.core.solvers import minimize
    from pipeline.core.transforms import fit_preprocess

    rows = []
    for kappa_req in cfg["condition_numbers"]:
        data_cfg = {**dict(cfg["data"]), "condition_number": float(kappa_req), "seed": seed}
        ds = load_dataset(data_cfg)
        kappa_raw = None
        for pre in cfg["preprocess"]:
            pre_cfg = dict(pre)
            tr = fit_preprocess(pre_cfg, ds.X_train)
            lr = pre_cfg.pop("lr", "auto")
            # least squares, λ = 0, an intercept unless the transform absorbs the bias; P as the
            # transform says
            obj = make_objective("linear", tr.apply(ds.X_train), ds.y_train, l2=0.0,
                                 fit_intercept=not tr.absorbs_bias, n_classes=None,
                                 dtype=np.dtype("float64"), penalty=tr.penalty_matrix())
            ev = np.linalg.eigvalsh(
                np.asarray(obj.hessian(np.zeros(obj.n_params)), dtype=np.float64)
            )
            if kappa_raw is None:
                kappa_raw = float(ev[-1] / ev[0])  # the first entry is the raw problem
            res = minimize(obj, np.zeros(obj.n_params), "gd", lr=lr, max_iter=int(cfg["max_iter"]),
                           tol=float(cfg["tol"]), line_search=False, time_budget_s=None)
            rows.append(
                {
                    "kappa_requested": float(kappa_req),
                    "kappa_raw": kappa_raw,
                    "kappa": float(ev[-1] / ev[0]),
                    "preprocess": str(pre_cfg["id"]),
                    "lr": res.lr,
                    "iterations": int(res.n_iter),
                    "status": res.status,
                    "grad_norm_end": float(res.history["grad_norm"][-1]),
                    "predicted_iterations": float(
                        np.ceil(
                            (ev[-1] / ev[0])
                            * np.log(max(res.history["grad_norm"][0], 1e-300) / float(cfg["tol"]))
                        )
                    )
                    if lr == "auto"
                    else np.nan,
                }
            )
    return pd.DataFrame(rows)


# ----- claim 2, per method: iterations to tolerance against κ ------------------------------
# the log–log slope of iterations against κ each method shows on a quadratic, as the theory says
EXPECTED_SLOPES = {"gd": "≈ 1 (κ ln(1/tol))", "heavy_ball": "≈ ½ (√κ ln(1/tol))",
                   "nesterov": "≈ ½ (√κ ln(1/tol))", "lbfgs": "below ½",
                   "newton": "0 (one step)"}


class KnownCurvature:
    """An objective with its exact L and μ attached (``lipschitz``, ``strong_convexity``: what
    lr=auto and the momentum methods' 'auto' read); everything else is the wrapped objective's."""

    def __init__(self, objective: Any, L: float, mu: float) -> None:
        self._objective, self.L, self.mu = objective, float(L), float(mu)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._objective, name)

    def lipschitz(self) -> float:
        """L = λ_max(∇²f)."""
        return self.L

    def strong_convexity(self) -> float:
        """μ = λ_min(∇²f)."""
        return self.mu


def predicted_rate(method: str, L: float, mu: float) -> float:
    """The linear rate of ‖∇f‖ on a quadratic (``core.theory``); nan for lbfgs and newton."""
    from pipeline.core.theory import gd_rate, heavy_ball_rate, nesterov_rate

    rates = {"gd": gd_rate, "heavy_ball": heavy_ball_rate, "nesterov": nesterov_rate}
    return rates[method](L, mu) if method in rates else float("nan")


def loglog_slope(kappa: Any, iterations: Any) -> float:
    """The least-squares slope of log(iterations) against log κ over κ > 1.5 (κ ≈ 1 takes one
    step whatever the tolerance); nan with fewer than two such points."""
    k, it = np.asarray(kappa, dtype=np.float64), np.asarray(iterations, dtype=np.float64)
    keep = k > 1.5
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(k[keep]), np.log(np.clip(it[keep], 1.0, None)), 1)[0])


def method_row(obj: Any, method: str, kappa_req: float, tol: float,
               max_iter: int) -> dict[str, Any]:
    """One method on one raw least-squares problem (L, μ exact): iterations to ‖∇f‖ ≤ tol, the
    measured rate (‖∇f_k‖/‖∇f_0‖)^(1/k) and the predicted one."""
    from pipeline.core.solvers import minimize

    ev = np.linalg.eigvalsh(np.asarray(obj.hessian(np.zeros(obj.n_params)), dtype=np.float64))
    L, mu = float(ev[-1]), float(ev[0])
    res = minimize(KnownCurvature(obj, L, mu), np.zeros(obj.n_params), method,
                   lr=1.0 if method == "newton" else "auto", max_iter=max_iter, tol=tol,
                   line_search=False, time_budget_s=None)
    g0, g1, k = (float(res.history["grad_norm"][0]), float(res.history["grad_norm"][-1]),
                 int(res.n_iter))
    rate = predicted_rate(method, L, mu)
    return {"kappa_requested": float(kappa_req), "kappa": L / mu, "L": L, "mu": mu,
            "method": method, "iterations": k, "status": res.status, "grad_norm_start": g0,
            "grad_norm_end": g1,
            "rate_measured": (g1 / g0) ** (1.0 / k) if k > 0 and g0 > 0 else float("nan"),
            "rate_predicted": rate,
            "predicted_iterations": (float(np.ceil(np.log(g0 / tol) / -np.log(rate)))
                                     if 0 < rate < 1 and g0 > tol else float("nan"))}


def study_kappa_methods(cfg: Mapping[str, Any], load_dataset: Callable[[dict[str, Any]], Any],
                        seed: int = 0) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Claim 2 per method: iterations until ‖∇f‖ ≤ ``methods.tol`` on the raw least-squares
    problem of each κ in ``methods.condition_numbers`` (default: the sweep's; λ = 0, an
    intercept, L and μ exact), one table per method, and the fitted
    log–log slope of iterations against κ per method beside the expected one."""
    from pipeline.core.objectives import make_objective

    m = cfg["methods"]
    names = [str(n) for n in m["names"]]
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for kappa_req in m.get("condition_numbers") or cfg["condition_numbers"]:
        ds = load_dataset({**dict(cfg["data"]), "condition_number": float(kappa_req),
                           "seed": seed})
        obj = make_objective("linear", ds.X_train, ds.y_train, l2=0.0, fit_intercept=True,
                             n_classes=None, dtype=np.dtype("float64"))
        for n in names:
            rows[n].append(method_row(obj, n, float(kappa_req), float(m["tol"]),
                                      int(m["max_iter"])))
    tables = {n: pd.DataFrame(r) for n, r in rows.items()}
    slopes = pd.DataFrame([
        {"method": n, "slope": loglog_slope(t["kappa"], t["iterations"]),
         "expected": EXPECTED_SLOPES.get(n, ""), "points": int((t["kappa"] > 1.5).sum()),
         "kappa_min": float(t["kappa"].min()), "kappa_max": float(t["kappa"].max()),
         "all_converged": bool((t["status"] == "converged").all())}
        for n, t in tables.items()])
    return tables, slopes
