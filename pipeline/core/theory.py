"""Theory helpers: the lecture's 2-D functions, convexity checks, curvature constants (L, μ, κ).

Lecture facts these constants enter, so a report can set prediction beside measurement:

* f is convex on a region iff its Hessian is positive semidefinite there (all eigenvalues ≥ 0).
* With L = sup λ_max(∇²f) and μ = inf λ_min(∇²f) > 0, gradient descent with ε = 1/L satisfies
  f(w_k) − f* ≤ (1 − μ/L)^k (f(w_0) − f*); κ = L/μ is the condition number.
* On a quadratic with the optimal fixed step ε = 2/(L + μ):
  f(w_k) − f* ≤ ((κ − 1)/(κ + 1))^{2k} (f(w_0) − f*).

The helpers that take arrays (``hessian_eigenvalues``, ``check_convexity``, ``curvature``) work
with any array API namespace: that of the points given, else the objective's ``xp``; spectra
come back in that namespace, constants as Python floats; numpy keeps numpy's own calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import linalg as spla

from pipeline.core import linalg
from pipeline.core.backend import foreign_namespace, is_numpy, namespace, to_namespace
from pipeline.core.errors import ConfigError, NumericalError
from pipeline.core.objectives import Objective

FloatArray = NDArray[np.float64]


# ----- the lecture's 2-D examples ---------------------------------------------------------------
class AnalyticFunction(Objective):
    """A smooth f: R² → R given by closed-form value, gradient and Hessian (lecture demos)."""

    n_params = 2
    dtype = np.float64

    def __init__(self, name: str, formula: str, f: Callable[[float, float], float],
                 g: Callable[[float, float], Sequence[float]],
                 h: Callable[[float, float], Sequence[Sequence[float]]]) -> None:
        self.name, self.formula = name, formula
        self._f, self._g, self._h = f, g, h

    def value_grad(self, w: ArrayLike) -> tuple[float, FloatArray]:
        """(f(x, y), ∇f(x, y))."""
        x, y = self._check_w(w)
        return float(self._f(x, y)), np.asarray(self._g(x, y), dtype=np.float64)

    def hessian(self, w: ArrayLike) -> FloatArray:
        """∇²f(x, y), 2×2."""
        x, y = self._check_w(w)
        return np.asarray(self._h(x, y), dtype=np.float64)

    def lipschitz(self, w: ArrayLike | None = None, method: str = "dense") -> float:
        """λ_max(∇²f(w)) at w (default the origin); f has constant Hessian only if quadratic."""
        w = np.zeros(2) if w is None else w
        return float(np.linalg.eigvalsh(self.hessian(w))[-1])

    def grid(self, xs: ArrayLike, ys: ArrayLike) -> FloatArray:
        """f on the grid xs × ys (shape (len(ys), len(xs)), for contour plots)."""
        Xg, Yg = np.meshgrid(np.asarray(xs, float), np.asarray(ys, float))
        return np.vectorize(self._f)(Xg, Yg).astype(np.float64)


def bowl() -> AnalyticFunction:
    """f = 3x² + 2y² − 2: strongly convex quadratic, H = diag(6, 4), minimum −2 at 0, κ = 1.5."""
    return AnalyticFunction("bowl", "3x^2 + 2y^2 - 2",
                            lambda x, y: 3 * x * x + 2 * y * y - 2,
                            lambda x, y: (6 * x, 4 * y),
                            lambda x, y: ((6.0, 0.0), (0.0, 4.0)))


def trough() -> AnalyticFunction:
    """f = x² + y + 5: convex (H = diag(2, 0) is PSD) but linear in y, so unbounded below — no
    minimum."""
    return AnalyticFunction("trough", "x^2 + y + 5",
                            lambda x, y: x * x + y + 5,
                            lambda x, y: (2 * x, 1.0),
                            lambda x, y: ((2.0, 0.0), (0.0, 0.0)))


def quartic() -> AnalyticFunction:
    """f = x⁴ + xy + x²: H = [[12x² + 2, 1], [1, 0]] has det = −1 < 0 everywhere — never convex."""
    return AnalyticFunction("quartic", "x^4 + xy + x^2",
                            lambda x, y: x**4 + x * y + x * x,
                            lambda x, y: (4 * x**3 + y + 2 * x, x),
                            lambda x, y: ((12 * x * x + 2, 1.0), (1.0, 0.0)))


LECTURE_FUNCTIONS: dict[str, Callable[[], AnalyticFunction]] = {
    "bowl": bowl, "trough": trough, "quartic": quartic,
}


# ----- convexity --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvexityReport:
    """Hessian spectra at the probed points; ``psd`` iff every eigenvalue ≥ −tol·max(1, |λ|max)."""

    eigenvalues: FloatArray  # (n_points, p), ascending per point
    psd: bool
    min_eigenvalue: float
    argmin_point: int  # index of the point with the most negative eigenvalue
    tol: float

    def summary(self) -> str:
        """One line: PSD or not, and the most negative eigenvalue with where it was found."""
        verdict = (
            "PSD at all probed points (consistent with convexity)"
            if self.psd
            else "NOT PSD (not convex)"
        )
        return (
            f"{verdict}; smallest eigenvalue {self.min_eigenvalue:.3e} at point {self.argmin_point}"
        )


def _objective_zeros(objective: Any) -> Any:
    """w = 0 as an array of the objective's namespace and device; None for numpy objectives."""
    xp = getattr(objective, "xp", None)
    if xp is None or is_numpy(xp):
        return None
    if hasattr(objective, "init"):
        return xp.asarray(objective.init("zeros"), dtype=xp.float64)
    return xp.zeros(objective.n_params, dtype=xp.float64)


