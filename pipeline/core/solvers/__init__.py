"""First- and second-order minimizers on one shared iteration loop: gradient descent, exact
Newton, Newton-CG, closed form.

``minimize(objective, w0, method, **options) -> OptimizeResult`` (see docs/architecture.md).
Each method is a ``_Method`` that knows how to take ONE step (``start`` evaluates the start point,
``step`` returns the next iterate with f and ∇f there, or a halt); ``_iterate`` is the one loop
around it, like the ``solve()`` template of scikit-learn's ``_glm/_newton_solver.py``: the
stopping rule (‖∇f‖ ≤ tol, ``max_iter``, ``time_budget_s``), the divergence guard (a non-finite
loss or gradient — or a loss grown by ``divergence_factor`` over the start — ends the run with
``status='diverged'`` and returns the last finite iterate; a run that stops on ``max_iter`` or
its time budget with f − f₀ > ``ENDED_ABOVE``·max(1, |f₀|) is ``diverged`` too), the history
(row 0 = the start point), the callback and the clock live there and nowhere else.

The clock (``history['time_s']``) covers the work the method itself needs; evaluations made only
for logging and callbacks are kept out of it (``self.clock.paused()``).

``history['passes']`` is the cost axis shared by every method: work in units of ONE PASS over the
data = one full gradient evaluation, ∇f = (1/n) X̃ᵀ ℓ'(X̃w): a forward product X̃w (½ pass) and a
backward product X̃ᵀr (½ pass). Hence: a value-only evaluation (Armijo trial) ½; a gradient 1; a
Hessian-vector product X̃ᵀ(D X̃v) 1 (the same two products); a dense Hessian X̃ᵀDX̃ costs as much
as ``n_params`` Hessian-vector products (it is n_params columns of them, and its O(n p²) flops
match), so exact Newton pays p + 1 per iteration and the closed form (one Newton step on least
squares) p + 1; Newton-CG pays 1 per outer step (X̃s for the line search + X̃ᵀr at the new point)
plus 1 per CG iteration plus its preconditioner builds (a class-block Gram over m rows costs
m·(d+1)/(2n)); SGD pays B/n per minibatch of B rows, 1 per epoch. Evaluations made only for the
history (SGD's full loss and gradient at a logged point) cost nothing here, as on the clock.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg as sla

from pipeline.core.errors import ConfigError, NumericalError

METHODS = ("gd", "newton", "newton_cg", "closed_form", "sgd")
STATUSES = ("converged", "max_iter", "time_budget", "diverged", "stalled")
PRECONDITIONERS = ("auto", "block", "jacobi", "none")
# 'auto' preconditioner: (re)build the class-block preconditioner before a Newton step when the
# previous inner solve needed at least this many CG iterations (cheap early steps skip it) ...
BLOCK_REBUILD_CG = 8
# ... from at most this many evenly spread rows (a sub-sampled curvature estimate is enough).
BLOCK_MAX_ROWS = 20_000
HISTORY_KEYS = ("iteration", "time_s", "loss", "grad_norm", "step_size", "passes")
# cost of one operation in passes over the data (module docstring)
FORWARD = 0.5  # X̃w: a value-only evaluation
GRADIENT = 1.0  # X̃w and X̃ᵀr
HVP = 1.0  # X̃v and X̃ᵀ(D X̃v)
# Newton-CG's inner solve stops at ‖r‖ ≤ this share of tol at the latest (the next ‖∇f‖ ≈ ‖r‖)
CG_TOL_SHARE = 0.5
# a run that stops on max_iter or its time budget with f − f₀ > ENDED_ABOVE · max(1, |f₀|) diverged
ENDED_ABOVE = 1.0e3
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

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Keep the enclosed (logging-only) work off the clock."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)


class _History:
    def __init__(self, clock: _Clock, callback: Callback | None) -> None:
        self.rows: list[tuple[float, ...]] = []
        self.clock, self.callback = clock, callback

    def add(self, it: int, passes: float, loss: float, grad_norm: float, step: float) -> None:
        self.clock.pause()
        rec = {"iteration": it, "time_s": self.clock.elapsed, "loss": float(loss),
               "grad_norm": float(grad_norm), "step_size": float(step), "passes": float(passes)}
        self.rows.append(tuple(rec.values()))
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
    return _check_lr(lr)


def _check_lr(lr: Any) -> float | None:
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
    """Minimize ``objective`` from ``w0`` with ``method`` ∈ {gd, newton, newton_cg, closed_form, sgd}.

    gd: w ← w − ε ∇f (ε = lr, 'auto' = 1/L; Armijo backtracking from ε if ``line_search``).
    newton: w ← w − t (H + τI)⁻¹ ∇f, Cholesky; τ = 0 unless H is not positive definite.
    newton_cg: the Newton system solved inexactly by preconditioned conjugate gradients on
    Hessian-vector products to ‖r‖ ≤ max(η‖∇f‖, tol/2), η = min(0.5, √‖∇f‖) (Hessian-free); for linear
    models the products run in float32 (gradient and line search stay in the objective's dtype)
    and ``preconditioner='auto'`` uses the class-diagonal Hessian blocks once CG gets expensive.
    closed_form: the exact minimizer of linear regression (reference optimum).
    sgd: minibatch SGD (options ``SGD_DEFAULTS``: batch_size, epochs, schedule, tau, step_epochs,
    step_factor, momentum, log_every, seed; lr 'auto' = 1/L_B, ``minibatch_smoothness``);
    ``max_iter`` and ``line_search`` do not apply, ``tol`` is tested at the logged points.
    """
    sgd = {k: ignored.pop(k) for k in list(ignored) if k in SGD_DEFAULTS}
    if sgd and method != "sgd":
        raise ConfigError(f"option(s) {sorted(sgd)} apply only to optimizer=sgd, not {method!r}; drop them")
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
    search = _LineSearch(bool(line_search), float(armijo_c), float(backtrack), int(max_backtracks))
    m: _Method
    if method == "gd":
        m = _GD(objective, lr_val, search)
    elif method == "newton":
        m = _Newton(objective, search)
    elif method == "newton_cg":
        m = _NewtonCG(objective, search, int(cg_max_iter), preconditioner, hvp_precision, float(tol))
    elif method == "sgd":
        if line_search:
            raise ConfigError("optimizer.line_search=true does not apply to optimizer=sgd; set it to false")
        opts = {**SGD_DEFAULTS, **sgd}
        check_sgd_options(opts)
        m = _SGD(objective, lr_val, **opts)
    else:
        m = _ClosedForm(objective)
    return _iterate(m, w, max_iter=m.max_iter(int(max_iter)), tol=float(tol), budget=time_budget_s,
                    callback=callback, div=float(divergence_factor))


# ---------------------------------------------------------------- the one iteration loop


@dataclass(frozen=True)
class _Halt:
    """A method's way to end the run before taking a step (e.g. a line search found no decrease)."""

    status: str
    message: str


class _Method:
    """One optimizer's step rule on ``_iterate``: ``start`` evaluates the start point, ``step``
    returns (w_new, f(w_new), ∇f(w_new), step size) or a ``_Halt``; ``passes`` counts the work
    (module docstring); ``clock`` is set by the loop (for logging-only evaluations)."""

    lr: float | None = None

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.passes = 0.0
        self.clock = _Clock()

    def max_iter(self, max_iter: int) -> int:
        """The iteration limit the loop applies (closed form: one step; SGD: from its epochs)."""
        return max_iter

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        self.passes += GRADIENT
        return self.obj.value_grad(w)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float,
             it: int) -> tuple[FloatArray, float, FloatArray, float] | _Halt:
        raise NotImplementedError

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """The final (status, message) — a method may add what it learned on the way."""
        return status, message

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        return _diverged_msg(it, f, f0)

    def info(self) -> dict[str, Any]:
        return {}


