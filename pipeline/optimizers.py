"""First- and second-order minimizers: gradient descent, exact Newton, Newton-CG, closed form.

``minimize(objective, w0, method, **options) -> OptimizeResult`` (see docs/architecture.md).
All methods share the stopping rule (‖∇f‖ ≤ tol, ``max_iter``, ``time_budget_s``), the history
(row 0 = the start point) and the divergence guard: a non-finite loss or gradient — or, for
steps without line search, a loss grown by ``divergence_factor`` over the start — ends the run
with ``status='diverged'`` and returns the last finite iterate.

The clock (``history['time_s']``) covers the work the method itself needs; evaluations made only
for logging (the loss of Newton steps without line search) and callbacks are kept out of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg as sla

from pipeline.errors import ConfigError, NumericalError

METHODS = ("gd", "newton", "newton_cg", "closed_form")
STATUSES = ("converged", "max_iter", "time_budget", "diverged", "stalled")
PRECONDITIONERS = ("auto", "block", "jacobi", "none")
# 'auto' preconditioner: (re)build the class-block preconditioner before a Newton step when the
# previous inner solve needed at least this many CG iterations (cheap early steps skip it) ...
BLOCK_REBUILD_CG = 8
# ... from at most this many evenly spread rows (a sub-sampled curvature estimate is enough).
BLOCK_MAX_ROWS = 20_000
HISTORY_KEYS = ("iteration", "time_s", "loss", "grad_norm", "step_size")
# keys of OptimizerConfig that describe the start point, not the method (the caller uses them)
_IGNORED = ("init", "init_scale", "name")

FloatArray = NDArray[np.floating[Any]]
Callback = Callable[[int, dict[str, float]], Any]


@dataclass
class OptimizeResult:
    """Outcome of ``minimize``; ``history`` arrays have one row per iterate (row 0 = start)."""

    w: FloatArray
    status: str
    message: str
    n_iter: int
    lr: float | None
    history: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # method extras (CG iterations, damping, L)

    @property
    def converged(self) -> bool:
        """True iff status == 'converged' (‖∇f‖ ≤ tol reached)."""
        return self.status == "converged"

    @property
    def loss(self) -> float:
        """f at the returned w (the last history row)."""
        return float(self.history["loss"][-1])


class _Clock:
    """Wall clock that can be paused around logging-only work."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._t0: float | None = time.perf_counter()

    def pause(self) -> None:
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None

    def resume(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)


class _History:
    def __init__(self, clock: _Clock, callback: Callback | None) -> None:
        self.rows: list[tuple[float, float, float, float, float]] = []
        self.clock, self.callback = clock, callback

    def add(self, it: int, loss: float, grad_norm: float, step: float) -> None:
        self.clock.pause()
        rec = {"iteration": it, "time_s": self.clock.elapsed, "loss": float(loss),
               "grad_norm": float(grad_norm), "step_size": float(step)}
        self.rows.append(tuple(rec.values()))  # type: ignore[arg-type]
        if self.callback is not None:
            self.callback(it, rec)
        self.clock.resume()

    def arrays(self) -> dict[str, np.ndarray]:
        a = np.array(self.rows, dtype=np.float64).reshape(-1, len(HISTORY_KEYS))
        out = {k: a[:, i] for i, k in enumerate(HISTORY_KEYS)}
        out["iteration"] = out["iteration"].astype(np.int64)
        return out


def _finite(f: float, g: FloatArray) -> bool:
    return bool(np.isfinite(f) and np.all(np.isfinite(g)))


