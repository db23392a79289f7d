"""Limited-memory BFGS: w ← w + t d, d = −H∇f by the two-loop recursion over the last ``memory``
curvature pairs (s, y), H₀ = γI with γ = sᵀy/yᵀy, t from a strong Wolfe line search
(Nocedal & Wright, Alg. 7.4, 3.5 and 3.6)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.backend import is_numpy, namespace
from pipeline.core.errors import ConfigError, OptionError, worded
from pipeline.core.solvers.arrays import all_finite, as_float64, cast_like, norm
from pipeline.core.solvers.loop import GRADIENT, Halt, Method, MethodOptions, Step
from pipeline.core.solvers.protocols import FloatArray, Objective

LBFGS_DEFAULTS: dict[str, Any] = {"memory": 10, "wolfe_c2": 0.9, "wolfe_max_evals": 20}
LBFGS_KEYS = tuple(LBFGS_DEFAULTS)
# a pair (s, y) is kept only if sᵀy > CURVATURE_EPS·‖s‖‖y‖ (H stays positive definite)
CURVATURE_EPS = 1.0e-10
# f within F_FLOOR·|f(w)| of f(w) is equal up to rounding: sufficient decrease is then read from
# φ' (Hager & Zhang's approximate Wolfe condition, exact for a quadratic φ)
F_FLOOR = 1.0e-13
# zoom: an interpolated trial keeps this share of the bracket from either end
ZOOM_MARGIN = 0.1
# expansion: the next trial lies in [EXPAND_MIN, EXPAND_MAX] × the current one
EXPAND_MIN, EXPAND_MAX = 1.1, 10.0


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def check_lbfgs_options(opts: dict[str, Any], armijo_c: float) -> None:
    """Raise a one-line ConfigError naming the first L-BFGS option out of range."""
    if not (_is_int(opts["memory"]) and opts["memory"] >= 1):
        raise OptionError("solver", "memory", opts["memory"], "must be an integer ≥ 1")
    c2 = opts["wolfe_c2"]
    if not (isinstance(c2, int | float) and armijo_c < c2 < 1):
        raise OptionError("solver", "wolfe_c2", c2,
                          "must lie in ({c1}, 1), above {solver.armijo_c}", c1=f"{armijo_c:g}")
    if not (_is_int(opts["wolfe_max_evals"]) and opts["wolfe_max_evals"] >= 1):
        raise OptionError("solver", "wolfe_max_evals", opts["wolfe_max_evals"],
                          "must be an integer ≥ 1")


def two_loop(g: FloatArray, pairs: deque[tuple[FloatArray, FloatArray, float]],
             gamma: float) -> FloatArray:
    """H g for the L-BFGS matrix H of the pairs (s, y, ρ = 1/sᵀy), oldest first, and H₀ = γI
    (float64, g's namespace; off numpy the inner products stay 0-d arrays on the device)."""
    xp = namespace(g)
    if is_numpy(xp):
        q = np.array(g, dtype=np.float64)

        def dot(a: FloatArray, b: FloatArray) -> Any:
            return float(a @ b)
    else:
        q = xp.astype(g, xp.float64, copy=True)

        def dot(a: FloatArray, b: FloatArray) -> Any:
            return a @ b
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * dot(s, q)
        q -= a * y
        alphas.append(a)
    r = gamma * q
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        r += (a - rho * dot(y, r)) * s
    return r


@dataclass(frozen=True)
class Trial:
    """One line-search evaluation: φ(t) = f(w + t d), ∇f there and φ'(t) = ∇f(w + t d)ᵀd."""

    t: float
    f: float
    g: FloatArray | None
    dphi: float

    @property
    def finite(self) -> bool:
        """φ(t) and φ'(t) finite."""
        return bool(math.isfinite(self.f) and math.isfinite(self.dphi))


def cubic_min(a: Trial, b: Trial) -> float:
    """The minimizer of the cubic through φ and φ' at a.t and b.t (N&W (3.59)); nan if none."""
    if a.t == b.t:
        return math.nan
    d1 = a.dphi + b.dphi - 3.0 * (a.f - b.f) / (a.t - b.t)
    disc = d1 * d1 - a.dphi * b.dphi
    if not (math.isfinite(disc) and disc >= 0):
        return math.nan
    d2 = math.copysign(math.sqrt(disc), b.t - a.t)
    den = b.dphi - a.dphi + 2.0 * d2
    if den == 0:
        return math.nan
    return b.t - (b.t - a.t) * (b.dphi + d2 - d1) / den


def secant_root(a: Trial, b: Trial) -> float:
    """The zero of the line through φ' at a.t and b.t (exact for a quadratic φ; no φ values, so
    no cancellation in f); nan if φ' is equal at both."""
    den = b.dphi - a.dphi
    return b.t - b.dphi * (b.t - a.t) / den if den != 0 else math.nan


def _zoom_trial(lo: Trial, hi: Trial) -> float:
    """The next trial inside the bracket, kept ``ZOOM_MARGIN`` from its ends: the zero of φ' by
    secant where φ' changes sign across it, else the cubic's minimizer (bisection if φ is not
    finite at an end or neither applies)."""
    a, b = min(lo.t, hi.t), max(lo.t, hi.t)
    t = math.nan
    if lo.finite and hi.finite:
        t = secant_root(lo, hi) if lo.dphi * hi.dphi < 0 else cubic_min(lo, hi)
    if not math.isfinite(t):
        return 0.5 * (a + b)
    pad = ZOOM_MARGIN * (b - a)
    return min(max(t, a + pad), b - pad)


def _expand_trial(prev: Trial, cur: Trial) -> float:
    """The next trial beyond ``cur`` while φ still descends: the zero of φ' extrapolated by secant,
    clipped to [``EXPAND_MIN``, ``EXPAND_MAX``] × cur.t."""
    t = secant_root(prev, cur)
    if not (math.isfinite(t) and t > cur.t):
        return 2.0 * cur.t
    return min(max(t, EXPAND_MIN * cur.t), EXPAND_MAX * cur.t)


def strong_wolfe(phi: Callable[[float], Trial], f0: float, slope: float, t0: float, c1: float,
                 c2: float, max_evals: int) -> tuple[Trial | None, bool, list[Trial]]:
    """A step t with φ(t) ≤ φ(0) + c1·t·φ'(0) and |φ'(t)| ≤ c2|φ'(0)| (φ'(0) = slope < 0) in at
    most ``max_evals`` evaluations (N&W Alg. 3.5 with the zoom of 3.6); where φ(t) is within
    ``F_FLOOR``·|φ(0)| of φ(0), φ'(t) ≤ (1 − 2c1)|φ'(0)| stands for the decrease.

    Returns (point, wolfe, trials): the Wolfe point, or else the lowest trial with sufficient
    decrease (wolfe False), or None; ``trials`` are all evaluations made."""
    trials: list[Trial] = []
    floor = F_FLOOR * abs(f0)

    def armijo(tr: Trial) -> bool:  # or, within f's rounding, its form for a quadratic φ
        return tr.finite and (tr.f <= f0 + c1 * tr.t * slope
                              or (tr.f <= f0 + floor and tr.dphi <= -(1.0 - 2.0 * c1) * slope))

    def curvature(tr: Trial) -> bool:
        return abs(tr.dphi) <= -c2 * slope

    prev, t = Trial(0.0, f0, None, slope), t0
    bracket: tuple[Trial, Trial] | None = None
    while bracket is None and len(trials) < max_evals:
        cur = phi(t)
        trials.append(cur)
        if not armijo(cur) or (prev.t > 0 and cur.f >= prev.f):
            bracket = (prev, cur)
        elif curvature(cur):
            return cur, True, trials
        elif cur.dphi >= 0:
            bracket = (cur, prev)
        else:
            prev, t = cur, _expand_trial(prev, cur)
    while bracket is not None and len(trials) < max_evals:
        lo, hi = bracket
        cur = phi(_zoom_trial(lo, hi))
        trials.append(cur)
        if not armijo(cur) or cur.f >= lo.f:
            bracket = (lo, cur)
        elif curvature(cur):
            return cur, True, trials
        else:
            bracket = (cur, lo) if cur.dphi * (hi.t - lo.t) >= 0 else (cur, hi)
    decreased = [tr for tr in trials if armijo(tr)]
    return (min(decreased, key=lambda tr: tr.f) if decreased else None), False, trials


class LBFGS(Method):
    """w ← w + t d, d = −H∇f (two-loop recursion, the last ``memory`` pairs with
    sᵀy > ``CURVATURE_EPS``·‖s‖‖y‖, H₀ = γI, γ = sᵀy/yᵀy of the newest pair), t satisfying the
    strong Wolfe conditions with c1 = armijo_c, c2 = wolfe_c2.

    The first step (and one after a reset) tries t = lr, or min(1, 1/‖∇f‖) for 'auto'; later
    steps t = 1. A search that finds no sufficient decrease drops the pairs and retries along −∇f
    once; a search whose every trial is non-finite hands the loop its last trial (diverged).
    Every trial evaluates f and ∇f (one pass each); the accepted trial's are the next iterate's."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        opts = {**LBFGS_DEFAULTS, **o.lbfgs}
        check_lbfgs_options(opts, o.search.c1)
        super().__init__(obj, o)
        self.c1, self.c2 = o.search.c1, float(opts["wolfe_c2"])
        self.max_evals, self.first_t = int(opts["wolfe_max_evals"]), o.lr
        self.pairs: deque[tuple[FloatArray, FloatArray, float]] = deque(
            maxlen=int(opts["memory"]))
        self.gamma = 1.0
        self.evals, self.skipped, self.resets, self.wolfe_misses = 0, 0, 0, 0
        self.min_cos: float | None = None  # min sᵀy/(‖s‖‖y‖) over the pairs kept

    def _direction(self, g: FloatArray, gn: float) -> tuple[FloatArray, float]:
        """(d, first trial t): −H∇f and 1, or −∇f and lr (auto: min(1, 1/‖∇f‖)) without pairs."""
        if self.pairs:
            return -two_loop(g, self.pairs, self.gamma), 1.0
        t0 = self.first_t if self.first_t is not None else min(1.0, 1.0 / gn)
        return -as_float64(self.xp, g), t0

    def _phi(self, w: FloatArray, d: FloatArray) -> Callable[[float], Trial]:
        """t ↦ the trial at w + t d (f and ∇f: one pass)."""
        xp = self.xp

        def phi(t: float) -> Trial:
            self.passes += GRADIENT
            self.evals += 1
            w_t = cast_like(xp, w + t * d, w)
            f, g = self.obj.value_grad(w_t)
            with np.errstate(over="ignore", invalid="ignore"):
                dphi = (float(np.dot(g.astype(np.float64), d)) if is_numpy(xp)
                        else float(as_float64(xp, g) @ d))
            # a non-finite entry of g makes φ' non-finite: only then are the entries read
            ok = math.isfinite(dphi) or all_finite(xp, g)
            return Trial(t, float(f), g, dphi if ok else math.nan)

        return phi

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One L-BFGS step; the pair (s, y) it makes is kept if its curvature is positive."""
        blown: Step | None = None  # the last trial, while every trial so far was non-finite
        finite_seen = False
        for retry in (False, True):
            if retry:
                if not self.pairs:
                    break
                self.pairs.clear()
                self.resets += 1
            d, t0 = self._direction(g, gn)
            slope = (float(np.dot(np.asarray(g, dtype=np.float64), d)) if is_numpy(self.xp)
                     else float(as_float64(self.xp, g) @ d))
            if not slope < 0:
                continue
            point, wolfe, trials = strong_wolfe(self._phi(w, d), f, slope, t0, self.c1, self.c2,
                                                self.max_evals)
            if point is not None and point.g is not None:
                self.wolfe_misses += not wolfe
                w_new = cast_like(self.xp, w + point.t * d, w)
                self._update(w_new - w, point.g - g)
                return w_new, point.f, point.g, point.t
            finite_seen = finite_seen or any(tr.finite for tr in trials)
            last = trials[-1] if trials else None
            if last is not None and last.g is not None:
                blown = cast_like(self.xp, w + last.t * d, w), last.f, last.g, last.t
        if blown is not None and not finite_seen:  # nothing finite along d: the loop diverges
            return blown
        return Halt("stalled", f"Wolfe line search found no decrease at iteration {it} "
                               f"(‖∇f‖ = {gn:.3e}); tol is below the attainable precision — "
                               "raise tol")

    def _update(self, s: FloatArray, y: FloatArray) -> None:
        """Keep (s, y) if sᵀy > ``CURVATURE_EPS``·‖s‖‖y‖ (else skip it); γ = sᵀy/yᵀy."""
        xp = self.xp
        s, y = as_float64(xp, s), as_float64(xp, y)
        sy, ns, ny = float(s @ y), norm(xp, s), norm(xp, y)
        if not (math.isfinite(sy) and sy > CURVATURE_EPS * ns * ny):
            self.skipped += 1
            return
        self.pairs.append((s, y, 1.0 / sy))
        self.gamma = sy / (ny * ny)
        cos = sy / (ns * ny)
        self.min_cos = cos if self.min_cos is None else min(self.min_cos, cos)

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """A non-finite f or ∇f at every trial of a line search."""
        return (f"loss or gradient became non-finite at iteration {it}: every trial of the Wolfe "
                "line search was non-finite (is f finite near the iterate?); returned the last "
                "finite iterate")

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """The message adds the pairs skipped for non-positive curvature."""
        if self.skipped:
            message += (f"; {self.skipped} curvature pair(s) skipped "
                        f"(sᵀy ≤ {CURVATURE_EPS:g}·‖s‖‖y‖)")
        return status, message

    def info(self) -> dict[str, Any]:
        """Memory, pairs kept/skipped, the smallest kept sᵀy/(‖s‖‖y‖), line-search evaluations,
        searches that ended without the Wolfe conditions, resets."""
        return {"memory": self.pairs.maxlen, "pairs": len(self.pairs),
                "pairs_skipped": self.skipped, "min_curvature_cos": self.min_cos,
                "line_search_evals": self.evals, "wolfe_misses": self.wolfe_misses,
                "resets": self.resets}


def reject_for(method: str, opts: dict[str, Any]) -> None:
    """L-BFGS options given to another method: one ConfigError naming them."""
    if opts and method != "lbfgs":
        raise ConfigError(worded("option(s) {keys} apply only to {solver}=lbfgs, not {method!r}; "
                                 "drop them", keys=sorted(opts), method=method))