def _iterate(m: _Method, w: FloatArray, *, max_iter: int, tol: float, budget: float | None,
             callback: Callback | None, div: float) -> OptimizeResult:
    """The shared loop: stop test → step → divergence check → history row (+ callback), until a
    stop rule, a halt or divergence; returns the last finite iterate."""
    clock = _Clock()
    m.clock = clock
    hist = _History(clock, callback)
    f, g = m.start(w)
    if not _finite(f, g):
        raise NumericalError("loss or gradient is non-finite at the start point; check the data and w0")
    f0, gn = f, float(np.linalg.norm(g))
    hist.add(0, m.passes, f, gn, 0.0)
    it, status, msg = 0, "max_iter", ""
    while True:
        stop = _stop(it, gn, tol, max_iter, clock, budget)
        if stop:
            status, msg = stop
            break
        out = m.step(w, f, g, gn, it)
        if isinstance(out, _Halt):
            status, msg = out.status, out.message
            break
        w_new, f_new, g_new, t = out
        it += 1
        if _blew_up(f_new, g_new, f0, div):
            with np.errstate(over="ignore"):
                gn_new = float(np.linalg.norm(g_new)) if np.all(np.isfinite(g_new)) else np.inf
            hist.add(it, m.passes, f_new, gn_new, t)
            status, msg = "diverged", m.diverged_message(it, f_new, f0)
            break
        w, f, g = w_new, f_new, g_new
        gn = float(np.linalg.norm(g))
        hist.add(it, m.passes, f, gn, t)
    if status in ("max_iter", "time_budget") and f - f0 > ENDED_ABOVE * max(1.0, abs(f0)):
        status, msg = "diverged", _ended_above_msg(it, f, f0)
    status, msg = m.finish(status, msg)
    return OptimizeResult(w=w, status=status, message=msg, n_iter=it, lr=m.lr, history=hist.arrays(),
                          info=m.info())


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


