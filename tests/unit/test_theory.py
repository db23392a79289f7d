"""Theory helpers: lecture functions, convexity verdicts, L/μ/κ, predicted vs measured GD rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import minimize
from pipeline.core.theory import (
    LECTURE_FUNCTIONS,
    bowl,
    check_convexity,
    curvature,
    quartic,
    trough,
)
from pipeline.reporting.analysis import measured_rate

POINTS = np.array([[0.0, 0.0], [1.0, -2.0], [-0.7, 0.3], [2.5, 1.5]])


@pytest.mark.parametrize("name", sorted(LECTURE_FUNCTIONS))
def test_lecture_functions_derivatives_match_finite_differences(name):
    fn = LECTURE_FUNCTIONS[name]()
    for p in POINTS:
        e = 1e-6
        g_fd = [(fn.value(p + e * u) - fn.value(p - e * u)) / (2 * e) for u in np.eye(2)]
        np.testing.assert_allclose(fn.grad(p), g_fd, rtol=1e-7, atol=1e-7)
        H_fd = np.column_stack(
            [(fn.grad(p + e * u) - fn.grad(p - e * u)) / (2 * e) for u in np.eye(2)]
        )
        np.testing.assert_allclose(fn.hessian(p), H_fd, rtol=1e-6, atol=1e-6)


def test_lecture_convexity_verdicts():
    b = check_convexity(bowl(), POINTS)
    assert b.psd and b.min_eigenvalue == pytest.approx(4.0)
    t = check_convexity(trough(), POINTS)
    assert t.psd and t.min_eigenvalue == pytest.approx(0.0, abs=1e-15)  # convex, not strictly
    q = check_convexity(quartic(), POINTS)
    assert not q.psd
    # at the origin H = [[2, 1], [1, 0]]: eigenvalues 1 ± √2, the most negative of all points
    assert q.argmin_point == 0 and q.min_eigenvalue == pytest.approx(1 - math.sqrt(2))
    assert "NOT PSD" in q.summary()
    assert bowl().value([0.0, 0.0]) == -2.0 and bowl().grid([0, 1], [0, 1]).shape == (2, 2)


def test_convexity_of_models():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    pts = rng.normal(scale=4.0, size=(5, 4))
    assert check_convexity(make_objective("logistic", X, y), pts).psd
    mse = make_objective("logistic_mse", X, y)
    w_wrong = np.array([-20.0, 0.0, 0.0, 0.0])  # confidently wrong: negative curvature
    rep = check_convexity(mse, np.vstack([pts, w_wrong]))
    assert not rep.psd and rep.min_eigenvalue < 0
    with pytest.raises(ConfigError):
        check_convexity(mse, np.zeros((2, 7)))


def test_curvature_dense_lanczos_and_exact_for_linear_regression():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 4)) * np.array([0.1, 1.0, 2.0, 5.0])
    obj = make_objective("linear", X, rng.normal(size=150), l2=0.0, fit_intercept=False)
    ev = np.linalg.eigvalsh(X.T @ X / 150)
    c = curvature(obj, method="dense")
    assert c.L == pytest.approx(ev[-1]) and c.mu == pytest.approx(ev[0])
    assert c.kappa == pytest.approx(ev[-1] / ev[0])
    cl = curvature(obj, method="lanczos")
    assert cl.L == pytest.approx(ev[-1], rel=1e-6) and cl.mu == pytest.approx(ev[0], rel=1e-5)


def test_curvature_excludes_the_softmax_gauge_direction():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 3))
    y = rng.integers(0, 3, size=120)
    obj = make_objective("softmax", X, y, l2=0.05, n_classes=3)
    w = rng.normal(size=obj.n_params)
    c = curvature(obj, w, method="dense")
    full = np.linalg.eigvalsh(obj.hessian(w))
    assert full[0] == pytest.approx(0.0, abs=1e-12)  # the flat direction b + t·1
    assert c.mu > 1e-3 and c.L == pytest.approx(full[-1])
    cl = curvature(obj, w, method="lanczos")
    assert cl.mu == pytest.approx(c.mu, rel=1e-5) and cl.L == pytest.approx(c.L, rel=1e-6)
    with pytest.raises(ConfigError):
        curvature(obj, w, method="svd")


def _quadratic(kappa: float, d: int = 6, seed: int = 3):
    """Linear regression with prescribed Hessian spectrum in [1, κ] (exact, no intercept)."""
    rng = np.random.default_rng(seed)
    n = 400
    Q, _ = np.linalg.qr(rng.normal(size=(n, d)))
    V, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = np.sqrt(n * np.geomspace(1.0, kappa, d))
    X = (Q * s) @ V.T
    return make_objective("linear", X, rng.normal(size=n), l2=0.0, fit_intercept=False)


def test_gd_measured_suboptimality_obeys_the_predicted_rate():
    obj = _quadratic(kappa=20.0)
    c = curvature(obj)
    assert c.kappa == pytest.approx(20.0, rel=1e-8)
    f_star = obj.value(minimize(obj, obj.init("zeros"), "closed_form").w)
    res = minimize(obj, obj.init("zeros"), "gd", lr=1.0 / c.L, max_iter=150, tol=0.0)
    gap = res.history["loss"] - f_star
    rho = 1 - c.mu / c.L  # f − f* contracts by (1 − μ/L) per step at ε = 1/L
    assert rho == pytest.approx(1 - 1 / 20.0)
    bound = gap[0] * rho ** np.arange(gap.size)
    assert np.all(gap <= bound * (1 + 1e-9) + 1e-13)
    # the slowest mode dominates late: the report's fitted rate approaches (1 − μ/L)² per step
    rate = measured_rate(pd.DataFrame({k: res.history[k] for k in ("iteration", "loss")}), f_star)
    assert rate is not None and rate <= rho
    assert rate == pytest.approx((1 - 1 / 20.0) ** 2, rel=1e-3)


def test_optimal_step_rate_on_a_quadratic():
    obj = _quadratic(kappa=9.0)
    c = curvature(obj)
    f_star = obj.value(minimize(obj, obj.init("zeros"), "closed_form").w)
    res = minimize(obj, obj.init("zeros"), "gd", lr=2.0 / (c.L + c.mu), max_iter=40, tol=0.0)
    gap = res.history["loss"] - f_star
    rho = ((c.kappa - 1) / (c.kappa + 1)) ** 2  # per step at ε = 2/(L + μ)
    assert rho == pytest.approx(0.64)
    assert np.all(gap <= gap[0] * rho ** np.arange(gap.size) * (1 + 1e-9) + 1e-13)


def test_predicted_rates_from_mu_and_L():
    from pipeline.core.theory import predicted_rates

    r = predicted_rates(100.0, 1.0, 400.0)  # κ = 100, √κ = 10
    assert r["rate_gd"] == pytest.approx(0.99) and r["rate_gd_lr_auto"] == pytest.approx(0.9975)
    assert r["rate_heavy_ball"] == pytest.approx(9 / 11)
    assert r["rate_nesterov"] == pytest.approx(0.9)
    assert set(predicted_rates(1.0, 0.0).values()) == {None}  # μ = 0: no linear rate
    assert predicted_rates(4.0, 1.0)["rate_gd_lr_auto"] is None  # no L_bound given
