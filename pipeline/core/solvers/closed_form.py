"""The closed form of least squares: one step to the exact minimizer (a reference optimum)."""

from __future__ import annotations

import math

from pipeline.core.errors import ConfigError, worded
from pipeline.core.solvers.arrays import norm
from pipeline.core.solvers.loop import GRADIENT, HVP, Halt, Method, MethodOptions, Step
from pipeline.core.solvers.protocols import FloatArray, LeastSquares, Named, Objective


class ClosedForm(Method):
    """One step to the exact minimizer of least squares, the normal equations by Cholesky."""

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        if not isinstance(obj, LeastSquares):
            model = obj.model if isinstance(obj, Named) else "?"
            raise ConfigError(worded("{solver}=closed_form exists only for {objective}=linear (got "
                                     "{model}); use newton or newton_cg", model=model))
        super().__init__(obj, o)
        self.least_squares = obj
        self.gn = math.inf

    def max_iter(self, max_iter: int) -> int:
        """One step."""
        return 1

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        """(f, ∇f) at the start, for the history only (off the clock)."""
        with self.clock.paused():  # logging only
            return self.obj.value_grad(w)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """w* from the normal equations."""
        self.passes += GRADIENT + self.obj.n_params * HVP  # X̃ᵀy and the Gram matrix X̃ᵀX̃
        w_star = self.least_squares.closed_form()
        with self.clock.paused():  # logging only
            f_new, g_new = self.obj.value_grad(w_star)
        self.gn = norm(self.xp, g_new)
        return w_star, f_new, g_new, 1.0

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """A non-finite solution: the normal equations are singular."""
        return worded("closed-form solution is non-finite; the normal equations are singular — "
                      "set {objective.l2} > 0")

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """'converged', or 'stalled' where rounding kept ‖∇f‖ above tol."""
        if status == "diverged":
            return status, message
        msg = f"normal equations solved by Cholesky; ‖∇f‖ = {self.gn:.3e}"
        if status == "converged":
            return status, msg
        return "stalled", msg + worded(" (ill-conditioned: rounding limits the accuracy; "
                                       "set {objective.l2} > 0)")