def _check_options(method: str, lr: Any, max_iter: Any, tol: Any, time_budget_s: Any,
                   armijo_c: Any, backtrack: Any, cg_max_iter: Any) -> float | None:
    if method not in METHODS:
        raise ConfigError(f"optimizer={method!r} is unknown; use one of {', '.join(METHODS)}")
    if not (isinstance(max_iter, int | np.integer) and max_iter >= 0):
        raise ConfigError(f"optimizer.max_iter={max_iter!r} must be an integer ≥ 0")
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol >= 0):
        raise ConfigError(f"optimizer.tol={tol!r} must be a finite number ≥ 0")
    if time_budget_s is not None and not (isinstance(time_budget_s, int | float) and time_budget_s > 0):
        raise ConfigError(f"optimizer.time_budget_s={time_budget_s!r} must be a positive number or null")
    if not (isinstance(armijo_c, int | float) and 0 < armijo_c < 1):
        raise ConfigError(f"optimizer.armijo_c={armijo_c!r} must lie in (0, 1), e.g. 1.0e-4")
    if not (isinstance(backtrack, int | float) and 0 < backtrack < 1):
        raise ConfigError(f"optimizer.backtrack={backtrack!r} must lie in (0, 1), e.g. 0.5")
    if not (isinstance(cg_max_iter, int | np.integer) and cg_max_iter >= 1):
        raise ConfigError(f"optimizer.cg_max_iter={cg_max_iter!r} must be an integer ≥ 1")
    if lr == "auto" or lr is None:
        return None
    if isinstance(lr, str):
        try:
            lr = float(lr)
        except ValueError:
            raise ConfigError(f"optimizer.lr={lr!r} must be a positive number or 'auto' (= 1/L)") from None
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"optimizer.lr={lr!r} must be a positive number or 'auto' (= 1/L)")
    return float(lr)


def minimize(objective: Any, w0: Any, method: str, *, lr: float | str = "auto", max_iter: int = 100,
             tol: float = 1.0e-6, time_budget_s: float | None = None, line_search: bool = False,
             armijo_c: float = 1.0e-4, backtrack: float = 0.5, cg_max_iter: int = 250,
             callback: Callback | None = None, preconditioner: str = "auto",
             hvp_precision: str = "auto", divergence_factor: float = 1.0e12,
             max_backtracks: int = 60, **ignored: Any) -> OptimizeResult:
    """Minimize ``objective`` from ``w0`` with ``method`` ∈ {gd, newton, newton_cg, closed_form}.

    gd: w ← w − ε ∇f (ε = lr, 'auto' = 1/L; Armijo backtracking from ε if ``line_search``).
    newton: w ← w − t (H + τI)⁻¹ ∇f, Cholesky; τ = 0 unless H is not positive definite.
    newton_cg: the Newton system solved inexactly by preconditioned conjugate gradients on
    Hessian-vector products to ‖r‖ ≤ η‖∇f‖, η = min(0.5, √‖∇f‖) (Hessian-free); for linear
    models the products run in float32 (gradient and line search stay in the objective's dtype)
    and ``preconditioner='auto'`` uses the class-diagonal Hessian blocks once CG gets expensive.
    closed_form: the exact minimizer of linear regression (reference optimum).
    """
    unknown = sorted(set(ignored) - set(_IGNORED))
    if unknown:
        raise ConfigError(f"unknown optimizer option(s) {unknown}; valid: lr, max_iter, tol, time_budget_s, "
                          "line_search, armijo_c, backtrack, cg_max_iter")
    lr_val = _check_options(method, lr, max_iter, tol, time_budget_s, armijo_c, backtrack, cg_max_iter)
    if preconditioner not in PRECONDITIONERS:
        raise ConfigError(f"preconditioner={preconditioner!r} is unknown; use one of {', '.join(PRECONDITIONERS)}")
    if hvp_precision not in ("auto", "float32", "float64"):
        raise ConfigError(f"hvp_precision={hvp_precision!r} is unknown; use auto, float32 or float64")
    w = np.array(w0, dtype=getattr(objective, "dtype", np.float64), copy=True).ravel()
    if w.shape != (objective.n_params,):
        raise ConfigError(f"w0 has {w.size} entries, the objective has {objective.n_params} parameters")
    if not np.all(np.isfinite(w)):
        raise ConfigError("w0 contains NaN or infinite values; start from a finite point (init=zeros)")
    common = dict(max_iter=int(max_iter), tol=float(tol), budget=time_budget_s, callback=callback,
                  line_search=bool(line_search), c1=float(armijo_c), rho=float(backtrack),
                  max_bt=int(max_backtracks), div=float(divergence_factor))
    if method == "gd":
        return _gd(objective, w, lr_val, **common)
    if method == "newton":
        return _newton(objective, w, **common)
    if method == "newton_cg":
        return _newton_cg(objective, w, cg_max_iter=int(cg_max_iter), preconditioner=preconditioner,
                          hvp_precision=hvp_precision, **common)
    return _closed_form(objective, w, tol=float(tol), callback=callback)


