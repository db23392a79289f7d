"""Diagonal Newton: gradient descent preconditioned by the Hessian's diagonal,
w ← w − t D⁻¹∇f with D = diag ∇²f(w) (Becker & LeCun 1988's "pseudo-Newton")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.core.backend import is_numpy, namespace
from pipeline.core.errors import NumericalError
from pipeline.core.solvers.arrays import as_float64, cast_like, diagonal, solver_namespace
from pipeline.core.solvers.loop import (
    FORWARD,
    GRADIENT,
    HVP,
    Halt,
    Method,
    MethodOptions,
    Step,
    ray,
    stalled_msg,
)
from pipeline.core.solvers.protocols import DenseHessian, FloatArray, Margins, Objective


def hessian_diagonal(obj: Objective, w: FloatArray) -> FloatArray:
    """diag ∇²f(w): (1/n)(X̃∘X̃)ᵀ curvature + λ for a linear model (``Margins``: one pass), else
    the diagonal of the dense Hessian; float64, in the objective's namespace."""
    xp = solver_namespace(obj)
    if isinstance(obj, Margins):
        return as_float64(xp, obj.hess_operator(w).diagonal())
    if isinstance(obj, DenseHessian):
        return diagonal(xp, as_float64(xp, obj.hessian(w)))
    raise NumericalError("diag_newton needs the Hessian's diagonal: the objective offers neither "
                         "hess_operator nor hessian; choose another optimizer")


def inverse_diagonal(D: FloatArray) -> FloatArray:
    """1/D where D > 0, else 0 (a coordinate without curvature, e.g. an all-zero pixel without a
    penalty, has a zero gradient too and is not moved)."""
    if not isinstance(D, np.ndarray):
        xp = namespace(D)
        pos = D > 0
        return xp.where(pos, 1.0 / xp.where(pos, D, xp.ones_like(D)), xp.zeros_like(D))
    inv = np.zeros_like(D)
    np.divide(1.0, D, out=inv, where=D > 0)
    return inv


def smallest_positive(xp: Any, D: FloatArray) -> float | None:
    """min {D_i : D_i > 0}, None if there is none."""
    if is_numpy(xp):
        pos = D[D > 0]
        return float(pos.min()) if pos.size else None
    low = float(xp.min(xp.where(D > 0, D, xp.full_like(D, math.inf))))
    return low if math.isfinite(low) else None


class DiagNewton(Method):
    """w ← w − t D⁻¹∇f, D = diag ∇²f(w) rebuilt at every iterate; t = lr (1 for 'auto': Newton's
    step on a Hessian that is diagonal), or Armijo backtracking from it. Each iteration pays the
    diagonal (one pass) and the gradient at the new point (one pass)."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        super().__init__(obj, o)
        self.search, self.lr = o.search, (o.lr if o.lr is not None else 1.0)
        self.min_diag: float | None = None  # the smallest positive diagonal entry seen

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One (backtracked) diagonally preconditioned step."""
        self.passes += HVP  # the diagonal: (X̃∘X̃)ᵀ curvature, one pass
        D, xp = hessian_diagonal(self.obj, w), self.xp
        low = smallest_positive(xp, D)
        if low is not None:
            self.min_diag = low if self.min_diag is None else min(self.min_diag, low)
        s = cast_like(xp, -inverse_diagonal(D) * as_float64(xp, g), w)
        t = self.search(self, ray(self.obj, w, s), f, float(g @ s), self.lr, FORWARD)
        if t is None:
            return Halt("stalled", stalled_msg(it, gn))
        w_new = w + t * s
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def info(self) -> dict[str, Any]:
        """The smallest positive diagonal entry of ∇²f met (how far the scaling stretched)."""
        return {"min_hessian_diagonal": self.min_diag}
