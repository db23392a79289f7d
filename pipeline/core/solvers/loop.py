"""The one iteration loop every method runs on, and what it shares with them.

Each method is a ``Method`` that knows how to take ONE step (``start`` evaluates the start point,
``step`` returns the next iterate with f and ∇f there, or a ``Halt``); ``iterate`` is the one loop
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
m·(d+1)/(2n)); SGD pays B/n per minibatch of B rows, 1 per epoch; L-BFGS pays 1 per trial of its
Wolfe line search (f and ∇f there); diagonal Newton pays 1 for diag ∇²f ((X̃∘X̃)ᵀ curvature) and
1 for the gradient per iteration, ½ per Armijo trial. Evaluations made only for the history
(SGD's full loss and gradient at a logged point) cost nothing here, as on the clock.

Vectors (w, ∇f, directions) stay in the objective's array namespace (``Method.xp``, see
``arrays``); f, ‖∇f‖, step sizes and the history are Python floats, and the returned w is of the
objective's namespace.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.backend import NUMPY_XP, is_numpy
from pipeline.core.errors import NumericalError
from pipeline.core.solvers.arrays import as_float64, norm_if_finite, solver_namespace
from pipeline.core.solvers.protocols import FloatArray, Gauged, Objective

HISTORY_KEYS = ("iteration", "time_s", "loss", "grad_norm", "step_size", "passes")
# cost of one operation in passes over the data (module docstring)
FORWARD = 0.5  # X̃w: a value-only evaluation
GRADIENT = 1.0  # X̃w and X̃ᵀr
HVP = 1.0  # X̃v and X̃ᵀ(D X̃v)
# a run that stops on max_iter or its time budget with f − f₀ > ENDED_ABOVE · max(1, |f₀|) diverged
ENDED_ABOVE = 1.0e3

Callback = Callable[[int, dict[str, float]], Any]
Step = tuple[FloatArray, float, FloatArray, float]  # w_new, f(w_new), ∇f(w_new), step size


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


class Clock:
    """Wall clock that can be paused around logging-only work."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._t0: float | None = time.perf_counter()

    def pause(self) -> None:
        """Stop counting (elapsed keeps the time so far)."""
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None

    def resume(self) -> None:
        """Count again."""
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
        """Seconds counted so far."""
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)


class History:
    """Rows of ``HISTORY_KEYS``, one per iterate; each row goes to the callback off the clock."""

    def __init__(self, clock: Clock, callback: Callback | None) -> None:
        self.rows: list[tuple[float, ...]] = []
        self.clock, self.callback = clock, callback

    def add(self, it: int, passes: float, loss: float, grad_norm: float, step: float) -> None:
        """Record iterate ``it`` (and call the callback with its row)."""
        self.clock.pause()
        rec = {"iteration": it, "time_s": self.clock.elapsed, "loss": float(loss),
               "grad_norm": float(grad_norm), "step_size": float(step), "passes": float(passes)}
        self.rows.append(tuple(rec.values()))
        if self.callback is not None:
            self.callback(it, rec)
        self.clock.resume()

    def arrays(self) -> dict[str, np.ndarray]:
        """One array per key (``iteration`` as int64)."""
        a = np.array(self.rows, dtype=np.float64).reshape(-1, len(HISTORY_KEYS))
        out = {k: a[:, i] for i, k in enumerate(HISTORY_KEYS)}
        out["iteration"] = out["iteration"].astype(np.int64)
        return out


@dataclass(frozen=True)
class Halt:
    """A method's way to end the run before taking a step (e.g. a line search found no decrease)."""

    status: str
    message: str