def _ended_above_msg(it: int, f: float, f0: float) -> str:
    return (f"loss ended at {f:.3e} after {it} iterations, far above its start {f0:.3e} "
            f"(f − f₀ > {ENDED_ABOVE:g}·max(1, |f₀|)); the iteration diverged — use lr=auto or "
            "line_search=true")


def _stalled_msg(it: int, gn: float) -> str:
    return (f"Armijo line search found no decrease at iteration {it} (‖∇f‖ = {gn:.3e}); "
            "tol is below the attainable precision — raise tol")


def _diverged_msg(it: int, f: float, f0: float) -> str:
    if not np.isfinite(f):
        return (f"loss became non-finite at iteration {it}; the step is too large (lr > 2/L?) — "
                "use lr=auto or line_search=true; returned the last finite iterate")
    return (f"loss grew from {f0:.3e} to {f:.3e} by iteration {it}; the step is too large (lr > 2/L?) — "
            "use lr=auto or line_search=true; returned the last finite iterate")


# ---------------------------------------------------------------- line search


@dataclass(frozen=True)
class _LineSearch:
    """Armijo backtracking settings; ``enabled=False`` takes the full step t0."""

    enabled: bool
    c1: float
    rho: float
    max_bt: int

    def __call__(self, m: _Method, phi: Callable[[float], float], f0: float, slope: float, t0: float,
                 trial_cost: float) -> float | None:
        """The accepted step (t0 without line search), or None; each trial adds ``trial_cost`` passes."""
        if not self.enabled:
            return t0

        def counted(t: float) -> float:
            m.passes += trial_cost
            return phi(t)

        found = _armijo(counted, f0, slope, t0, self.c1, self.rho, self.max_bt)
        return None if found is None else found[0]


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


# ---------------------------------------------------------------- gradient descent


class _GD(_Method):
    """w ← w − t ∇f with t = lr (Armijo: the first lr·ρʲ giving sufficient decrease)."""

    def __init__(self, obj: Any, lr: float | None, search: _LineSearch) -> None:
        super().__init__(obj)
        self.search, self.extra = search, {}
        if lr is None:
            L = float(obj.lipschitz())
            if not (np.isfinite(L) and L > 0):
                raise NumericalError(f"smoothness constant L = {L} is not positive; set optimizer.lr explicitly")
            lr = 1.0 / L
            self.extra["L"] = L
        self.lr = lr

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float,
             it: int) -> tuple[FloatArray, float, FloatArray, float] | _Halt:
        t = self.search(self, _ray(self.obj, w, -g), f, -gn * gn, self.lr, FORWARD)
        if t is None:
            return _Halt("stalled", _stalled_msg(it, gn))
        w_new = w - t * g
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def info(self) -> dict[str, Any]:
        return dict(self.extra)