def _armijo(phi: Callable[[float], float], f0: float, slope: float, t0: float, c1: float,
            rho: float, max_bt: int) -> tuple[float, float] | None:
    """Backtracking: the first t = t0·ρ^j with φ(t) ≤ f0 + c1 t slope (slope = ∇fᵀs < 0); None if none."""
    t = t0
    for _ in range(max_bt):
        ft = phi(t)
        if np.isfinite(ft) and ft <= f0 + c1 * t * slope:
            return t, ft
        t *= rho
    return None


def _ray(obj: Any, w: FloatArray, s: FloatArray, Z: FloatArray | None = None,
         Zs: FloatArray | None = None) -> Callable[[float], float]:
    """φ(t) = f(w + t s); from the margins Z + t·Zs (no pass over X) when they are given."""
    if Z is not None and Zs is not None:
        return lambda t: obj.value_from_margins(w + t * s, Z + t * Zs)
    return lambda t: obj.value(w + t * s)


def _stop(it: int, gn: float, tol: float, max_iter: int, clock: _Clock,
          budget: float | None) -> tuple[str, str] | None:
    if gn <= tol:
        return "converged", f"‖∇f‖ = {gn:.3e} ≤ tol = {tol:.1e} after {it} iterations"
    if it >= max_iter:
        return "max_iter", f"max_iter = {max_iter} reached with ‖∇f‖ = {gn:.3e} > tol = {tol:.1e}"
    if budget is not None and clock.now() >= budget:
        return "time_budget", f"time budget {budget:g} s used up after {it} iterations (‖∇f‖ = {gn:.3e})"
    return None


def _blew_up(f: float, g: FloatArray, f0: float, div: float) -> bool:
    """Divergence: f or ∇f non-finite, or f − f₀ > div · max(1, |f₀|)."""
    return not _finite(f, g) or f - f0 > div * max(1.0, abs(f0))


def _stalled_msg(it: int, gn: float) -> str:
    return (f"Armijo line search found no decrease at iteration {it} (‖∇f‖ = {gn:.3e}); "
            "tol is below the attainable precision — raise tol")


def _diverged_msg(it: int, f: float, f0: float) -> str:
    if not np.isfinite(f):
        return (f"loss became non-finite at iteration {it}; the step is too large (lr > 2/L?) — "
                "use lr=auto or line_search=true; returned the last finite iterate")
    return (f"loss grew from {f0:.3e} to {f:.3e} by iteration {it}; the step is too large (lr > 2/L?) — "
            "use lr=auto or line_search=true; returned the last finite iterate")


