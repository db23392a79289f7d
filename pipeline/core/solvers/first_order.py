"""What the momentum and adaptive methods share: their one-line refusals and divergence message."""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import ConfigError, worded
from pipeline.core.solvers.loop import MethodOptions


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
