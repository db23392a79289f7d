"""Reference optima f* = min_w f(w): a tight damped Newton solve, and the curvature ∇²f(w*) there.

Pure numerics on an ``Objective`` (``pipeline.core.objectives``); the ``reference`` stage
(``pipeline/reference.py``) builds the objective of a run and writes what these return.
The solve stops on ‖∇f‖ ≤ tol and an iteration cap only, never on wall-clock time, so its result
depends on the data and the settings, not on the machine's load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg as sla

from pipeline.core.solvers import minimize
from pipeline.core.theory import predicted_rates


@dataclass(frozen=True)
class Solve:
    """The outcome of a reference solve: w*, f* = f(w*), ‖∇f(w*)‖ and how they were reached."""

    w: np.ndarray
    f_star: float
    grad_norm: float
    method: str  # newton | newton_cg
    status: str  # converged | max_iter | stalled | diverged
    iterations: int
    cg_iterations: int | None
    message: str


def solve(objective: Any, *, tol: float, max_iter: int, dense_max: int, cg_max_iter: int,
          preconditioner: str, w0: np.ndarray | None = None) -> Solve:
    """Damped (Armijo) Newton from w0 (default 0) to ‖∇f‖ ≤ tol: w ← w − t H⁻¹∇f with the dense
    Hessian up to ``dense_max`` parameters, else Newton-CG on Hessian-vector products."""
    n = int(objective.n_params)
    method = "newton" if n <= dense_max else "newton_cg"
    start = np.zeros(n, dtype=np.float64) if w0 is None else np.asarray(w0, dtype=np.float64)
    res = minimize(objective, start, method, lr=1.0, max_iter=max_iter, tol=tol, line_search=True,
                   cg_max_iter=cg_max_iter, preconditioner=preconditioner, time_budget_s=None)
    f, g = objective.value_grad(res.w)
    cg = res.info.get("cg_iterations")
    return Solve(
        w=np.asarray(res.w, dtype=np.float64),
        f_star=float(f),
        grad_norm=float(np.linalg.norm(g)),
        method=method,
        status=str(res.status),
        iterations=int(res.n_iter),
        cg_iterations=None if cg is None else int(cg),
        message=str(res.message),
    )


def curvature(objective: Any, w: np.ndarray) -> dict[str, float]:
    """μ = λ_min, L_local = λ_max of the dense ∇²f(w) on the directions f depends on (the exact flat
    gauge directions, e.g. softmax's shift of every class's bias, are projected out), κ = L_local/μ,
    and L_bound = the global smoothness bound GD's lr='auto' uses (ε = 1/L_bound); with the
    linear rates these predict (``theory.predicted_rates``: rate_gd, rate_gd_lr_auto,
    rate_heavy_ball, rate_nesterov; None where μ ≤ 0)."""
    H = np.asarray(objective.hessian(w), dtype=np.float64)
    gauge = np.asarray(objective.gauge_directions(), dtype=np.float64)
    if gauge.shape[0]:
        Q = sla.null_space(gauge)  # orthonormal basis of the directions orthogonal to the gauge
        H = Q.T @ H @ Q
    ev = np.linalg.eigvalsh(0.5 * (H + H.T))
    mu, top = float(ev[0]), float(ev[-1])
    L_bound = float(objective.lipschitz())
    return {"mu": mu, "L_local": top, "kappa": top / mu if mu > 0 else float("inf"),
            "L_bound": L_bound, **predicted_rates(top, mu, L_bound)}


def map_weights(
    w: np.ndarray, src: Any, src_transform: Any, dst: Any, dst_transform: Any
) -> np.ndarray:
    """w of objective ``src`` (on z = A x + c) as the weights of ``dst`` on its own coordinates that
    give the same predictions: back to the inputs (W_x = Aᵀ W, b_x = cᵀ W + b), then forward
    (``Transform.transformed_weights``)."""
    W, b = src.unpack(w)
    W_x, b_x = src_transform.input_weights(W, b)
    W_t, b_t = dst_transform.transformed_weights(W_x, b_x)
    return np.asarray(dst.pack(W_t, b_t if dst.fit_intercept else 0.0), dtype=np.float64)
