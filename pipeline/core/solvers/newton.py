"""Exact Newton: w ← w + t s, s = −(H + τI)⁻¹ ∇f from the dense Hessian by Cholesky."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import device
from scipy import linalg as sla

from pipeline.core.backend import is_numpy, namespace
from pipeline.core.errors import NumericalError
from pipeline.core.linalg import SingularMatrixError, cholesky_solve
from pipeline.core.solvers.arrays import all_finite, as_float64, cast_like, diagonal
from pipeline.core.solvers.loop import (
    FORWARD,
    GRADIENT,
    HVP,
    Halt,
    Method,
    MethodOptions,
    Step,
    gauge,
    ray,
    stalled_msg,
)
from pipeline.core.solvers.protocols import DenseHessian, FloatArray


def damped_newton_step(H: FloatArray, g: FloatArray,
                       beta: float = 1.0e-3) -> tuple[FloatArray, float]:
    """s = −(H + τI)⁻¹ g by Cholesky with the smallest τ ∈ {0, τ₀·2^k} that makes H + τI positive
    definite (Nocedal & Wright, Alg. 3.3; τ₀ from the diagonal, scaled by β·mean|diag H|).
    H and g of any array namespace (numpy: SciPy's Cholesky; others: ``linalg.cholesky_solve``)."""
    xp = namespace(H, g)
    if not is_numpy(xp):
        return _damped_step_xp(xp, as_float64(xp, H), as_float64(xp, g), beta)
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
    raise NumericalError("Hessian could not be made positive definite by damping; "
                         "the loss is not finite-curvature")


def _damped_step_xp(xp: Any, H: Any, g: Any, beta: float) -> tuple[Any, float]:
    """``damped_newton_step`` on a namespace other than numpy."""
    d = xp.linalg.diagonal(H)
    scale = float(xp.mean(xp.abs(d))) or 1.0
    dmin = float(xp.min(d))
    tau = 0.0 if dmin > 0 else -dmin + beta * scale
    eye = xp.eye(H.shape[0], dtype=H.dtype, device=device(H))
    for _ in range(80):
        try:
            s = -cholesky_solve(H + tau * eye if tau else H, g)
            if all_finite(xp, s):
                return s, tau
        except SingularMatrixError:
            pass
        tau = max(2.0 * tau, beta * scale)
    raise NumericalError("Hessian could not be made positive definite by damping; "
                         "the loss is not finite-curvature")


class Newton(Method):
    """w ← w + t s, s = −(H + τI)⁻¹ ∇f from the dense Hessian (t = 1, or Armijo from 1)."""

    obj: DenseHessian

    def __init__(self, obj: DenseHessian, o: MethodOptions) -> None:
        super().__init__(obj, o)
        self.search, self.U = o.search, gauge(obj)
        self.n_damped, self.max_tau = 0, 0.0

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One damped Newton step (gauge directions projected out)."""
        U, xp = self.U, self.xp
        self.passes += self.obj.n_params * HVP  # the dense Hessian
        H = as_float64(xp, self.obj.hessian(w))
        if U.shape[0]:
            H = H + (float(xp.mean(xp.abs(diagonal(xp, H)))) or 1.0) * (U.T @ U)
        s, tau = damped_newton_step(H, g)
        if U.shape[0]:
            s -= U.T @ (U @ s)
        s = cast_like(xp, s, w)
        self.n_damped += tau > 0
        self.max_tau = max(self.max_tau, tau)
        t = self.search(self, ray(self.obj, w, s), f, float(g @ s), 1.0, FORWARD)
        if t is None:
            return Halt("stalled", stalled_msg(it, gn))
        w_new = w + t * s
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """The message says where the Hessian needed damping."""
        if self.n_damped:
            message += (f"; Hessian not positive definite at {self.n_damped} iterate(s), "
                        f"damped with τ ≤ {self.max_tau:.2e}")
        return status, message

    def info(self) -> dict[str, Any]:
        """Damped iterates and the largest τ."""
        return {"n_damped": int(self.n_damped), "max_tau": self.max_tau}
