"""Polyak's heavy ball: w_{k+1} = w_k − α ∇f(w_k) + β (w_k − w_{k−1}), with α = lr and
β = momentum; ``auto`` is the optimal pair on a quadratic with known μ and L."""

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

HEAVY_BALL_DEFAULTS: dict[str, Any] = {"momentum": "auto"}
# momentum 'auto' when μ is unknown or 0 (``heavy_ball_parameters``)
FALLBACK_MOMENTUM = 0.9


def optimal_heavy_ball(L: float, mu: float) -> tuple[float, float]:
    """Polyak's optimal pair on a quadratic with μI ⪯ H ⪯ LI: α = 4/(√L + √μ)²,
    β = ((√κ − 1)/(√κ + 1))² with κ = L/μ (rate (√κ − 1)/(√κ + 1))."""
    rk = math.sqrt(L / mu)
    return 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2, ((rk - 1.0) / (rk + 1.0)) ** 2


def heavy_ball_parameters(obj: Objective, lr: float | None,
                          momentum: float | None) -> tuple[float, float, dict[str, float]]:
    """(α, β, what was derived); None = 'auto'. Both 'auto' and μ > 0 known (``StronglyConvex``):
    the optimal quadratic pair. Otherwise β 'auto' = 0.9, and α 'auto' = (1 − β)/L — inside
    Ghadimi et al.'s (2015) convergent range α ∈ (0, 2(1 − β)/L) for convex L-smooth f, with the
    effective step α/(1 − β) = 1/L of GD."""
    b = FALLBACK_MOMENTUM if momentum is None else momentum
    if lr is not None:
        return lr, b, {}
    L = smoothness(obj)
    if momentum is not None:
        return (1.0 - b) / L, b, {"L": L}
    mu = strong_convexity(obj)
    if mu > 0:
        a, b = optimal_heavy_ball(L, mu)
        return a, b, {"L": L, "mu": mu}
    return (1.0 - b) / L, b, {"L": L, "mu": mu}


def check_momentum(value: Any) -> float | None:
    """β ∈ [0, 1), or None for 'auto'."""
    if value == "auto":
        return None
    if not (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value < 1):
        raise OptionError("solver", "momentum", value, "must lie in [0, 1) or be 'auto'")
    return float(value)


class HeavyBall(Method):
    """w_{k+1} = w_k − α ∇f(w_k) + β (w_k − w_{k−1}); the first step is a gradient step."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        refuse_line_search(o, "heavy_ball")
        super().__init__(obj, o)
        opts = {**HEAVY_BALL_DEFAULTS, **o.sgd}
        self.lr, self.momentum, self.extra = heavy_ball_parameters(
            obj, o.lr, check_momentum(opts["momentum"]))
        self.prev: FloatArray | None = None

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One momentum step."""
        w_new = w - self.lr * g
        if self.prev is not None:
            w_new += self.momentum * (w - self.prev)
        self.prev = w
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, self.lr

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """Too large a step, in this method's terms."""
        return step_too_large_msg(it, f, f0)

    def info(self) -> dict[str, Any]:
        """The momentum used, and L, μ where lr or momentum was derived."""
        return {**self.extra, "momentum": self.momentum}
