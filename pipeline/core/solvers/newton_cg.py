"""Newton-CG: the Newton system solved inexactly by preconditioned conjugate gradients on
Hessian-vector products (Hessian-free), with a fast path for linear models (``Margins``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.core.backend import is_numpy, namespace
from pipeline.core.solvers.arrays import as_float64, cast_like, copy, dtype_name, norm
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
from pipeline.core.solvers.protocols import (
    BlockSolver,
    Diagonal,
    FloatArray,
    HessianVector,
    Margins,
    Objective,
)

# 'auto' preconditioner: (re)build the class-block preconditioner before a Newton step when the
# previous inner solve needed at least this many CG iterations (cheap early steps skip it) ...
BLOCK_REBUILD_CG = 8
# ... from at most this many evenly spread rows (a sub-sampled curvature estimate is enough).
BLOCK_MAX_ROWS = 20_000
# Newton-CG's inner solve stops at ‖r‖ ≤ this share of tol at the latest (the next ‖∇f‖ ≈ ‖r‖)
CG_TOL_SHARE = 0.5

Preconditioner = FloatArray | Callable[[FloatArray], FloatArray] | None


def pcg(matvec: Callable[[FloatArray], FloatArray], b: FloatArray, rtol: float, maxiter: int,
        minv: Preconditioner = None) -> tuple[FloatArray, int, bool]:
    """Preconditioned CG for H x = b to ‖r‖ ≤ rtol‖b‖ (M⁻¹ = diag(minv) or the map minv); stops at
    negative curvature.

    Returns (x, iterations, negative_curvature_found); at negative curvature on the first
    iteration x is the preconditioned right-hand side (a descent direction when b = −∇f).

    b of any array namespace; x, r, p stay there and only the scalars a CG iteration steers by
    (pᵀAp, ‖r‖, rᵀz) are read back as floats — without a preconditioner off numpy, once per
    iteration (``plain_cg``)."""
    xp = namespace(b)
    if minv is None and not is_numpy(xp):
        return plain_cg(matvec, b, rtol, maxiter)
    x = xp.zeros_like(b)
    r = copy(xp, b)

    def prec(v: FloatArray) -> FloatArray:
        if minv is None:
            return v
        return minv(v) if callable(minv) else v * minv

    z = prec(r)
    p = copy(xp, z)
    rz = float(r @ z)
    target = rtol * norm(xp, b)
    for i in range(maxiter):
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0:
            return (z if i == 0 else x), i + 1, True
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        if norm(xp, r) <= target:
            return x, i + 1, False
        z = prec(r)
        rz_new = float(r @ z)
        p *= rz_new / rz
        p += z
        rz = rz_new
    return x, maxiter, False


def plain_cg(matvec: Callable[[FloatArray], FloatArray], b: FloatArray, rtol: float,
             maxiter: int) -> tuple[FloatArray, int, bool]:
    """``pcg`` without a preconditioner, one read-back per iteration: α = rᵀr/pᵀAp and the
    updates x + αp, r − αAp are queued on the device, then pᵀAp and the new rᵀr come back together
    (negative curvature discards the update)."""
    xp = namespace(b)
    x, r, p = xp.zeros_like(b), copy(xp, b), copy(xp, b)
    rr = float(r @ r)
    target = rtol * math.sqrt(rr)
    for i in range(maxiter):
        Ap = matvec(p)
        pAp_dev = p @ Ap
        alpha = rr / pAp_dev
        x_new, r_new = x + alpha * p, r - alpha * Ap
        both = xp.stack([pAp_dev, r_new @ r_new])
        pAp, rr_new = float(both[0]), float(both[1])  # one synchronization
        if not pAp > 0:
            return (copy(xp, b) if i == 0 else x), i + 1, True
        x, r = x_new, r_new
        if math.sqrt(rr_new) <= target:
            return x, i + 1, False
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, maxiter, False


def jacobi(xp: Any, dg: FloatArray) -> FloatArray:
    """The Jacobi preconditioner M⁻¹ = 1/diag H where diag H > 0, else 1."""
    if is_numpy(xp):
        return np.where(dg > 0, 1.0 / np.maximum(dg, 1e-300), 1.0)
    pos = dg > 0
    ones = xp.ones_like(dg)
    return xp.where(pos, 1.0 / xp.where(pos, dg, ones), ones)


def margin_ray(obj: Margins, w: FloatArray, s: FloatArray, Z: FloatArray,
               Zs: FloatArray) -> Callable[[float], float]:
    """φ(t) = f(w + t s) from the margins Z + t·Zs (no pass over X)."""
    return lambda t: obj.value_from_margins(w + t * s, Z + t * Zs)


class NewtonCG(Method):
    """w ← w + t s, H s = −∇f solved by preconditioned CG to ‖r‖ ≤ max(min(½, √‖∇f‖)‖∇f‖, tol/2).

    The forcing term min(0.5, √‖∇f‖) gives superlinear convergence; the floor tol/2 keeps the last
    inner solve from over-solving: the next gradient is ≈ the CG residual, so a residual below
    ‖∇f‖ ≤ tol's half is all the stopping rule can use (``CG_TOL_SHARE``).

    Fast path for linear models: Z = X̃w is linear in w, so the line search needs no pass over X
    (Z(w + t s) = Z + t X̃s) and the gradient at the accepted point only the backward product.

    ``preconditioner='auto'``: on numpy the class-diagonal Hessian blocks (for softmax split along
    its class shifts, ``objectives.class_shift_split``), (re)built once the
    previous inner solve needed ``BLOCK_REBUILD_CG`` CG iterations; on any other array namespace
    no preconditioner — there a CG iteration costs little next to building the blocks (measured on
    an H200, full-MNIST softmax: plain CG 0.17 s against 0.41 s with the class blocks).
    ``hvp_precision='auto'``: float32 Hessian-vector products for linear models on a float64
    objective, on every backend (the gradient and line search stay in the objective's dtype)."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        super().__init__(obj, o)
        self.search, self.cg_max_iter, self.tol = o.search, o.cg_max_iter, o.tol
        self.preconditioner = o.preconditioner
        self.U = gauge(obj)
        self.glm: Margins | None = obj if isinstance(obj, Margins) else None
        precision = None if o.hvp_precision in ("auto", "float64") else "float32"
        if (o.hvp_precision == "auto" and dtype_name(obj.dtype) == "float64"
                and self.glm is not None):
            precision = "float32"  # inner solves are inexact anyway; the gradient stays float64
        self.precision = precision
        self.Z: FloatArray | None = None
        self.cg_steps: list[int] = []
        self.block: Callable[[FloatArray], FloatArray] | None = None
        self.n_builds, self.n_negcurv = 0, 0

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        """(f, ∇f) at the start; linear models keep the margins Z = X̃w."""
        if self.glm is None:
            return super().start(w)
        self.passes += GRADIENT
        self.Z = self.glm.margins(w)
        return self.glm.value_grad_from_margins(w, self.Z)

    def _operator(self, w: FloatArray) -> tuple[Callable[[FloatArray], FloatArray], Preconditioner]:
        """v ↦ ∇²f(w) v and the preconditioner M⁻¹ (diagonal, class blocks, or none)."""
        glm = self.glm
        if glm is None:
            obj: HessianVector = self.obj  # type: ignore[assignment]

            def matvec(v: FloatArray) -> FloatArray:
                return as_float64(self.xp, obj.hvp(w, v))

            return matvec, None
        op = glm.hess_operator(w, self.Z, precision=self.precision)
        minv: Preconditioner = None
        if self.preconditioner == "jacobi" and isinstance(op, Diagonal):
            self.passes += FORWARD  # (X̃∘X̃)ᵀ D: one product with the data
            minv = jacobi(self.xp, op.diagonal())
        elif self.preconditioner == "block" and isinstance(op, BlockSolver):
            self.passes += self._block_cost(glm, None)
            minv = op.class_block_solver()
        elif (self.preconditioner == "auto" and isinstance(op, BlockSolver)
              and is_numpy(self.xp)):
            if self.cg_steps and self.cg_steps[-1] >= BLOCK_REBUILD_CG:
                self.passes += self._block_cost(glm, BLOCK_MAX_ROWS)
                self.block = op.class_block_solver(max_rows=BLOCK_MAX_ROWS)
                self.n_builds += 1
            minv = self.block
        return op.matvec, minv

    @staticmethod
    def _block_cost(glm: Margins, max_rows: int | None) -> float:
        """c Gram matrices over m rows of X̃: c·m·(d+1)² flops = m·(d+1)/(2n) gradients."""
        n = int(glm.n)
        m = n if max_rows is None else min(n, max_rows)
        return m * int(glm.n_rows) / (2.0 * n)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One inexact Newton step: CG to the forcing tolerance, then the (Armijo) step along s."""
        eta = min(0.5, math.sqrt(gn))
        if gn > 0:  # solve no further than ‖∇f‖ ≤ tol can use (never looser than the forcing 0.5)
            eta = min(0.5, max(eta, CG_TOL_SHARE * self.tol / gn))
        matvec, minv = self._operator(w)
        s, n_cg, negc = pcg(matvec, -as_float64(self.xp, g), eta, self.cg_max_iter, minv)
        self.passes += n_cg * HVP
        self.cg_steps.append(n_cg)
        self.n_negcurv += negc
        if self.U.shape[0]:
            s -= self.U.T @ (self.U @ s)
        s = cast_like(self.xp, s, w)
        slope = float(g @ s)
        if not slope < 0:
            return Halt("stalled", f"CG returned no descent direction at iteration {it} "
                                   f"(‖∇f‖ = {gn:.3e}); raise tol")
        return self._line_step(w, f, s, slope, gn, it)

    def _line_step(self, w: FloatArray, f: float, s: FloatArray, slope: float, gn: float,
                   it: int) -> Step | Halt:
        """w + t s with t from the line search; f and ∇f there (from the margins if linear)."""
        glm = self.glm
        if glm is not None and self.Z is not None:
            self.passes += FORWARD
            Zs = glm.margins(s)  # X̃ s: one pass over X, then line search for free
            t = self.search(self, margin_ray(glm, w, s, self.Z, Zs), f, slope, 1.0, 0.0)
        else:
            t = self.search(self, ray(self.obj, w, s), f, slope, 1.0, FORWARD)
        if t is None:
            return Halt("stalled", stalled_msg(it, gn))
        w_new = w + t * s
        if glm is not None and self.Z is not None:
            self.passes += GRADIENT - FORWARD  # the backward product only
            self.Z = self.Z + t * Zs
            f_new, g_new = glm.value_grad_from_margins(w_new, self.Z)
        else:
            self.passes += GRADIENT
            f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, t

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """The message adds the CG iterations and any negative curvature met."""
        message += f"; {sum(self.cg_steps)} CG iterations in total"
        if self.n_negcurv:
            message += f", negative curvature met in {self.n_negcurv} Newton step(s)"
        return status, message

    def info(self) -> dict[str, Any]:
        """CG iterations (total, per step), preconditioner builds, negative curvature, precision."""
        return {"cg_iterations": sum(self.cg_steps), "cg_per_step": list(self.cg_steps),
                "preconditioner_builds": self.n_builds, "negative_curvature": self.n_negcurv,
                "hvp_precision": self.precision or "float64"}