def _as_objective_array(objective: Any, a: ArrayLike) -> Any:
    """``a`` in the namespace of its own (non-numpy) arrays, else of the objective; None when
    both are numpy (the numpy path)."""
    if foreign_namespace(a) is not None:
        xp = namespace(a)
        return xp.asarray(a, dtype=xp.float64)
    like = _objective_zeros(objective)
    return None if like is None else to_namespace(a, like)


def hessian_eigenvalues(objective: Any, w: ArrayLike) -> Any:
    """All eigenvalues (ascending) of the dense Hessian ∇²f(w) (symmetrized for rounding)."""
    w_xp = _as_objective_array(objective, w)
    if w_xp is not None:
        H = to_namespace(objective.hessian(w_xp), w_xp)
        return linalg.eigvalsh(0.5 * (H + H.T))
    H = np.asarray(objective.hessian(np.asarray(w)), dtype=np.float64)
    return np.linalg.eigvalsh(0.5 * (H + H.T))


def check_convexity(objective: Any, points: ArrayLike, tol: float = 1.0e-10) -> ConvexityReport:
    """Probe ∇²f at each row of ``points`` (k, p): PSD everywhere probed, or the most negative λ.

    PSD at finitely many points is necessary, not sufficient, for convexity; one negative
    eigenvalue anywhere proves non-convexity."""
    pts_xp = _as_objective_array(objective, points)
    if pts_xp is not None:
        return _check_convexity_xp(objective, pts_xp, tol)
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if pts.shape[1] != objective.n_params:
        raise ConfigError(f"points have {pts.shape[1]} coordinates, the objective has "
                          f"{objective.n_params}")
    ev = np.array([hessian_eigenvalues(objective, p) for p in pts])
    mins = ev[:, 0]
    i = int(np.argmin(mins))
    scale = max(1.0, float(np.max(np.abs(ev))))
    return ConvexityReport(eigenvalues=ev, psd=bool(mins[i] >= -tol * scale),
                           min_eigenvalue=float(mins[i]), argmin_point=i, tol=tol)


def _check_convexity_xp(objective: Any, pts: Any, tol: float) -> ConvexityReport:
    """``check_convexity`` with the array API namespace of ``pts``."""
    xp = namespace(pts)
    pts = pts[None, :] if pts.ndim == 1 else pts
    if pts.shape[1] != objective.n_params:
        raise ConfigError(f"points have {pts.shape[1]} coordinates, the objective has "
                          f"{objective.n_params}")
    ev = xp.stack([hessian_eigenvalues(objective, pts[j, :]) for j in range(pts.shape[0])])
    mins = ev[:, 0]
    i = int(xp.argmin(mins))
    scale = max(1.0, float(xp.max(xp.abs(ev))))
    return ConvexityReport(eigenvalues=ev, psd=bool(mins[i] >= -tol * scale),
                           min_eigenvalue=float(mins[i]), argmin_point=i, tol=tol)


