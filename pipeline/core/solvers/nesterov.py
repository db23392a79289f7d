"""Nesterov's accelerated gradient: x_{k+1} = y_k − α ∇f(y_k),
y_{k+1} = x_{k+1} + β_k (x_{k+1} − x_k), α = lr (1/L for 'auto'); optional adaptive restart
(O'Donoghue & Candès 2015)."""

from __future__ import annotations

import math
from typing import Any

from pipeline.core.errors import OptionError
from pipeline.core.solvers.first_order import (
    refuse_line_search,
    smoothness,
    step_too_large_msg,
    strong_convexity,
)
from pipeline.core.solvers.loop import GRADIENT, Halt, Method, MethodOptions, Step
from pipeline.core.solvers.protocols import FloatArray, Objective

RESTARTS = ("none", "function", "gradient")
NESTEROV_DEFAULTS: dict[str, Any] = {"restart": "none"}


def check_restart(value: Any) -> str:
    """One of ``RESTARTS``, or a one-line error naming ``restart``."""
    if value not in RESTARTS:
        raise OptionError("solver", "restart", value,
                          f"is unknown; use one of {', '.join(RESTARTS)}")
    return str(value)


def constant_momentum(mu: float, lr: float) -> float:
    """β = (1 − √q)/(1 + √q) with q = μα (= 1/κ at α = 1/L): strongly convex f."""
    q = math.sqrt(min(1.0, mu * lr))
    return (1.0 - q) / (1.0 + q)


def next_t(t: float) -> float:
    """t_{k+1} = (1 + √(1 + 4 t_k²))/2 (t_0 = 1); the momentum is β_k = (t_k − 1)/t_{k+1}."""
    return 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))


class Nesterov(Method):
    """Accelerated gradient on the extrapolated points: the loop's iterate is y_k (f and ∇f there
    are what the next step needs, one pass per iteration), x_k is kept here. β_k is constant
    (``constant_momentum``) when μ > 0 is known (``StronglyConvex``), else the t_k sequence.

    Restart (β_k = 0 and t reset to 1 for that step): ``gradient`` when ∇f(y_k)ᵀ(x_{k+1} − x_k) > 0;
    ``function`` when f(y_k) > f(y_{k−1}) (the values already evaluated, one step late)."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        refuse_line_search(o, "nesterov")
        super().__init__(obj, o)
        opts = {**NESTEROV_DEFAULTS, **o.sgd}
        self.restart = check_restart(opts["restart"])
        self.extra: dict[str, Any] = {}
        if o.lr is None:
            self.extra["L"] = smoothness(obj)
        self.lr = o.lr if o.lr is not None else 1.0 / self.extra["L"]
        mu = strong_convexity(obj)
        self.beta = constant_momentum(mu, self.lr) if mu > 0 else None
        self.extra["mu"] = mu
        self.t, self.restarts = 1.0, 0
        self.x: FloatArray | None = None
        self.f_prev = math.inf

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """x_{k+1} from y_k = w, then the extrapolated y_{k+1} and f, ∇f there."""
        x_new = w - self.lr * g
        x = w if self.x is None else self.x
        t_new = next_t(self.t)
        beta = self.beta if self.beta is not None else (self.t - 1.0) / t_new
        if self._restarts(f, g, x_new - x):
            beta, t_new = 0.0, 1.0
            self.restarts += 1
        self.x, self.t, self.f_prev = x_new, t_new, f
        y_new = x_new + beta * (x_new - x)
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(y_new)
        return y_new, f_new, g_new, self.lr

    def _restarts(self, f: float, g: FloatArray, dx: FloatArray) -> bool:
        """The restart test of the chosen scheme."""
        if self.restart == "gradient":
            return float(g @ dx) > 0.0
        if self.restart == "function":
            return f > self.f_prev
        return False

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """Too large a step, in this method's terms."""
        return step_too_large_msg(it, f, f0)

    def info(self) -> dict[str, Any]:
        """L (lr 'auto'), μ, the constant momentum (if any) and the number of restarts."""
        return {**self.extra, "momentum": self.beta, "restarts": self.restarts}