def _gd(obj: Any, w: FloatArray, lr: float | None, *, max_iter: int, tol: float, budget: float | None,
        callback: Callback | None, line_search: bool, c1: float, rho: float, max_bt: int,
        div: float) -> OptimizeResult:
    info: dict[str, Any] = {}
    if lr is None:
        L = float(obj.lipschitz())
        if not (np.isfinite(L) and L > 0):
            raise NumericalError(f"smoothness constant L = {L} is not positive; set optimizer.lr explicitly")
        lr = 1.0 / L
        info["L"] = L
    clock = _Clock()
    hist = _History(clock, callback)
    f, g = obj.value_grad(w)
    if not _finite(f, g):
        raise NumericalError("loss or gradient is non-finite at the start point; check the data and w0")
    f0, gn = f, float(np.linalg.norm(g))
    hist.add(0, f, gn, 0.0)
    it, status, msg = 0, "max_iter", ""
    while True:
        stop = _stop(it, gn, tol, max_iter, clock, budget)
        if stop:
            status, msg = stop
            break
        t = lr
        if line_search:
            found = _armijo(_ray(obj, w, -g), f, -gn * gn, lr, c1, rho, max_bt)
            if found is None:
                status = "stalled"
                msg = (f"Armijo line search found no decrease at iteration {it} (‖∇f‖ = {gn:.3e}); "
                       "tol is below what the floating-point precision allows — raise tol")
                break
            t = found[0]
        w_new = w - t * g
        f_new, g_new = obj.value_grad(w_new)
        it += 1
        if _blew_up(f_new, g_new, f0, div):
            hist.add(it, f_new, float(np.linalg.norm(g_new)) if np.all(np.isfinite(g_new)) else np.inf, t)
            status, msg = "diverged", _diverged_msg(it, f_new, f0)
            break
        w, f, g = w_new, f_new, g_new
        gn = float(np.linalg.norm(g))
        hist.add(it, f, gn, t)
    return OptimizeResult(w=w, status=status, message=msg, n_iter=it, lr=lr, history=hist.arrays(), info=info)


def _gauge(obj: Any) -> FloatArray:
    U = obj.gauge_directions() if hasattr(obj, "gauge_directions") else None
    if U is None or U.size == 0:
        return np.zeros((0, obj.n_params))
    return np.asarray(U, dtype=np.float64)


