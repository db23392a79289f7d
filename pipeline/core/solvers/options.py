"""The options every method shares, checked once: ``check_options`` turns ``minimize``'s keywords
into ``MethodOptions`` or raises a one-line ConfigError naming the option."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, OptionError, worded
from pipeline.core.solvers.loop import LineSearch, MethodOptions

PRECONDITIONERS = ("auto", "block", "jacobi", "none")
HVP_PRECISIONS = ("auto", "float32", "float64")
LR_WANTED = "must be a positive number or 'auto' (= 1/L)"


def check_options(method: str, methods: tuple[str, ...], *, lr: Any, max_iter: Any, tol: Any,
                  time_budget_s: Any, armijo_c: Any, backtrack: Any, cg_max_iter: Any,
                  line_search: Any, max_backtracks: Any, preconditioner: Any, hvp_precision: Any,
                  sgd: dict[str, Any], lbfgs: dict[str, Any] | None = None) -> MethodOptions:
    """The options of ``method`` ∈ ``methods``, range-checked in the order the caller reads them."""
    if method not in methods:
        raise ConfigError(worded("{solver}={method!r} is unknown; use one of {names}",
                                 method=method, names=", ".join(methods)))
    if not (isinstance(max_iter, int | np.integer) and max_iter >= 0):
        raise OptionError("solver", "max_iter", max_iter, "must be an integer ≥ 0")
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol >= 0):
        raise OptionError("solver", "tol", tol, "must be a finite number ≥ 0")
    if time_budget_s is not None and not (isinstance(time_budget_s, int | float)
                                          and time_budget_s > 0):
        raise OptionError("solver", "time_budget_s", time_budget_s,
                          "must be a positive number or null")
    if not (isinstance(armijo_c, int | float) and 0 < armijo_c < 1):
        raise OptionError("solver", "armijo_c", armijo_c, "must lie in (0, 1), e.g. 1.0e-4")
    if not (isinstance(backtrack, int | float) and 0 < backtrack < 1):
        raise OptionError("solver", "backtrack", backtrack, "must lie in (0, 1), e.g. 0.5")
    if not (isinstance(cg_max_iter, int | np.integer) and cg_max_iter >= 1):
        raise OptionError("solver", "cg_max_iter", cg_max_iter, "must be an integer ≥ 1")
    lr_val = check_lr(lr)
    if preconditioner not in PRECONDITIONERS:
        raise ConfigError(f"preconditioner={preconditioner!r} is unknown; use one of "
                          f"{', '.join(PRECONDITIONERS)}")
    if hvp_precision not in HVP_PRECISIONS:
        raise ConfigError(f"hvp_precision={hvp_precision!r} is unknown; use auto, float32 or "
                          "float64")
    search = LineSearch(bool(line_search), float(armijo_c), float(backtrack), int(max_backtracks))
    return MethodOptions(lr_val, search, float(tol), int(cg_max_iter), preconditioner,
                         hvp_precision, sgd, dict(lbfgs or {}))


def check_lr(lr: Any) -> float | None:
    """A positive finite step size, or None for 'auto' (the method derives it)."""
    if lr == "auto" or lr is None:
        return None
    if isinstance(lr, str):
        try:
            lr = float(lr)
        except ValueError:
            raise OptionError("solver", "lr", lr, LR_WANTED) from None
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise OptionError("solver", "lr", lr, LR_WANTED)
    return float(lr)
