"""Minibatch SGD on the shared loop: minibatch gradients, determinism, passes, convergence to
Newton's optimum under a decreasing schedule, the auto step size, bad options."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.checks import config_keys
from pipeline.core.errors import ConfigError
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import minibatch_smoothness, minimize, sgd_rate


def _problem(model: str = "logistic", n: int = 1000, d: int = 8, seed: int = 0, l2: float = 1e-2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d) + 0.3
    if model == "softmax":
        y = np.argmax(X @ rng.normal(size=(d, 4)) + rng.gumbel(size=(n, 4)), axis=1)
        return X, y, make_objective(model, X, y, l2=l2, n_classes=4)
    y = (X @ rng.normal(size=d) + rng.logistic(size=n) > 0).astype(int)
    return X, y, make_objective(model, X, y, l2=l2)


@pytest.mark.parametrize("model", ["logistic", "softmax", "linear"])
def test_batch_grad_is_the_gradient_of_the_minibatch_objective(model):
    X, y, obj = _problem("softmax" if model == "softmax" else "logistic")
    if model == "linear":
        y = X @ np.arange(X.shape[1]) + 1.0
        obj = make_objective("linear", X, y, l2=1e-2)
    rows = np.random.default_rng(1).choice(X.shape[0], size=37, replace=False)
    sub = make_objective(
        model, X[rows], y[rows], l2=1e-2, n_classes=4 if model == "softmax" else None
    )
    w = obj.init("random", 1.0, np.random.default_rng(2))
    np.testing.assert_allclose(obj.batch_grad(w, rows), sub.grad(w), rtol=1e-12, atol=1e-14)


def test_full_batch_sgd_is_gradient_descent():
    _, _, obj = _problem()
    w0 = obj.init("zeros")
    gd = minimize(obj, w0, "gd", lr=0.5, max_iter=20, tol=0.0)
    sgd = minimize(obj, w0, "sgd", lr=0.5, batch_size=obj.n, epochs=20)
    assert sgd.n_iter == 20 and sgd.status == "max_iter"
    np.testing.assert_allclose(sgd.history["loss"], gd.history["loss"], rtol=1e-12)
    # no start gradient
    np.testing.assert_array_equal(sgd.history["passes"], gd.history["passes"] - 1.0)


def test_history_once_per_epoch_or_every_k_minibatches_and_deterministic():
    _, _, obj = _problem()
    a = minimize(obj, obj.init("zeros"), "sgd", lr=0.2, batch_size=64, epochs=3, seed=7)
    b = minimize(obj, obj.init("zeros"), "sgd", lr=0.2, batch_size=64, epochs=3, seed=7)
    c = minimize(obj, obj.init("zeros"), "sgd", lr=0.2, batch_size=64, epochs=3, seed=8)
    np.testing.assert_array_equal(a.w, b.w)  # same seed: same permutations, same iterates
    assert not np.array_equal(a.w, c.w)
    np.testing.assert_array_equal(a.history["passes"], [0, 1, 2, 3])  # 1 pass per epoch
    assert a.info["batches_per_epoch"] == 16 and a.info["updates"] == 48
    k = minimize(
        obj, obj.init("zeros"), "sgd", lr=0.2, batch_size=64, epochs=3, seed=7, log_every=5
    )
    assert k.n_iter == 3 * 4  # ⌈16/5⌉ rows per epoch, the last one at the epoch's end
    np.testing.assert_allclose(k.history["passes"][[4, 8, 12]], [1, 2, 3])
    np.testing.assert_array_equal(k.w, a.w)  # logging more often changes nothing


def test_sgd_with_decreasing_step_converges_toward_the_newton_optimum():
    _, _, obj = _problem(n=2000, l2=1e-2)  # strongly convex (μ ≥ λ)
    ref = minimize(obj, obj.init("zeros"), "newton", tol=1e-12, max_iter=50)
    assert ref.converged
    gaps = []
    for epochs in (4, 64):
        res = minimize(obj, obj.init("zeros"), "sgd", lr=0.5, batch_size=20, epochs=epochs,
                       schedule="inverse_time", tau=1.0, seed=0)
        gaps.append((res.loss - ref.loss, float(np.linalg.norm(res.w - ref.w))))
    (f_short, d_short), (f_long, d_long) = gaps
    assert 0 <= f_long < f_short / 4 and f_long < 1e-4
    assert d_long < d_short / 2 and d_long < 0.05 * np.linalg.norm(ref.w)
    # a constant step stalls at a noise floor the decreasing one goes below
    const = minimize(obj, obj.init("zeros"), "sgd", lr=0.5, batch_size=20, epochs=64, seed=0)
    assert const.loss - ref.loss > 2 * f_long


def test_momentum_and_step_schedule_reach_the_optimum_region():
    _, _, obj = _problem("softmax", n=800)
    ref = minimize(obj, obj.init("zeros"), "newton", tol=1e-10, max_iter=50)
    res = minimize(obj, obj.init("zeros"), "sgd", lr=0.05, momentum=0.9, batch_size=32, epochs=30,
                   schedule="step", step_epochs=5, step_factor=0.5)
    assert res.loss - ref.loss < 1e-3 * ref.loss
    assert res.history["step_size"][-1] == pytest.approx(0.05 * 0.5**5)


def test_auto_step_is_one_over_the_minibatch_smoothness():
    _, _, obj = _problem()
    L, L_max, n = obj.lipschitz(), obj.lipschitz_max(), obj.n
    assert minibatch_smoothness(L, L_max, n, 1) == pytest.approx(L_max)
    assert minibatch_smoothness(L, L_max, n, n) == pytest.approx(L)
    assert L <= minibatch_smoothness(L, L_max, n, 10) <= L_max
    res = minimize(obj, obj.init("zeros"), "sgd", lr="auto", batch_size=10, epochs=2)
    assert res.lr == pytest.approx(1.0 / minibatch_smoothness(L, L_max, n, 10))
    assert np.all(np.diff(res.history["loss"]) < 0)
    assert sgd_rate(1.0, "inverse_time", 3.0, 1.5, 1, 0.5) == pytest.approx(1.0 / 3.0)


def test_sgd_divergence_is_reported_with_the_last_finite_iterate():
    X, _, _ = _problem()
    y = X @ np.ones(X.shape[1])
    obj = make_objective("linear", X, y, l2=0.0)
    res = minimize(obj, obj.init("zeros"), "sgd", lr=100.0, batch_size=10, epochs=50)
    assert res.status == "diverged" and np.all(np.isfinite(res.w)) and res.n_iter < 50


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"epochs": -1}, {"schedule": "cosine"}, {"tau": 0.0}, {"momentum": 1.0},
    {"step_factor": 1.5}, {"log_every": 0}, {"line_search": True}, {"seed": -1}])
def test_bad_sgd_options_raise_one_line_config_errors(kwargs):
    _, _, obj = _problem()
    with pytest.raises(ConfigError) as exc:
        minimize(obj, obj.init("zeros"), "sgd", **kwargs)
    assert "\n" not in str(exc.value)


def test_sgd_options_are_refused_by_other_methods():
    _, _, obj = _problem()
    with pytest.raises(ConfigError, match="only to optimizer=sgd"), config_keys():
        minimize(obj, obj.init("zeros"), "gd", batch_size=10)
    with pytest.raises(ConfigError, match="only to method=sgd"):  # the core's own words
        minimize(obj, obj.init("zeros"), "gd", batch_size=10)
