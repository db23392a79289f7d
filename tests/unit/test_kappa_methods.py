"""Claim 2 per method: iterations to ‖∇f‖ ≤ 1e-8 against κ on least squares, and the log–log
slopes the theory predicts (GD ≈ 1, heavy ball and Nesterov ≈ ½, L-BFGS below ½, Newton 0)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.studies import KnownCurvature, loglog_slope, study_kappa_methods
from pipeline.data.datasets import load_dataset

CFG = {
    "condition_numbers": [1.0, 10.0, 100.0, 1000.0],
    "data": {"name": "synthetic_regression", "id": "synth", "n_samples": 1000, "n_features": 10,
             "noise": 0.1, "test_fraction": 0.2},
    "methods": {"names": ["gd", "heavy_ball", "nesterov", "lbfgs", "newton"], "tol": 1.0e-8,
                "max_iter": 100000},
}
# the stated bounds on each fitted slope (κ = 10 … 1000, three points)
BOUNDS = {"gd": (0.85, 1.1), "heavy_ball": (0.4, 0.65), "nesterov": (0.35, 0.6),
          "lbfgs": (0.05, 0.45), "newton": (0.0, 0.0)}


@pytest.fixture(scope="module")
def sweep():
    return study_kappa_methods(CFG, load_dataset, seed=0)


def test_every_method_converges_and_each_table_has_its_columns(sweep) -> None:
    tables, slopes = sweep
    assert list(tables) == CFG["methods"]["names"] and list(slopes["method"]) == list(tables)
    for name, t in tables.items():
        assert list(t.columns) == ["kappa_requested", "kappa", "L", "mu", "method", "iterations",
                                   "status", "grad_norm_start", "grad_norm_end", "rate_measured",
                                   "rate_predicted", "predicted_iterations"]
        assert (t["status"] == "converged").all() and (t["grad_norm_end"] <= 1e-8).all(), name
        np.testing.assert_allclose(t["kappa"], CFG["condition_numbers"], rtol=1e-6)
    assert (tables["newton"]["iterations"] == 1).all()


def test_fitted_slopes_lie_within_the_stated_bounds(sweep) -> None:
    _, slopes = sweep
    got = dict(zip(slopes["method"], slopes["slope"], strict=True))
    for name, (lo, hi) in BOUNDS.items():
        assert lo - 1e-12 <= got[name] <= hi + 1e-12, (name, got[name])
    assert got["lbfgs"] < got["nesterov"] < got["gd"] and got["heavy_ball"] < got["gd"]
    assert (slopes["points"] == 3).all() and slopes["all_converged"].all()


def test_first_order_rates_are_no_faster_than_predicted_on_the_quadratic(sweep) -> None:
    """GD's ‖∇f‖ contracts by at most 1 − 1/κ per step (exact bound on a quadratic); heavy ball and
    Nesterov reach their predicted iterations within a factor 2 (a polynomial factor k)."""
    tables, _ = sweep
    gd = tables["gd"][tables["gd"]["kappa"] > 1.5]
    assert (gd["rate_measured"] <= gd["rate_predicted"] + 1e-12).all()
    assert (gd["iterations"] <= gd["predicted_iterations"]).all()
    for name in ("heavy_ball", "nesterov"):
        t = tables[name][tables[name]["kappa"] > 1.5]
        ratio = t["iterations"] / t["predicted_iterations"]
        assert ((ratio > 0.5) & (ratio < 2.0)).all(), (name, list(ratio))


def test_loglog_slope_fits_above_kappa_one_only() -> None:
    assert loglog_slope([1.0, 10.0, 100.0], [1, 10, 100]) == pytest.approx(1.0)
    assert loglog_slope([1.0, 100.0, 10000.0], [7, 10, 100]) == pytest.approx(0.5)
    assert np.isnan(loglog_slope([1.0, 10.0], [1, 5]))  # one point above κ = 1.5


def test_known_curvature_gives_lr_auto_and_momentum_their_exact_L_and_mu() -> None:
    from pipeline.core.objectives import make_objective
    from pipeline.core.solvers import minimize

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)) * np.array([1.0, 3.0, 10.0])
    obj = make_objective("linear", X, rng.normal(size=50), fit_intercept=False)
    ev = np.linalg.eigvalsh(obj.hessian(np.zeros(3)))
    known = KnownCurvature(obj, ev[-1], ev[0])
    assert known.n_params == 3 and known.value(np.ones(3)) == obj.value(np.ones(3))
    res = minimize(known, np.zeros(3), "gd", max_iter=1, tol=0.0)
    assert res.lr == pytest.approx(1.0 / ev[-1], rel=1e-12)
