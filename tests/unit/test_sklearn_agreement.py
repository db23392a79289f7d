"""Optima agree with an independent solver: scikit-learn's LogisticRegression (same λ via C =
1/(λn))."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.core.objectives import make_objective
from pipeline.core.solvers import minimize

sklearn_lm = pytest.importorskip("sklearn.linear_model")


def _sklearn_fit(X, y, lam, solver="newton-cg", tol=1e-12):
    n = X.shape[0]
    clf = sklearn_lm.LogisticRegression(C=1.0 / (lam * n), tol=tol, max_iter=10_000, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at tol = 1e-12
        clf.fit(X, y)
    return clf


# Our solves stop at tol = 1e-8, the attainable precision of Newton with an Armijo line search
# here: a step from ‖∇f‖ ≲ 1e-8 lowers f (≈ 0.4–0.7) by ½ ∇fᵀH⁻¹∇f ≲ 1e-15, a few ulps, so whether
# the search accepts it is decided by how the loss rounds, i.e. by the BLAS build. With tol =
# 1e-12 the binary fit without intercept reached ‖∇f‖ = 1.5e-10 in 5 steps, then wandered through
# tiny noise-accepted steps to max_iter; with 1e-10 it reached tol after 7 such steps on one
# OpenBLAS kernel and after 3 on another. With 1e-8 every step taken here starts from ‖∇f‖ ≥ 1e-7
# and lowers f far above rounding, the last one is a full Newton step, and f is within
# ‖∇f‖²/2μ ≲ 1e-15 of f* (so the assertions on the optimum below are unchanged).
TOL = 1e-8


def _relative_gap(obj, w_ours, w_sk):
    f_ours, f_sk = obj.value(w_ours), obj.value(w_sk)
    return (f_sk - f_ours) / abs(f_ours), f_ours, f_sk


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_binary_logistic_optimum_matches_sklearn(fit_intercept):
    rng = np.random.default_rng(0)
    n, d, lam = 400, 8, 1e-2
    X = rng.normal(size=(n, d)) + 0.5
    y = (X @ rng.normal(size=d) + rng.logistic(size=n) > 2.0).astype(int)
    obj = make_objective("logistic", X, y, l2=lam, fit_intercept=fit_intercept)
    res = minimize(obj, obj.init("zeros"), "newton", tol=TOL, line_search=True)
    assert res.converged, res.message
    # ended in Newton's local regime, not by backtracking
    assert res.history["step_size"][-1] == 1.0
    clf = sklearn_lm.LogisticRegression(C=1.0 / (lam * n), tol=1e-12, max_iter=10_000,
                                        fit_intercept=fit_intercept, solver="newton-cg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    w_sk = obj.pack(clf.coef_.ravel(), clf.intercept_[0] if fit_intercept else 0.0)
    rel, f_ours, f_sk = _relative_gap(obj, res.w, w_sk)
    assert abs(rel) <= 1e-7 and f_ours <= f_sk + 1e-15
    np.testing.assert_allclose(res.w, w_sk, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(obj.predict(X, res.w), clf.predict(X))


@pytest.mark.parametrize("method", ["newton", "newton_cg"])
def test_multinomial_optimum_matches_sklearn(method):
    rng = np.random.default_rng(1)
    n, d, c, lam = 500, 6, 4, 1e-3
    X = rng.normal(size=(n, d))
    y = np.argmax(X @ rng.normal(size=(d, c)) + rng.gumbel(size=(n, c)), axis=1)
    obj = make_objective("softmax", X, y, l2=lam, n_classes=c)
    res = minimize(obj, obj.init("zeros"), method, tol=TOL, line_search=True, max_iter=100)
    assert res.converged, res.message
    # ended in Newton's local regime, not by backtracking
    assert res.history["step_size"][-1] == 1.0
    clf = _sklearn_fit(X, y, lam)
    w_sk = obj.pack(clf.coef_.T, clf.intercept_)
    rel, f_ours, f_sk = _relative_gap(obj, res.w, w_sk)
    assert abs(rel) <= 1e-7 and f_ours <= f_sk + 1e-14
    # the optimum is unique up to the flat shift of all biases: compare W and centred b
    W, b = obj.unpack(res.w)
    np.testing.assert_allclose(W, clf.coef_.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b - b.mean(), clf.intercept_ - clf.intercept_.mean(), atol=1e-6)


@pytest.mark.slow
def test_mnist_subsample_softmax_matches_sklearn(mnist_dir):
    from pipeline.data.datasets import load_dataset

    ds = load_dataset({"name": "mnist", "id": "mnist", "root": str(mnist_dir), "scale": 1.0 / 255.0,
                       "n_train": 1000, "n_test": 500}, seed=0)
    lam = 1e-2
    obj = make_objective("softmax", ds.X_train, ds.y_train, l2=lam, n_classes=10)
    res = minimize(obj, obj.init("zeros"), "newton_cg", tol=1e-9, line_search=True, max_iter=100)
    assert res.converged, res.message
    clf = _sklearn_fit(ds.X_train, ds.y_train, lam, solver="newton-cg", tol=1e-9)
    w_sk = obj.pack(clf.coef_.T, clf.intercept_)
    rel, f_ours, f_sk = _relative_gap(obj, res.w, w_sk)
    assert abs(rel) <= 1e-7
    acc_ours = float(np.mean(obj.predict(ds.X_test, res.w) == ds.y_test))
    assert acc_ours == pytest.approx(clf.score(ds.X_test, ds.y_test), abs=0.005)
    assert acc_ours > 0.8
