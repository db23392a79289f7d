"""Small deterministic optimizer problems whose histories are pinned in
``tests/unit/data/optimizer_histories.json`` (recorded with the per-method loops of commit 56aced6,
before the optimizers moved onto one shared iteration loop). ``python
tests/unit/optimizer_cases.py``
prints the current histories as JSON (regenerate only for a deliberate numerical change).

A run is deterministic on one machine, but another BLAS build (OpenBLAS kernel, version) rounds
differently, so tests/unit/test_optimizer_loop.py compares with tolerances set by each case's
arithmetic. That only works if no discrete decision of a pinned path is taken at the rounding
floor: a case must stop (``tol``) before the loss stops changing, because an Armijo test between
losses equal to the last bits, or a stop test with ‖∇f‖ ≈ tol, goes either way on another
build. Hence tol = 1e-7 for the line-searching Newton-CG cases: their next step would change f
by 0-3 ulps (on one build newton_cg_logistic took 3 such steps, t = ½, ¼, ½, where the
recording machine took 1 with t = 1).
Their pins are the 56aced6 recordings cut at the first row with ‖∇f‖ ≤ 1e-7 (tol enters only the
stop test; 56aced6 with the new tol gives exactly that prefix). ``newton_cg_softmax_f64_block`` was
recorded again when the softmax class-block preconditioner was split along the class shifts
(``objectives.class_shift_split``: a deliberate change of its path, same step count and optimum)."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from pipeline.core.objectives import make_objective
from pipeline.core.solvers import minimize

PINNED = ("iteration", "loss", "grad_norm", "step_size")


def _linear(
    n: int = 200, d: int = 6, seed: int = 0, l2: float = 1e-2, dtype: str = "float64"
) -> Any:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d) + 1.0
    y = X @ rng.normal(size=d) + 2.0 + 0.1 * rng.normal(size=n)
    return make_objective("linear", X, y, l2=l2, fit_intercept=True, dtype=dtype)


def make_classif(model: str, n: int = 300, d: int = 5, c: int = 3, seed: int = 1, l2: float = 1e-2,
             dtype: str = "float64") -> Any:
    """A small random logistic / logistic_mse / softmax problem (n × d Gaussian inputs, labels
    drawn from a random linear model with logistic or Gumbel noise)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if model == "softmax":
        y = np.argmax(X @ rng.normal(size=(d, c)) + rng.gumbel(size=(n, c)), axis=1)
        return make_objective(model, X, y, l2=l2, n_classes=c, dtype=dtype)
    y = (X @ rng.normal(size=d) + rng.logistic(size=n) > 0).astype(int)
    return make_objective(model, X, y, l2=l2, dtype=dtype)


class _Generic:
    """Only value/value_grad/hvp: the optimizers' path for objectives without margins."""

    def __init__(self, obj: Any) -> None:
        self.o, self.n_params, self.dtype = obj, obj.n_params, obj.dtype

    def value(self, w: Any) -> float:
        return self.o.value(w)

    def value_grad(self, w: Any) -> Any:
        return self.o.value_grad(w)

    def hvp(self, w: Any, v: Any) -> Any:
        return self.o.hvp(w, v)


def _start(obj: Any, kind: str = "zeros") -> Any:
    return obj.init(kind, 1.0, np.random.default_rng(3)) if kind != "zeros" else obj.init("zeros")


def cases() -> dict[str, tuple[Any, Any, str, dict[str, Any]]]:
    """name -> (objective, w0, method, options)."""
    lin, logi, soft = _linear(), make_classif("logistic"), make_classif("softmax")
    soft0 = make_classif("softmax", n=400, l2=0.0)
    mse = make_classif("logistic_mse", l2=1e-4)
    log32 = make_classif("logistic", dtype="float32")
    return {
        "gd_auto_linear": (lin, _start(lin, "random"), "gd", dict(lr="auto", max_iter=60, tol=0.0)),
        "gd_auto_logistic": (
            logi,
            _start(logi, "random"),
            "gd",
            dict(lr="auto", max_iter=60, tol=0.0),
        ),
        "gd_auto_softmax": (soft, _start(soft), "gd", dict(lr="auto", max_iter=60, tol=0.0)),
        "gd_armijo_logistic": (
            logi,
            _start(logi),
            "gd",
            dict(lr=10.0, line_search=True, max_iter=400, tol=1e-6),
        ),
        "gd_tol_softmax": (soft, _start(soft), "gd", dict(lr=2.0, max_iter=5000, tol=1e-4)),
        "gd_diverges_linear": (
            lin,
            _start(lin),
            "gd",
            dict(lr=10.0 / lin.lipschitz(), max_iter=10_000, tol=1e-8),
        ),
        "newton_linear": (lin, _start(lin, "random"), "newton", dict(tol=1e-9, max_iter=10)),
        "newton_logistic": (logi, _start(logi), "newton", dict(tol=1e-12, max_iter=30)),
        "newton_ls_softmax": (
            soft,
            _start(soft),
            "newton",
            dict(tol=1e-10, max_iter=50, line_search=True),
        ),
        "newton_damped_mse": (
            mse,
            mse.init("saturated", 1.0, np.random.default_rng(0)),
            "newton",
            dict(tol=1e-8, max_iter=200, line_search=True),
        ),
        "newton_cg_logistic": (
            logi,
            _start(logi),
            "newton_cg",
            dict(tol=1e-7, max_iter=50, line_search=True),
        ),
        "newton_cg_softmax": (soft, _start(soft), "newton_cg", dict(tol=1e-10, max_iter=50)),
        "newton_cg_softmax_f64_block": (
            soft,
            _start(soft),
            "newton_cg",
            dict(
                tol=1e-7,
                max_iter=50,
                line_search=True,
                hvp_precision="float64",
                preconditioner="block",
            ),
        ),
        "newton_cg_auto_nopenalty": (
            soft0,
            _start(soft0),
            "newton_cg",
            dict(tol=1e-7, max_iter=100, line_search=True, preconditioner="auto", cg_max_iter=10),
        ),
        "newton_cg_jacobi": (
            soft0,
            _start(soft0),
            "newton_cg",
            dict(tol=1e-7, max_iter=100, line_search=True, preconditioner="jacobi", cg_max_iter=10),
        ),
        "newton_cg_generic": (
            _Generic(logi),
            _start(logi),
            "newton_cg",
            dict(tol=1e-7, max_iter=50, line_search=True),
        ),
        "closed_form_linear": (lin, _start(lin), "closed_form", dict()),
        "gd_float32": (log32, _start(log32), "gd", dict(tol=1e-4, max_iter=500, line_search=True)),
        "newton_float32": (
            log32,
            _start(log32),
            "newton",
            dict(tol=1e-4, max_iter=500, line_search=True),
        ),
        "newton_cg_float32": (
            log32,
            _start(log32),
            "newton_cg",
            dict(tol=1e-4, max_iter=500, line_search=True),
        ),
    }


def run_case(obj: Any, w0: Any, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The pinned part of a run: status, iterations, lr and the history columns but time."""
    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(obj, w0, method, **options)
    return {"status": res.status, "n_iter": res.n_iter, "lr": res.lr,
            **{k: np.asarray(res.history[k]).tolist() for k in PINNED}}


def record() -> dict[str, Any]:
    """Every case's pinned history."""
    return {name: run_case(*case) for name, case in cases().items()}


if __name__ == "__main__":
    json.dump(record(), sys.stdout, indent=0)
