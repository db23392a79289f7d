"""Claim 7's measurement: Spearman's ρ against scipy, Adam's effective step at its own iterates
(the adam method's update), and the comparison with 1/diag ∇²f."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from pipeline.core.adam_scaling import adam_checkpoints, compare, spearman
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import minimize


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=200), rng.normal(size=200)
    b = 0.5 * a + b
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    ta, tb = np.round(a), np.round(b * 2) / 2  # many ties: average ranks
    assert spearman(ta, tb) == pytest.approx(spearmanr(ta, tb).statistic, abs=1e-12)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)  # monotone: ρ = 1
    assert spearman(a, -a**3) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones_like(a)))  # constant: undefined, as scipy's nan


def _problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4)) * np.array([0.1, 1.0, 3.0, 0.0])  # an all-zero column
    return make_objective("softmax", X, rng.integers(0, 3, 80), l2=0.0, n_classes=3)


def test_adam_checkpoints_follow_the_adam_method_to_the_bit() -> None:
    obj = _problem()
    points = adam_checkpoints(obj, 1e-2, {}, [3, 7])
    assert [p["iteration"] for p in points] == [3, 7]
    for p in points:
        run = minimize(obj, obj.init("zeros"), "adam", lr=1e-2, max_iter=p["iteration"], tol=0.0)
        np.testing.assert_array_equal(p["w"], run.w)
        assert p["loss"] == run.history["loss"][-1]
        # the effective step is η/(√v̂ + δ), v̂ the bias-corrected mean of g²
        assert np.all(p["step"] <= 1e-2 / 1e-8) and np.all(p["v_hat"] >= 0)


def test_compare_leaves_out_coordinates_without_gradient_or_curvature() -> None:
    obj = _problem()
    [p] = adam_checkpoints(obj, 1e-2, {}, [5])
    row, step, inv_h = compare(obj, p)
    # the all-zero column: no gradient, no curvature (λ = 0) for its 3 weights
    assert row["coordinates_left_out"] == 3 and row["coordinates"] == obj.n_params - 3
    assert step.shape == inv_h.shape == (obj.n_params - 3,)
    D = np.diag(obj.hessian(p["w"]))
    keep = (p["v_hat"] > 0) & (D > 0)
    np.testing.assert_allclose(inv_h, 1.0 / D[keep], rtol=1e-10)
    assert row["spearman_step_vs_inv_hess_diag"] == pytest.approx(
        spearmanr(step, inv_h).statistic, abs=1e-12)