# ----- curvature constants ----------------------------------------------------------------------
@dataclass(frozen=True)
class Curvature:
    """L = λ_max, μ = λ_min of ∇²f (gauge directions excluded), κ = L/μ (inf if μ ≤ 0)."""

    L: float
    mu: float
    kappa: float
    method: str


def curvature(objective: Any, w: ArrayLike | None = None, method: str = "auto",
              tol: float = 1.0e-8) -> Curvature:
    """L, μ and κ of ∇²f(w) (w = 0 by default), from the dense Hessian or by Lanczos on HVPs.

    Directions along which f is exactly constant (``objective.gauge_directions()``, e.g. a common
    shift of all softmax biases) are excluded: GD never moves along them.  ``method='auto'``
    uses the dense Hessian up to 2000 parameters, Lanczos (scipy eigsh) above."""
    p = objective.n_params
    if method == "auto":
        method = "dense" if p <= 2000 else "lanczos"
    w_xp = _objective_zeros(objective) if w is None else _as_objective_array(objective, w)
    if w_xp is not None:
        lo, hi = _extreme_eigenvalues_xp(objective, w_xp, method, tol)
        return _curvature_of(lo, hi, method)
    w = np.zeros(p) if w is None else np.asarray(w, dtype=np.float64)
    U = objective.gauge_directions() if hasattr(objective, "gauge_directions") else np.zeros((0, p))
    U = np.asarray(U, dtype=np.float64).reshape(-1, p)
    if method == "dense":
        H = np.asarray(objective.hessian(w), dtype=np.float64)
        H = 0.5 * (H + H.T)
        if U.shape[0]:
            B = _complement_basis(U)
            H = B.T @ H @ B
        ev = np.linalg.eigvalsh(H)
        lo, hi = float(ev[0]), float(ev[-1])
    elif method == "lanczos":
        def mv(v: FloatArray) -> FloatArray:
            v = np.asarray(v, dtype=np.float64).ravel()
            return np.asarray(objective.hvp(w, v), dtype=np.float64)
        op = spla.LinearOperator((p, p), matvec=mv, dtype=np.float64)
        v0 = np.full(p, 1.0 / math.sqrt(p))
        hi = float(spla.eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)[0])
        # smallest eigenvalue: largest of (hi·I − H) restricted to the non-gauge subspace
        def mv_shift(v: FloatArray) -> FloatArray:
            v = np.asarray(v, dtype=np.float64).ravel()
            if U.shape[0]:
                v = v - U.T @ (U @ v)
            return hi * v - mv(v)
        op2 = spla.LinearOperator((p, p), matvec=mv_shift, dtype=np.float64)
        top = float(spla.eigsh(op2, k=1, which="LA", tol=tol, v0=v0, ncv=min(p, 60),
                               maxiter=20 * p, return_eigenvectors=False)[0])
        lo = hi - top
    else:
        raise ConfigError(f"curvature method={method!r} is unknown; use auto, dense or lanczos")
    return _curvature_of(lo, hi, method)