# ---------------------------------------------------------------- Newton


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


class _Newton(_Method):
    """w ← w + t s, s = −(H + τI)⁻¹ ∇f from the dense Hessian (t = 1, or Armijo from 1)."""

    def __init__(self, obj: Any, search: _LineSearch) -> None:
        super().__init__(obj)
        self.search, self.U = search, _gauge(obj)
        self.n_damped, self.max_tau = 0, 0.0

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float,
             it: int) -> tuple[FloatArray, float, FloatArray, float] | _Halt:
        U = self.U
        self.passes += self.obj.n_params * HVP  # the dense Hessian
        H = np.asarray(self.obj.hessian(w), dtype=np.float64)
        if U.shape[0]:
            H = H + (float(np.mean(np.abs(np.diag(H)))) or 1.0) * (U.T @ U)
        s, tau = damped_newton_step(H, g)
        if U.shape[0]:
            s -= U.T @ (U @ s)
        s = s.astype(w.dtype, copy=False)
        self.n_damped += tau > 0
        self.max_tau = max(self.max_tau, tau)
        t = self.search(self, _ray(self.obj, w, s), f, float(g @ s), 1.0, FORWARD)
        if t is None:
            return _Halt("stalled", _stalled_msg(it, gn))
        w_new = w + t * s
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def finish(self, status: str, message: str) -> tuple[str, str]:
        if self.n_damped:
            message += (f"; Hessian not positive definite at {self.n_damped} iterate(s), "
                        f"damped with τ ≤ {self.max_tau:.2e}")
        return status, message

    def info(self) -> dict[str, Any]:
        return {"n_damped": int(self.n_damped), "max_tau": self.max_tau}


# ---------------------------------------------------------------- Newton-CG


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