class Method:
    """One optimizer's step rule on ``iterate``: ``start`` evaluates the start point, ``step``
    returns (w_new, f(w_new), ∇f(w_new), step size) or a ``Halt``; ``passes`` counts the work
    (module docstring); ``clock`` is set by the loop (for logging-only evaluations); ``xp`` is
    the objective's array namespace, where every vector of the method lives."""

    lr: float | None = None

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        self.obj = obj
        self.xp = solver_namespace(obj)
        self.passes = 0.0
        self.clock = Clock()

    def max_iter(self, max_iter: int) -> int:
        """The iteration limit the loop applies (closed form: one step; SGD: from its epochs)."""
        return max_iter

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        """(f, ∇f) at the start point."""
        self.passes += GRADIENT
        return self.obj.value_grad(w)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """The next iterate from w (f, g = ∇f, gn = ‖g‖ there) at iteration ``it``, or a halt."""
        raise NotImplementedError

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """The final (status, message) — a method may add what it learned on the way."""
        return status, message

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """What a diverged run's message says."""
        return diverged_msg(it, f, f0)

    def info(self) -> dict[str, Any]:
        """Method extras for ``OptimizeResult.info``."""
        return {}


def iterate(m: Method, w: FloatArray, *, max_iter: int, tol: float, budget: float | None,
            callback: Callback | None, div: float) -> OptimizeResult:
    """The shared loop: stop test → step → divergence check → history row (+ callback), until a
    stop rule, a halt or divergence; returns the last finite iterate."""
    clock = Clock()
    m.clock = clock
    hist = History(clock, callback)
    xp = getattr(m, "xp", NUMPY_XP)
    f, g = m.start(w)
    blown, gn = measure(xp, f, g, f, math.inf)
    if blown:
        raise NumericalError("loss or gradient is non-finite at the start point; check the data "
                             "and w0")
    f0 = f
    hist.add(0, m.passes, f, gn, 0.0)
    it, status, msg = 0, "max_iter", ""
    while True:
        stop = stop_rule(it, gn, tol, max_iter, clock, budget)
        if stop:
            status, msg = stop
            break
        out = m.step(w, f, g, gn, it)
        if isinstance(out, Halt):
            status, msg = out.status, out.message
            break
        w_new, f_new, g_new, t = out
        it += 1
        blown, gn_new = measure(xp, f_new, g_new, f0, div)
        hist.add(it, m.passes, f_new, gn_new, t)
        if blown:
            status, msg = "diverged", m.diverged_message(it, f_new, f0)
            break
        w, f, g, gn = w_new, f_new, g_new, gn_new
    if status in ("max_iter", "time_budget") and f - f0 > ENDED_ABOVE * max(1.0, abs(f0)):
        status, msg = "diverged", ended_above_msg(it, f, f0)
    status, msg = m.finish(status, msg)
    return OptimizeResult(w=w, status=status, message=msg, n_iter=it, lr=m.lr,
                          history=hist.arrays(), info=m.info())


def measure(xp: Any, f: float, g: FloatArray, f0: float, div: float) -> tuple[bool, float]:
    """(``blew_up``, ‖g‖) — ‖g‖ = inf where g is not finite. numpy: as ``blew_up`` then the
    norm; other namespaces read ‖g‖ back first and check the entries only where it is not finite."""
    if is_numpy(xp):
        if blew_up(f, g, f0, div):
            with np.errstate(over="ignore"):
                return True, (float(np.linalg.norm(g)) if np.all(np.isfinite(g)) else np.inf)
        return False, float(np.linalg.norm(g))
    gn, ok = norm_if_finite(xp, g)
    f = float(f)
    blown = not (ok and math.isfinite(f)) or f - f0 > div * max(1.0, abs(f0))
    return blown, (gn if ok else math.inf)


def finite(f: float, g: FloatArray) -> bool:
    """f and every entry of the numpy array g are finite."""
    return bool(np.isfinite(f) and np.all(np.isfinite(g)))


def stop_rule(it: int, gn: float, tol: float, max_iter: int, clock: Clock,
              budget: float | None) -> tuple[str, str] | None:
    """(status, message) when ‖∇f‖ ≤ tol, it ≥ max_iter or the time budget is spent; else None."""
    if gn <= tol:
        return "converged", f"‖∇f‖ = {gn:.3e} ≤ tol = {tol:.1e} after {it} iterations"
    if it >= max_iter:
        return "max_iter", f"max_iter = {max_iter} reached with ‖∇f‖ = {gn:.3e} > tol = {tol:.1e}"
    if budget is not None and clock.now() >= budget:
        return "time_budget", (f"time budget {budget:g} s used up after {it} iterations "
                               f"(‖∇f‖ = {gn:.3e})")
    return None