def damped_newton_step(H: FloatArray, g: FloatArray, beta: float = 1.0e-3) -> tuple[FloatArray, float]:
    """s = −(H + τI)⁻¹ g by Cholesky with the smallest τ ∈ {0, τ₀·2^k} that makes H + τI positive
    definite (Nocedal & Wright, Alg. 3.3; τ₀ from the diagonal, scaled by β·mean|diag H|)."""
    H = np.asarray(H, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    scale = float(np.mean(np.abs(np.diag(H)))) or 1.0
    dmin = float(np.min(np.diag(H)))
    tau = 0.0 if dmin > 0 else -dmin + beta * scale
    for _ in range(80):
        try:
            c = sla.cho_factor(H + tau * np.eye(H.shape[0]) if tau else H, check_finite=False)
            s = -sla.cho_solve(c, g, check_finite=False)
            if np.all(np.isfinite(s)):
                return s, tau
        except sla.LinAlgError:
            pass
        tau = max(2.0 * tau, beta * scale)
    raise NumericalError("Hessian could not be made positive definite by damping; the loss is not finite-curvature")


def _newton(obj: Any, w: FloatArray, *, max_iter: int, tol: float, budget: float | None,
            callback: Callback | None, line_search: bool, c1: float, rho: float, max_bt: int,
            div: float) -> OptimizeResult:
    clock = _Clock()
    hist = _History(clock, callback)
    U = _gauge(obj)
    f, g = obj.value_grad(w)
    if not _finite(f, g):
        raise NumericalError("loss or gradient is non-finite at the start point; check the data and w0")
    f0, gn = f, float(np.linalg.norm(g))
    hist.add(0, f, gn, 0.0)
    it, status, msg, n_damped, max_tau = 0, "max_iter", "", 0, 0.0
    while True:
        stop = _stop(it, gn, tol, max_iter, clock, budget)
        if stop:
            status, msg = stop
            break
        H = np.asarray(obj.hessian(w), dtype=np.float64)
        if U.shape[0]:
            H = H + (float(np.mean(np.abs(np.diag(H)))) or 1.0) * (U.T @ U)
        s, tau = damped_newton_step(H, g)
        if U.shape[0]:
            s -= U.T @ (U @ s)
        s = s.astype(w.dtype, copy=False)
        n_damped += tau > 0
        max_tau = max(max_tau, tau)
        t = 1.0
        if line_search:
            slope = float(g @ s)
            found = _armijo(_ray(obj, w, s), f, slope, 1.0, c1, rho, max_bt)
            if found is None:
                status = "stalled"
                msg = _stalled_msg(it, gn)
                break
            t = found[0]
        w_new = w + t * s
        f_new, g_new = obj.value_grad(w_new)
        it += 1
        if _blew_up(f_new, g_new, f0, div):
            hist.add(it, f_new, np.inf, t)
            status, msg = "diverged", _diverged_msg(it, f_new, f0)
            break
        w, f, g = w_new, f_new, g_new
        gn = float(np.linalg.norm(g))
        hist.add(it, f, gn, t)
    if n_damped:
        msg += f"; Hessian not positive definite at {n_damped} iterate(s), damped with τ ≤ {max_tau:.2e}"
    return OptimizeResult(w=w, status=status, message=msg, n_iter=it, lr=None, history=hist.arrays(),
                          info={"n_damped": int(n_damped), "max_tau": max_tau})


def pcg(matvec: Callable[[FloatArray], FloatArray], b: FloatArray, rtol: float, maxiter: int,
        minv: FloatArray | None = None) -> tuple[FloatArray, int, bool]:
    """Preconditioned CG for H x = b to ‖r‖ ≤ rtol‖b‖ (M⁻¹ = diag(minv)); stops at negative curvature.

    Returns (x, iterations, negative_curvature_found); at negative curvature on the first
    iteration x is the preconditioned right-hand side (a descent direction when b = −∇f)."""
    x = np.zeros_like(b)
    r = b.copy()
    def prec(v: FloatArray) -> FloatArray:
        if minv is None:
            return v
        return minv(v) if callable(minv) else v * minv

    z = prec(r)
    p = z.copy()
    rz = float(r @ z)
    target = rtol * float(np.linalg.norm(b))
    for i in range(maxiter):
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0:
            return (z if i == 0 else x), i + 1, True
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        if float(np.linalg.norm(r)) <= target:
            return x, i + 1, False
        z = prec(r)
        rz_new = float(r @ z)
        p *= rz_new / rz
        p += z
        rz = rz_new
    return x, maxiter, False


def _newton_cg(obj: Any, w: FloatArray, *, cg_max_iter: int, preconditioner: str, hvp_precision: str,
               max_iter: int, tol: float, budget: float | None, callback: Callback | None,
               line_search: bool, c1: float, rho: float, max_bt: int, div: float) -> OptimizeResult:
    clock = _Clock()
    hist = _History(clock, callback)
    U = _gauge(obj)
    # Fast path for linear models: Z = X̃w is linear in w, so the line search needs no pass over X
    # (Z(w + t s) = Z + t X̃s) and the gradient at the accepted point only the backward product.
    glm = all(hasattr(obj, a) for a in ("margins", "value_from_margins", "value_grad_from_margins",
                                         "hess_operator"))
    precision = None if hvp_precision in ("auto", "float64") else "float32"
    if hvp_precision == "auto" and getattr(obj, "dtype", np.float64) == np.float64 and glm:
        precision = "float32"  # inner solves are inexact anyway; the gradient stays float64
    Z = obj.margins(w) if glm else None
    f, g = obj.value_grad_from_margins(w, Z) if glm else obj.value_grad(w)
    if not _finite(f, g):
        raise NumericalError("loss or gradient is non-finite at the start point; check the data and w0")
    f0, gn = f, float(np.linalg.norm(g))
    hist.add(0, f, gn, 0.0)
    it, status, msg, cg_total, n_negcurv = 0, "max_iter", "", 0, 0
    cg_steps: list[int] = []
    block: Callable[[FloatArray], FloatArray] | None = None
    n_builds = 0
    while True:
        stop = _stop(it, gn, tol, max_iter, clock, budget)
        if stop:
            status, msg = stop
            break
        eta = min(0.5, math.sqrt(gn))
        if glm:
            op = obj.hess_operator(w, Z, precision=precision)
            matvec = op.matvec
            minv = None
            if preconditioner == "jacobi" and hasattr(op, "diagonal"):
                dg = op.diagonal()
                minv = np.where(dg > 0, 1.0 / np.maximum(dg, 1e-300), 1.0)
            elif preconditioner == "block" and hasattr(op, "class_block_solver"):
                minv = op.class_block_solver()
            elif preconditioner == "auto" and hasattr(op, "class_block_solver"):
                if cg_steps and cg_steps[-1] >= BLOCK_REBUILD_CG:
                    block = op.class_block_solver(max_rows=BLOCK_MAX_ROWS)
                    n_builds += 1
                minv = block
        else:
            w_fixed = w

            def matvec(v: FloatArray, w_fixed: FloatArray = w_fixed) -> FloatArray:
                return np.asarray(obj.hvp(w_fixed, v), dtype=np.float64)

            minv = None
        s, n_cg, negc = pcg(matvec, -np.asarray(g, dtype=np.float64), eta, cg_max_iter, minv)
        cg_total += n_cg
        cg_steps.append(n_cg)
        n_negcurv += negc
        if U.shape[0]:
            s -= U.T @ (U @ s)
        s = s.astype(w.dtype, copy=False)
        slope = float(g @ s)
        if not slope < 0:
            status = "stalled"
            msg = f"CG returned no descent direction at iteration {it} (‖∇f‖ = {gn:.3e}); raise tol"
            break
        Zs = obj.margins(s) if glm else None  # X̃ s: one pass over X, then line search for free

        phi = _ray(obj, w, s, Z, Zs) if glm else _ray(obj, w, s)
        t = 1.0
        if line_search:
            found = _armijo(phi, f, slope, 1.0, c1, rho, max_bt)
            if found is None:
                status = "stalled"
                msg = _stalled_msg(it, gn)
                break
            t = found[0]
        w_new = w + t * s
        if glm:
            Z_new = Z + t * Zs
            f_new, g_new = obj.value_grad_from_margins(w_new, Z_new)
        else:
            f_new, g_new = obj.value_grad(w_new)
        it += 1
        if _blew_up(f_new, g_new, f0, div):
            hist.add(it, f_new, np.inf, t)
            status, msg = "diverged", _diverged_msg(it, f_new, f0)
            break
        w, f, g = w_new, f_new, g_new
        if glm:
            Z = Z_new
        gn = float(np.linalg.norm(g))
        hist.add(it, f, gn, t)
    msg += f"; {cg_total} CG iterations in total"
    if n_negcurv:
        msg += f", negative curvature met in {n_negcurv} Newton step(s)"
    return OptimizeResult(w=w, status=status, message=msg, n_iter=it, lr=None, history=hist.arrays(),
                          info={"cg_iterations": cg_total, "cg_per_step": cg_steps, "preconditioner_builds": n_builds, "negative_curvature": n_negcurv,
                                "hvp_precision": precision or "float64"})


def _closed_form(obj: Any, w: FloatArray, *, tol: float, callback: Callback | None) -> OptimizeResult:
    if not hasattr(obj, "closed_form"):
        raise ConfigError(f"optimizer=closed_form exists only for model=linear (got {getattr(obj, 'model', '?')}); "
                          "use newton or newton_cg")
    clock = _Clock()
    hist = _History(clock, callback)
    clock.pause()
    f, g = obj.value_grad(w)  # logging only
    clock.resume()
    hist.add(0, f, float(np.linalg.norm(g)), 0.0)
    w_star = obj.closed_form()
    clock.pause()
    f, g = obj.value_grad(w_star)
    clock.resume()
    gn = float(np.linalg.norm(g))
    hist.add(1, f, gn, 1.0)
    if not _finite(f, g):
        return OptimizeResult(w=w, status="diverged", message="closed-form solution is non-finite; "
                              "the normal equations are singular — set model.l2 > 0", n_iter=1, lr=None,
                              history=hist.arrays())
    ok = gn <= tol
    status = "converged" if ok else "stalled"
    msg = f"normal equations solved by Cholesky; ‖∇f‖ = {gn:.3e}"
    if not ok:
        msg += " (ill-conditioned: rounding limits the accuracy; set model.l2 > 0)"
    return OptimizeResult(w=w_star, status=status, message=msg, n_iter=1, lr=None, history=hist.arrays())