class _NewtonCG(_Method):
    """w ← w + t s with H s = −∇f solved by preconditioned CG to ‖r‖ ≤ max(min(0.5, √‖∇f‖)‖∇f‖, tol/2).

    The forcing term min(0.5, √‖∇f‖) gives superlinear convergence; the floor tol/2 keeps the last
    inner solve from over-solving: the next gradient is ≈ the CG residual, so a residual below
    ‖∇f‖ ≤ tol's half is all the stopping rule can use (``CG_TOL_SHARE``).

    Fast path for linear models: Z = X̃w is linear in w, so the line search needs no pass over X
    (Z(w + t s) = Z + t X̃s) and the gradient at the accepted point only the backward product."""

    def __init__(self, obj: Any, search: _LineSearch, cg_max_iter: int, preconditioner: str,
                 hvp_precision: str, tol: float = 0.0) -> None:
        super().__init__(obj)
        self.search, self.cg_max_iter, self.preconditioner = search, cg_max_iter, preconditioner
        self.tol = tol
        self.U = _gauge(obj)
        self.glm = all(hasattr(obj, a) for a in ("margins", "value_from_margins",
                                                  "value_grad_from_margins", "hess_operator"))
        precision = None if hvp_precision in ("auto", "float64") else "float32"
        if hvp_precision == "auto" and getattr(obj, "dtype", np.float64) == np.float64 and self.glm:
            precision = "float32"  # inner solves are inexact anyway; the gradient stays float64
        self.precision = precision
        self.Z: FloatArray | None = None
        self.cg_steps: list[int] = []
        self.block: Callable[[FloatArray], FloatArray] | None = None
        self.n_builds, self.n_negcurv = 0, 0

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        if not self.glm:
            return super().start(w)
        self.passes += GRADIENT
        self.Z = self.obj.margins(w)
        return self.obj.value_grad_from_margins(w, self.Z)

    def _operator(self, w: FloatArray) -> tuple[Callable[[FloatArray], FloatArray], Any]:
        obj = self.obj
        if not self.glm:
            def matvec(v: FloatArray) -> FloatArray:
                return np.asarray(obj.hvp(w, v), dtype=np.float64)

            return matvec, None
        op = obj.hess_operator(w, self.Z, precision=self.precision)
        minv: Any = None
        if self.preconditioner == "jacobi" and hasattr(op, "diagonal"):
            self.passes += FORWARD  # (X̃∘X̃)ᵀ D: one product with the data
            dg = op.diagonal()
            minv = np.where(dg > 0, 1.0 / np.maximum(dg, 1e-300), 1.0)
        elif self.preconditioner == "block" and hasattr(op, "class_block_solver"):
            self.passes += self._block_cost(None)
            minv = op.class_block_solver()
        elif self.preconditioner == "auto" and hasattr(op, "class_block_solver"):
            if self.cg_steps and self.cg_steps[-1] >= BLOCK_REBUILD_CG:
                self.passes += self._block_cost(BLOCK_MAX_ROWS)
                self.block = op.class_block_solver(max_rows=BLOCK_MAX_ROWS)
                self.n_builds += 1
            minv = self.block
        return op.matvec, minv

    def _block_cost(self, max_rows: int | None) -> float:
        """c Gram matrices over m rows of X̃: c·m·(d+1)² flops = m·(d+1)/(2n) gradients."""
        n = int(self.obj.n)
        m = n if max_rows is None else min(n, max_rows)
        return m * int(self.obj.n_rows) / (2.0 * n)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float,
             it: int) -> tuple[FloatArray, float, FloatArray, float] | _Halt:
        obj, U, glm = self.obj, self.U, self.glm
        eta = min(0.5, math.sqrt(gn))
        if gn > 0:  # no need to solve beyond what ‖∇f‖ ≤ tol can use (never looser than the forcing 0.5)
            eta = min(0.5, max(eta, CG_TOL_SHARE * self.tol / gn))
        matvec, minv = self._operator(w)
        s, n_cg, negc = pcg(matvec, -np.asarray(g, dtype=np.float64), eta, self.cg_max_iter, minv)
        self.passes += n_cg * HVP
        self.cg_steps.append(n_cg)
        self.n_negcurv += negc
        if U.shape[0]:
            s -= U.T @ (U @ s)
        s = s.astype(w.dtype, copy=False)
        slope = float(g @ s)
        if not slope < 0:
            return _Halt("stalled", f"CG returned no descent direction at iteration {it} "
                                    f"(‖∇f‖ = {gn:.3e}); raise tol")
        if glm:
            self.passes += FORWARD
            Zs = obj.margins(s)  # X̃ s: one pass over X, then line search for free
            phi = _ray(obj, w, s, self.Z, Zs)
        else:
            phi = _ray(obj, w, s)
        t = self.search(self, phi, f, slope, 1.0, 0.0 if glm else FORWARD)
        if t is None:
            return _Halt("stalled", _stalled_msg(it, gn))
        w_new = w + t * s
        if glm:
            self.passes += GRADIENT - FORWARD  # the backward product only
            self.Z = self.Z + t * Zs
            f_new, g_new = obj.value_grad_from_margins(w_new, self.Z)
        else:
            self.passes += GRADIENT
            f_new, g_new = obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def finish(self, status: str, message: str) -> tuple[str, str]:
        message += f"; {sum(self.cg_steps)} CG iterations in total"
        if self.n_negcurv:
            message += f", negative curvature met in {self.n_negcurv} Newton step(s)"
        return status, message

    def info(self) -> dict[str, Any]:
        return {"cg_iterations": sum(self.cg_steps), "cg_per_step": list(self.cg_steps),
                "preconditioner_builds": self.n_builds, "negative_curvature": self.n_negcurv,
                "hvp_precision": self.precision or "float64"}


# ---------------------------------------------------------------- closed form