def blew_up(f: float, g: FloatArray, f0: float, div: float) -> bool:
    """numpy's divergence test: f or ∇f non-finite, or f − f₀ > div · max(1, |f₀|)."""
    return not finite(f, g) or f - f0 > div * max(1.0, abs(f0))


def stalled_msg(it: int, gn: float) -> str:
    """The message of a line search that found no decrease."""
    return (f"Armijo line search found no decrease at iteration {it} (‖∇f‖ = {gn:.3e}); "
            "tol is below the attainable precision — raise tol")


def ended_above_msg(it: int, f: float, f0: float) -> str:
    """The message of a run that stopped far above its starting loss."""
    return (f"loss ended at {f:.3e} after {it} iterations, far above its start {f0:.3e} "
            f"(f − f₀ > {ENDED_ABOVE:g}·max(1, |f₀|)); the iteration diverged — use lr=auto or "
            "line_search=true")


def diverged_msg(it: int, f: float, f0: float) -> str:
    """The message of a loss that became non-finite or grew past the divergence factor."""
    if not np.isfinite(f):
        return (f"loss became non-finite at iteration {it}; the step is too large (lr > 2/L?) — "
                "use lr=auto or line_search=true; returned the last finite iterate")
    return (f"loss grew from {f0:.3e} to {f:.3e} by iteration {it}; the step is too large "
            "(lr > 2/L?) — use lr=auto or line_search=true; returned the last finite iterate")


# ---------------------------------------------------------------- line search


@dataclass(frozen=True)
class LineSearch:
    """Armijo backtracking settings; ``enabled=False`` takes the full step t0."""

    enabled: bool
    c1: float
    rho: float
    max_bt: int

    def __call__(self, m: Method, phi: Callable[[float], float], f0: float, slope: float, t0: float,
                 trial_cost: float) -> float | None:
        """The accepted step (t0 without line search) or None; a trial costs ``trial_cost``."""
        if not self.enabled:
            return t0

        def counted(t: float) -> float:
            m.passes += trial_cost
            return phi(t)

        found = armijo(counted, f0, slope, t0, self.c1, self.rho, self.max_bt)
        return None if found is None else found[0]


def armijo(phi: Callable[[float], float], f0: float, slope: float, t0: float, c1: float,
           rho: float, max_bt: int) -> tuple[float, float] | None:
    """Backtracking: the first t = t0·ρ^j with φ(t) ≤ f0 + c1·t·slope, slope = ∇fᵀs < 0; or None."""
    t = t0
    for _ in range(max_bt):
        ft = phi(t)
        if np.isfinite(ft) and ft <= f0 + c1 * t * slope:
            return t, ft
        t *= rho
    return None


def ray(obj: Objective, w: FloatArray, s: FloatArray) -> Callable[[float], float]:
    """φ(t) = f(w + t s)."""
    return lambda t: obj.value(w + t * s)


def gauge(obj: Objective) -> FloatArray:
    """The exact flat directions of ``obj`` as float64 rows in its namespace (none: shape
    (0, p))."""
    U = obj.gauge_directions() if isinstance(obj, Gauged) else None
    xp = solver_namespace(obj)
    if is_numpy(xp):
        if U is None or U.size == 0:
            return np.zeros((0, obj.n_params))
        return np.asarray(U, dtype=np.float64)
    if U is None or U.shape[0] == 0:
        return xp.zeros((0, obj.n_params), dtype=xp.float64)
    return as_float64(xp, U)


@dataclass(frozen=True)
class MethodOptions:
    """Checked options: lr (None = 'auto'), the Armijo settings, tol, Newton-CG's inner solve, and
    the SGD-only and L-BFGS-only options as given (``sgd``, ``lbfgs``)."""

    lr: float | None
    search: LineSearch
    tol: float
    cg_max_iter: int
    preconditioner: str
    hvp_precision: str
    sgd: dict[str, Any] = field(default_factory=dict)
    lbfgs: dict[str, Any] = field(default_factory=dict)