def _curvature_of(lo: float, hi: float, method: str) -> Curvature:
    """Curvature(L = hi, μ = lo, κ = L/μ or inf when μ ≤ 0); a NumericalError if not finite."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise NumericalError("Hessian eigenvalues are not finite; check the data and w")
    kappa = hi / lo if lo > 0 else math.inf
    return Curvature(L=hi, mu=lo, kappa=kappa, method=method)


def _extreme_eigenvalues_xp(objective: Any, w: Any, method: str, tol: float) -> tuple[float,
                                                                                       float]:
    """(λ_min, λ_max) of ∇²f(w) off the gauge directions, with w's array API namespace: dense
    by ``linalg.eigvalsh``, or Lanczos by ``linalg.top_eigenvalue`` on HVPs computed there."""
    xp, p = namespace(w), objective.n_params
    U = objective.gauge_directions() if hasattr(objective, "gauge_directions") else None
    U = None if U is None else xp.reshape(to_namespace(U, w), (-1, p))
    has_gauge = U is not None and U.shape[0] > 0
    if method == "dense":
        H = to_namespace(objective.hessian(w), w)
        H = 0.5 * (H + H.T)
        if has_gauge:
            B = _complement_basis(U)
            H = B.T @ H @ B
        ev = linalg.eigvalsh(H)
        return float(ev[0]), float(ev[-1])
    if method != "lanczos":
        raise ConfigError(f"curvature method={method!r} is unknown; use auto, dense or lanczos")

    def mv(v: Any) -> Any:
        return objective.hvp(w, v)

    hi = linalg.top_eigenvalue(mv, p, tol=tol, like=w)

    def mv_shift(v: Any) -> Any:  # hi·I − H on the non-gauge subspace: its top is hi − λ_min
        if has_gauge:
            v = v - U.T @ (U @ v)
        return hi * v - mv(v)

    return hi - linalg.top_eigenvalue(mv_shift, p, tol=tol, like=w), hi


def _complement_basis(U: Any) -> Any:
    """Orthonormal basis (p, p − k) of the orthogonal complement of the rows of U."""
    xp = foreign_namespace(U)
    if xp is not None:
        eye = xp.eye(U.shape[1], dtype=xp.float64, device=U.device)
        q, _ = xp.linalg.qr(xp.concat([U, eye], axis=0).T)
        return q[:, U.shape[0]:U.shape[1]]
    q, _ = np.linalg.qr(np.vstack([U, np.eye(U.shape[1])]).T)
    return q[:, U.shape[0]:U.shape[1]]


# ----- predicted linear rates -------------------------------------------------------------------
# Each is the factor ρ with ‖w_k − w*‖ = O(ρᵏ) (up to a factor polynomial in k) for μI ⪯ ∇²f ⪯ LI;
# on a quadratic ‖∇f(w_k)‖ = ‖H(w_k − w*)‖ decreases at the same rate.


def gd_rate(L: float, mu: float) -> float:
    """GD with ε = 1/L: w_k − w* = (I − H/L)ᵏ (w_0 − w*) on a quadratic, ρ = 1 − μ/L = 1 − 1/κ
    (and f(w_k) − f* ≤ (1 − 1/κ)ᵏ (f(w_0) − f*) for any μ-strongly convex, L-smooth f)."""
    return 1.0 - mu / L


def heavy_ball_rate(L: float, mu: float) -> float:
    """Heavy ball with Polyak's optimal pair α = 4/(√L + √μ)², β = ((√κ − 1)/(√κ + 1))² on a
    quadratic: every mode's iteration matrix has spectral radius √β, ρ = (√κ − 1)/(√κ + 1)."""
    rk = math.sqrt(L / mu)
    return (rk - 1.0) / (rk + 1.0)


def nesterov_rate(L: float, mu: float) -> float:
    """Nesterov with ε = 1/L, β = (√κ − 1)/(√κ + 1): on a quadratic the slowest mode's iteration
    matrix has the double eigenvalue 1 − 1/√κ, so ρ = 1 − 1/√κ; for any μ-strongly convex,
    L-smooth f, f(w_k) − f* ≤ (1 − 1/√κ)ᵏ (f(w_0) − f* + μ/2‖w_0 − w*‖²) (Nesterov 2004)."""
    return 1.0 - math.sqrt(mu / L)


def predicted_rates(L: float, mu: float, L_bound: float | None = None) -> dict[str, float | None]:
    """The linear rates near a point with μI ⪯ ∇²f ⪯ LI: ``rate_gd`` = 1 − μ/L (ε = 1/L),
    ``rate_gd_lr_auto`` = 1 − μ/L_bound (ε = 1/L_bound, what lr=auto takes), ``rate_heavy_ball``
    = (√κ − 1)/(√κ + 1), ``rate_nesterov`` = 1 − 1/√κ; None where μ ≤ 0 (no linear rate)."""
    ok = math.isfinite(mu) and mu > 0 and math.isfinite(L) and L >= mu
    auto = L_bound if L_bound is not None and math.isfinite(L_bound) and L_bound >= mu else None
    return {
        "rate_gd": gd_rate(L, mu) if ok else None,
        "rate_gd_lr_auto": gd_rate(auto, mu) if ok and auto is not None else None,
        "rate_heavy_ball": heavy_ball_rate(L, mu) if ok else None,
        "rate_nesterov": nesterov_rate(L, mu) if ok else None,
    }