class _ClosedForm(_Method):
    """One step to the exact minimizer of least squares, the normal equations by Cholesky."""

    def __init__(self, obj: Any) -> None:
        if not hasattr(obj, "closed_form"):
            raise ConfigError(f"optimizer=closed_form exists only for model=linear (got "
                              f"{getattr(obj, 'model', '?')}); use newton or newton_cg")
        super().__init__(obj)
        self.gn = math.inf

    def max_iter(self, max_iter: int) -> int:
        return 1

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        with self.clock.paused():  # logging only
            return self.obj.value_grad(w)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float,
             it: int) -> tuple[FloatArray, float, FloatArray, float] | _Halt:
        self.passes += GRADIENT + self.obj.n_params * HVP  # X̃ᵀy and the Gram matrix X̃ᵀX̃
        w_star = self.obj.closed_form()
        with self.clock.paused():  # logging only
            f_new, g_new = self.obj.value_grad(w_star)
        self.gn = float(np.linalg.norm(g_new))
        return w_star, f_new, g_new, 1.0

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        return "closed-form solution is non-finite; the normal equations are singular — set model.l2 > 0"

    def finish(self, status: str, message: str) -> tuple[str, str]:
        if status == "diverged":
            return status, message
        msg = f"normal equations solved by Cholesky; ‖∇f‖ = {self.gn:.3e}"
        if status == "converged":
            return status, msg
        return "stalled", msg + " (ill-conditioned: rounding limits the accuracy; set model.l2 > 0)"


# ---------------------------------------------------------------- stochastic gradient descent

SCHEDULES = ("constant", "inverse_time", "step")
SGD_DEFAULTS: dict[str, Any] = {"batch_size": 100, "epochs": 5, "schedule": "constant", "tau": 1.0,
                                "step_epochs": 1, "step_factor": 0.5, "momentum": 0.0,
                                "log_every": None, "seed": 0}
SGD_KEYS = tuple(k for k in SGD_DEFAULTS if k != "seed")  # the optimizer.* config keys of sgd


def sgd_rate(lr: float, schedule: str, epoch: float, tau: float, step_epochs: int,
             step_factor: float) -> float:
    """Step size after ``epoch`` epochs (fractional): constant lr, lr/(1 + epoch/τ) or
    lr·factor^⌊epoch/step_epochs⌋."""
    if schedule == "inverse_time":
        return lr / (1.0 + epoch / tau)
    if schedule == "step":
        return lr * step_factor ** math.floor(epoch / step_epochs)
    return lr


def minibatch_smoothness(L: float, L_max: float, n: int, batch_size: int) -> float:
    """Expected smoothness of a B-minibatch gradient (Gower et al. 2019, sampling without
    replacement): L_B = n(B−1)/(B(n−1))·L + (n−B)/(B(n−1))·L_max; L_1 = L_max, L_n = L."""
    B = min(batch_size, n)
    if n == 1:
        return L
    return n * (B - 1) / (B * (n - 1)) * L + (n - B) / (B * (n - 1)) * L_max


