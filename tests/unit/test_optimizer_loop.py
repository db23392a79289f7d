"""The shared iteration loop: same histories as the per-method loops it replaced, and the
``passes`` cost axis counted as documented in pipeline/core/solvers/loop.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from optimizer_cases import PINNED, cases, run_case

from pipeline.core.solvers import HISTORY_KEYS, minimize

PINNED_FILE = Path(__file__).parent / "data" / "optimizer_histories.json"
GOLDEN = json.loads(PINNED_FILE.read_text(encoding="utf-8"))
CASES = cases()

# A run is bit-identical from run to run and for any number of BLAS threads on one machine (and
# the shared loop bit-identical to the per-method loops of 56aced6 there), but another BLAS build
# rounds differently. How far that can move a pinned path, relative, is set by the arithmetic
# behind it. In brackets the r that the loss and the ‖∇f‖ checks below needed at worst with
# OpenBLAS 0.3.31's Haswell, Sandybridge, Nehalem and Prescott kernels against the recording
# machine. A changed step rule, line search, damping or preconditioner moves the path by far
# more, and mostly changes the step sizes or the step count, which are compared exactly.
F64 = 1e-12  # float64 throughout [4.5e-15; 2.2e-16]
F32 = 5e-6  # a float32 objective, or Newton-CG's float32 Hessian-vector products (hvp_precision
# 'auto' on a float64 GLM), ≈ 40 ε₃₂ [1.8e-7; 1.1e-7]
FLOAT32_PATH = {
    "gd_float32",
    "newton_float32",
    "newton_cg_float32",  # float32 objectives
    "newton_cg_logistic",
    "newton_cg_softmax",
    "newton_cg_auto_nopenalty",
    "newton_cg_jacobi",
}
AMPLIFIED = 1e-3  # logistic_mse from a saturated start is non-convex: through its damped,
# backtracking steps each iteration multiplies a rounding difference by ~35 (1e-15 at row 2, 6e-5
# at row 9) before Newton's convergence contracts it again [6.3e-5; 2.6e-5]. Its step sizes and
# step count are still exact, and the minimum it reaches is compared in float64 (below).
AMPLIFIED_PATH = {"newton_damped_mse"}
# ‖∇f‖ has a rounding floor of its own, relative to ‖∇f₀‖, set by the objective's dtype:
# ≈ 45 ε₆₄ and 17 ε₃₂ [4.5e-16; 1.3e-7]
GRAD_FLOOR = {np.dtype(np.float64): 1e-14, np.dtype(np.float32): 2e-6}


def _rounding(name: str) -> float:
    return AMPLIFIED if name in AMPLIFIED_PATH else F32 if name in FLOAT32_PATH else F64


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shared_loop_reproduces_the_recorded_history(name: str) -> None:
    obj = CASES[name][0]
    got, want = run_case(*CASES[name]), GOLDEN[name]
    assert set(PINNED) | {"status", "n_iter", "lr"} == set(want)
    # the discrete path is exact: stop reason, step count, and the step sizes (Armijo's t0·ρʲ, or
    # lr, whose L = λ_max comes from an eigensolver and may round in the last bits)
    assert (got["status"], got["n_iter"], got["iteration"]) == (
        want["status"],
        want["n_iter"],
        want["iteration"],
    )
    assert (got["lr"] is None) == (want["lr"] is None)
    if want["lr"] is not None:
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12, abs=0)
    np.testing.assert_allclose(
        got["step_size"], want["step_size"], rtol=1e-12, atol=0, err_msg="step_size"
    )
    r = _rounding(name)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=r, atol=0, err_msg="loss")
    # the gradient a step leaves carries the step's rounding, relative to the gradients at its
    # two ends and amplified by the Hessian's conditioning (allowed: 10×), above its own floor
    gn, gn_want = np.asarray(got["grad_norm"]), np.asarray(want["grad_norm"])
    allowed = (
        10 * r * (np.r_[gn_want[0], gn_want[:-1]] + gn_want)
        + GRAD_FLOOR[np.dtype(obj.dtype)] * gn_want[0]
    )
    bad = np.flatnonzero(~(np.abs(gn - gn_want) <= allowed))
    assert bad.size == 0, (
        f"grad_norm differs at rows {bad.tolist()}: got {gn[bad]}, want {gn_want[bad]}"
    )
    if want["status"] == "converged" and obj.dtype == np.float64:
        # f is flat at the minimum: however the path rounded, the f reached agrees in float64
        assert got["loss"][-1] == pytest.approx(want["loss"][-1], rel=F64, abs=0)


def test_rounding_classes_match_the_arithmetic_of_each_case() -> None:
    """FLOAT32_PATH lists exactly the cases that compute in float32 (a new case gets F64 unless
    it is listed, and a listed one that stops using float32 must be moved back)."""
    for name, (obj, w0, method, opts) in CASES.items():
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(obj, w0, method, **opts)
        float32 = obj.dtype == np.float32 or res.info.get("hvp_precision") == "float32"
        assert float32 == (name in FLOAT32_PATH), name
    assert AMPLIFIED_PATH <= set(CASES) and not AMPLIFIED_PATH & FLOAT32_PATH


def test_every_history_has_passes_counted_per_method() -> None:
    for name, (obj, w0, method, opts) in CASES.items():
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(obj, w0, method, **opts)
        h = res.history
        assert tuple(h) == HISTORY_KEYS, name
        assert np.all(np.diff(h["passes"]) > 0), name  # every step reads the data
        p = obj.n_params
        if method == "gd" and not opts.get("line_search"):
            np.testing.assert_array_equal(h["passes"], 1.0 + h["iteration"])  # 1 per iteration
        elif method == "gd":  # plus ½ (a forward product) per Armijo trial: at least one per step
            assert np.all(np.diff(h["passes"]) >= 1.5)
        elif method == "newton" and not opts.get("line_search"):
            np.testing.assert_array_equal(h["passes"], 1.0 + (p + 1.0) * h["iteration"])
        elif method == "newton_cg" and opts.get("preconditioner", "auto") in ("none", "auto") \
                and not res.info["preconditioner_builds"] and hasattr(obj, "margins"):
            steps = np.asarray(res.info["cg_per_step"][: res.n_iter], dtype=float)
            np.testing.assert_array_equal(np.diff(h["passes"]), 1.0 + steps)  # 1 + 1 per CG step
        elif method == "closed_form":
            np.testing.assert_array_equal(h["passes"], [0.0, p + 1.0])


def test_passes_make_methods_comparable_on_one_axis() -> None:
    """GD needs far more passes than Newton-CG to the same accuracy on an ill-conditioned
    problem."""
    obj, w0, _, _ = CASES["gd_auto_softmax"]
    cg = minimize(obj, w0, "newton_cg", tol=1e-8, max_iter=50)
    gd = minimize(obj, w0, "gd", lr="auto", tol=1e-8, max_iter=20_000)
    assert cg.converged and gd.converged
    assert cg.history["passes"][-1] < gd.history["passes"][-1] / 5
