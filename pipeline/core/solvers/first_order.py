"""What the first-order methods share: L and μ of the objective, one-line refusals, the
divergence message."""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import ConfigError, NumericalError, worded
from pipeline.core.solvers.loop import MethodOptions
from pipeline.core.solvers.protocols import Objective, Smooth, StronglyConvex


def refuse_line_search(o: MethodOptions, method: str) -> None:
    """A one-line error when a line search is asked of a method that takes none."""
    if o.search.enabled:
        raise ConfigError(worded("{solver.line_search}=true does not apply to {solver}={method}; "
                                 "set it to false", method=method))


def step_too_large_msg(it: int, f: float, f0: float) -> str:
    """The message of a run whose loss became non-finite or grew past the divergence factor."""
    what = ("became non-finite" if not np.isfinite(f)
            else f"grew from {f0:.3e} to {f:.3e}")
    return worded("loss {what} by iteration {it}; the step is too large — lower {solver.lr} or "
                  "use lr=auto; returned the last finite iterate", what=what, it=it)


def smoothness(obj: Objective) -> float:
    """L of an objective that is ``Smooth``, or a one-line error naming ``lr``."""
    L = float(obj.lipschitz()) if isinstance(obj, Smooth) else float("nan")
    if not (np.isfinite(L) and L > 0):
        raise NumericalError(worded("smoothness constant L = {L} is not positive; set "
                                    "{solver.lr} explicitly", L=L))
    return L


def strong_convexity(obj: Objective) -> float:
    """μ of a ``StronglyConvex`` objective (0 when it is not one or reports no finite μ > 0)."""
    mu = float(obj.strong_convexity()) if isinstance(obj, StronglyConvex) else 0.0
    return mu if np.isfinite(mu) and mu > 0 else 0.0