def check_sgd_options(opts: dict[str, Any]) -> None:
    """Raise a one-line ConfigError naming the optimizer.<key> of an SGD option out of range."""
    def bad(key: str, want: str) -> ConfigError:
        return ConfigError(f"optimizer.{key}={opts[key]!r} {want}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not (is_int(opts["batch_size"]) and opts["batch_size"] >= 1):
        raise bad("batch_size", "must be an integer ≥ 1")
    if not (is_int(opts["epochs"]) and opts["epochs"] >= 0):
        raise bad("epochs", "must be an integer ≥ 0")
    if opts["schedule"] not in SCHEDULES:
        raise bad("schedule", f"is unknown; use one of {', '.join(SCHEDULES)}")
    if not (isinstance(opts["tau"], int | float) and math.isfinite(opts["tau"]) and opts["tau"] > 0):
        raise bad("tau", "must be a positive number of epochs")
    if not (is_int(opts["step_epochs"]) and opts["step_epochs"] >= 1):
        raise bad("step_epochs", "must be an integer ≥ 1")
    if not (isinstance(opts["step_factor"], int | float) and 0 < opts["step_factor"] <= 1):
        raise bad("step_factor", "must lie in (0, 1]")
    if not (isinstance(opts["momentum"], int | float) and 0 <= opts["momentum"] < 1):
        raise bad("momentum", "must lie in [0, 1)")
    if opts["log_every"] is not None and not (is_int(opts["log_every"]) and opts["log_every"] >= 1):
        raise bad("log_every", "must be an integer ≥ 1 (minibatches) or null (once per epoch)")
    if not (is_int(opts["seed"]) and opts["seed"] >= 0):
        raise bad("seed", "must be an integer ≥ 0")


class _SGD(_Method):
    """Minibatch SGD: each epoch a fresh permutation (from ``seed``) cut into batches of B rows,
    v ← μv − η_t ∇f_B(w), w ← w + v (μ = momentum, 0: plain SGD), η_t from the schedule.

    One loop step = one epoch (or ``log_every`` minibatches, never across an epoch's end); the
    full f and ∇f at the logged point are for the history and the stopping rule only (off the
    clock, no passes)."""

    def __init__(self, obj: Any, lr: float | None, *, batch_size: int, epochs: int, schedule: str,
                 tau: float, step_epochs: int, step_factor: float, momentum: float,
                 log_every: int | None, seed: int) -> None:
        if not hasattr(obj, "batch_grad"):
            raise ConfigError("optimizer=sgd needs an objective with minibatch gradients (a linear model)")
        super().__init__(obj)
        n = int(obj.n)
        self.n, self.B = n, min(int(batch_size), n)
        self.n_batches = -(-n // self.B)
        self.per_step = self.n_batches if log_every is None else min(int(log_every), self.n_batches)
        self.steps_per_epoch = -(-self.n_batches // self.per_step)
        self.epochs = int(epochs)
        self.schedule, self.tau, self.step_epochs, self.step_factor = schedule, tau, step_epochs, step_factor
        self.momentum = float(momentum)
        self.extra: dict[str, Any] = {"batch_size": self.B, "batches_per_epoch": self.n_batches}
        if lr is None:
            L, L_max = float(obj.lipschitz()), float(obj.lipschitz_max())
            L_B = minibatch_smoothness(L, L_max, n, self.B)
            if not (np.isfinite(L_B) and L_B > 0):
                raise NumericalError(f"minibatch smoothness L_B = {L_B} is not positive; set optimizer.lr explicitly")
            lr = 1.0 / L_B
            self.extra.update(L=L, L_max=L_max, L_B=L_B)
        self.lr = lr
        self.rng = np.random.default_rng(int(seed))
        self.t, self.j, self.rows_read = 0, 0, 0  # updates so far; position in the epoch; rows read
        self.perm = np.arange(0)
        self.v: FloatArray | None = None

    def max_iter(self, max_iter: int) -> int:
        return self.epochs * self.steps_per_epoch

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        with self.clock.paused():  # logging only: SGD never needs the full gradient
            return self.obj.value_grad(w)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float,
             it: int) -> tuple[FloatArray, float, FloatArray, float] | _Halt:
        obj, B, mu = self.obj, self.B, self.momentum
        w = w.copy()
        if mu and self.v is None:
            self.v = np.zeros_like(w)
        eta = self.lr
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(self.per_step):
                if self.j == 0:
                    self.perm = self.rng.permutation(self.n)
                rows = self.perm[self.j * B:(self.j + 1) * B]
                eta = sgd_rate(self.lr, self.schedule, self.t / self.n_batches, self.tau,
                               self.step_epochs, self.step_factor)
                gb = obj.batch_grad(w, rows)
                if mu:
                    self.v *= mu
                    self.v -= eta * gb
                    w += self.v
                else:
                    w -= eta * gb
                self.rows_read += rows.shape[0]
                self.passes = self.rows_read / self.n  # exact at epoch ends
                self.t += 1
                self.j += 1
                if self.j == self.n_batches:
                    self.j = 0
                    break
            with self.clock.paused():  # logging only
                f_new, g_new = obj.value_grad(w)
        return w, f_new, g_new, eta

    def finish(self, status: str, message: str) -> tuple[str, str]:
        if status == "max_iter":  # the epochs are the budget: say so in their terms
            message = (f"{self.epochs} epoch(s) done ({self.t} minibatch updates of ≤ {self.B} rows); "
                       + message.split(" reached with ", 1)[-1])
        return status, message

    def info(self) -> dict[str, Any]:
        return {**self.extra, "updates": self.t, "epochs": self.t / self.n_batches}
