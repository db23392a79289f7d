"""Gradient descent: w ← w − t ∇f, t = lr (1/L for 'auto') or Armijo backtracking from lr."""

from __future__ import annotations

from typing import Any

from pipeline.core.solvers.first_order import smoothness
from pipeline.core.solvers.loop import (
    FORWARD,
    GRADIENT,
    Halt,
    Method,
    MethodOptions,
    Step,
    ray,
    stalled_msg,
)
from pipeline.core.solvers.protocols import FloatArray, Objective


class GradientDescent(Method):
    """w ← w − t ∇f with t = lr (Armijo: the first lr·ρʲ giving sufficient decrease)."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        super().__init__(obj, o)
        self.search, self.extra, lr = o.search, {}, o.lr
        if lr is None:
            L = smoothness(obj)
            lr = 1.0 / L
            self.extra["L"] = L
        self.lr = lr

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One (backtracked) gradient step."""
        t = self.search(self, ray(self.obj, w, -g), f, -gn * gn, self.lr, FORWARD)
        if t is None:
            return Halt("stalled", stalled_msg(it, gn))
        w_new = w - t * g
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def info(self) -> dict[str, Any]:
        """L where lr = 1/L was derived."""
        return dict(self.extra)
