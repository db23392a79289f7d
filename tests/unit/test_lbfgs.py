"""L-BFGS: finite termination on a quadratic with an exact line search, scipy's optimum with the
Wolfe search, Newton's optimum on logistic and softmax, no pair with sᵀy ≤ 0, passes counted per
evaluation, a clean divergence, its options checked (a train run with optimizer=lbfgs:
tests/stages/test_train.py)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import scipy.optimize
from optimizer_cases import make_classif
from support.compose import compose_app

from pipeline.config.checks import validate_train_config
from pipeline.core.errors import ConfigError
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import METHODS, minimize
from pipeline.core.solvers.lbfgs import (
    F_FLOOR,
    LBFGS,
    Trial,
    cubic_min,
    secant_root,
    strong_wolfe,
    two_loop,
)
from pipeline.spec import RunSpec


class Quadratic:
    """f(w) = ½ wᵀHw − bᵀw with H = Q diag(eigs) Qᵀ (Q random orthogonal)."""

    dtype = np.float64

    def __init__(self, eigs: np.ndarray, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        Q = np.linalg.qr(rng.normal(size=(eigs.size, eigs.size)))[0]
        self.H, self.b = (Q * eigs) @ Q.T, rng.normal(size=eigs.size)
        self.n_params = eigs.size

    def value(self, w: np.ndarray) -> float:
        return float(0.5 * w @ self.H @ w - self.b @ w)

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        return self.value(w), self.H @ w - self.b

    def solution(self) -> np.ndarray:
        return np.linalg.solve(self.H, self.b)



def test_lbfgs_is_registered() -> None:
    assert METHODS["lbfgs"] is LBFGS


@pytest.mark.parametrize(("n", "memory", "seed"), [(6, 6, 0), (10, 10, 1), (10, 25, 2)])
def test_exact_line_search_on_a_quadratic_terminates_in_at_most_n_plus_1_iterations(
        n: int, memory: int, seed: int) -> None:
    """m ≥ n and an exact line search (|φ'(t)| ≤ 1e-9|φ'(0)|: the secant on φ' is exact for a
    quadratic): the iterates are conjugate-gradient's, the minimum in ≤ n + 1 steps."""
    q = Quadratic(np.geomspace(1.0, 1.0e3, n), seed=seed)
    res = minimize(q, np.zeros(n), "lbfgs", memory=memory, armijo_c=1e-10, wolfe_c2=1e-9,
                   tol=1e-9, max_iter=10 * n)
    assert res.converged, res.message
    assert res.n_iter <= n + 1
    np.testing.assert_allclose(res.w, q.solution(), rtol=0, atol=1e-10)


def test_wolfe_search_on_a_quadratic_matches_scipy_lbfgsb() -> None:
    q = Quadratic(np.linspace(1.0, 100.0, 12), seed=3)
    res = minimize(q, np.zeros(12), "lbfgs", tol=1e-10, max_iter=500)
    sp = scipy.optimize.minimize(q.value_grad, np.zeros(12), jac=True, method="L-BFGS-B",
                                 options={"gtol": 1e-10, "ftol": 0.0, "maxiter": 1000})
    assert res.converged, res.message
    assert abs(res.loss - sp.fun) <= 1e-10 * max(1.0, abs(sp.fun))
    # scipy stops where f's rounding hides progress (‖∇f‖ ≈ 1e-8 here); ours goes on
    np.testing.assert_allclose(res.w, sp.x, rtol=0, atol=1e-7)
    np.testing.assert_allclose(res.w, q.solution(), rtol=0, atol=1e-10)
    assert res.info["pairs_skipped"] == 0 and res.info["wolfe_misses"] == 0


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_reaches_the_newton_optimum_on_logistic_and_softmax(model: str) -> None:
    obj = make_classif(model)
    w0 = obj.init("zeros")
    nt = minimize(obj, w0, "newton", tol=1e-10, max_iter=50, line_search=True)
    res = minimize(obj, w0, "lbfgs", tol=1e-8, max_iter=500)
    assert nt.converged and res.converged, (nt.message, res.message)
    assert res.history["grad_norm"][-1] <= 1e-8
    assert abs(res.loss - nt.loss) <= 1e-10 * max(1.0, abs(nt.loss))
    loss = res.history["loss"]  # Wolfe steps decrease f (up to its rounding, F_FLOOR)
    assert np.all(np.diff(loss) <= F_FLOOR * np.abs(loss[:-1]))
    assert res.lr is None and "\n" not in res.message


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_every_line_search_evaluation_is_one_gradient_pass(model: str) -> None:
    obj = make_classif(model)
    res = minimize(obj, obj.init("zeros"), "lbfgs", tol=1e-8, max_iter=500)
    h = res.history
    assert h["passes"][0] == 1.0  # f and ∇f at the start
    assert h["passes"][-1] == 1.0 + res.info["line_search_evals"]
    assert np.all(np.diff(h["passes"]) >= 1.0) and np.all(np.diff(h["passes"]) % 1.0 == 0)


def test_no_curvature_pair_with_non_positive_s_y_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-convex loss (logistic_mse from a saturated start) and a two-evaluation search, so
    that some steps end without the Wolfe conditions: the pairs with sᵀy ≤ 0 are skipped."""
    offered: list[float] = []
    kept: list[float] = []
    update = LBFGS._update

    def spy(self: LBFGS, s: np.ndarray, y: np.ndarray) -> None:
        before = len(self.pairs), self.skipped
        update(self, s, y)
        offered.append(float(s @ y))
        if self.skipped == before[1]:
            kept.append(float(s @ y) / (np.linalg.norm(s) * np.linalg.norm(y)))
        assert all(float(p[0] @ p[1]) > 0 and p[2] > 0 for p in self.pairs)

    monkeypatch.setattr(LBFGS, "_update", spy)
    obj = make_classif("logistic_mse", l2=1e-4)
    w0 = obj.init("saturated", scale=1.0, rng=0)
    res = minimize(obj, w0, "lbfgs", tol=1e-8, max_iter=300, wolfe_max_evals=2)
    assert res.converged, res.message
    assert min(offered) <= 0 and res.info["pairs_skipped"] == sum(sy <= 0 for sy in offered)
    assert min(kept) > 1e-10 and res.info["min_curvature_cos"] == pytest.approx(min(kept))
    assert "curvature pair(s) skipped" in res.message and "\n" not in res.message
    # with the full Wolfe search every pair has sᵀy ≥ (1 − c2)|∇fᵀs| > 0
    full = minimize(obj, w0, "lbfgs", tol=1e-8, max_iter=300)
    assert full.converged and full.info["pairs_skipped"] == 0


def test_two_loop_is_the_bfgs_inverse_hessian_product() -> None:
    rng = np.random.default_rng(4)
    p, k = 5, 3
    A = rng.normal(size=(p, p))
    H = A @ A.T + np.eye(p)
    pairs = deque()
    for _ in range(k):
        s = rng.normal(size=p)
        pairs.append((s, H @ s, 1.0 / float(s @ H @ s)))
    s, y, _ = pairs[-1]
    gamma = float(s @ y) / float(y @ y)
    B = gamma * np.eye(p)  # the inverse-Hessian approximation, updated explicitly
    for s, y, rho in pairs:
        V = np.eye(p) - rho * np.outer(y, s)
        B = V.T @ B @ V + rho * np.outer(s, s)
    g = rng.normal(size=p)
    np.testing.assert_allclose(two_loop(g, pairs, gamma), B @ g, rtol=1e-12, atol=1e-12)


def test_interpolation_is_exact_for_a_quadratic_and_the_search_meets_strong_wolfe() -> None:
    def trial(t: float) -> Trial:  # φ(t) = (t − 3)², φ'(t) = 2(t − 3)
        return Trial(t, (t - 3.0) ** 2, None, 2.0 * (t - 3.0))

    assert cubic_min(trial(0.0), trial(1.0)) == pytest.approx(3.0, abs=1e-12)
    assert secant_root(trial(0.0), trial(10.0)) == pytest.approx(3.0, abs=1e-12)
    calls: list[float] = []

    def phi(t: float) -> Trial:
        calls.append(t)
        return trial(t)

    for t0 in (0.01, 1.0, 100.0):
        calls.clear()
        point, wolfe, trials = strong_wolfe(phi, 9.0, -6.0, t0, 1e-4, 0.9, 20)
        assert wolfe and point is not None and len(trials) == len(calls) <= 20
        assert point.f <= 9.0 + 1e-4 * point.t * -6.0 and abs(point.dphi) <= 0.9 * 6.0


def test_a_non_finite_objective_diverges_with_one_line_and_the_last_finite_iterate() -> None:
    class Finite0:
        """Finite at the start point only."""

        n_params, dtype = 2, np.float64

        def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
            if np.all(w == 0):
                return 1.0, np.array([1.0, -2.0])
            return float("nan"), np.full(2, np.nan)

        def value(self, w: np.ndarray) -> float:
            return self.value_grad(w)[0]

    res = minimize(Finite0(), np.zeros(2), "lbfgs", tol=1e-8, max_iter=50)
    assert res.status == "diverged" and not res.converged and res.n_iter == 1
    assert "non-finite" in res.message and "\n" not in res.message
    np.testing.assert_array_equal(res.w, np.zeros(2))
    assert res.history["passes"][-1] == 1.0 + 20  # the start and one exhausted search


def test_an_overflowing_trial_is_backed_off_not_taken() -> None:
    class Exploding:
        n_params, dtype = 1, np.float64

        def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
            f = float(np.exp(w[0] ** 2))  # inf for |w| > ~26.6
            return f, np.array([2 * w[0] * f])

        def value(self, w: np.ndarray) -> float:
            return self.value_grad(w)[0]

    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(Exploding(), np.array([1.0]), "lbfgs", lr=100.0, tol=1e-8, max_iter=100)
    assert res.converged, res.message
    assert abs(res.w[0]) <= 1e-8


def test_float32_objective() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    obj = make_objective("logistic", X, y, l2=1e-2, dtype="float32")
    res = minimize(obj, obj.init("zeros"), "lbfgs", tol=1e-4, max_iter=200)
    assert res.converged, res.message
    assert res.w.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"memory": 0}, "memory"),
        ({"memory": 2.5}, "memory"),
        ({"wolfe_c2": 1.0}, "wolfe_c2"),
        ({"wolfe_c2": 1e-5}, "wolfe_c2"),  # not above armijo_c = 1e-4
        ({"wolfe_max_evals": 0}, "wolfe_max_evals"),
    ],
)
def test_bad_options_raise_one_line_config_errors(kwargs: dict, key: str) -> None:
    obj = make_classif("logistic")
    with pytest.raises(ConfigError) as exc:
        minimize(obj, obj.init("zeros"), "lbfgs", **kwargs)
    assert key in str(exc.value) and "\n" not in str(exc.value)


def test_lbfgs_options_are_refused_by_other_methods() -> None:
    obj = make_classif("logistic")
    with pytest.raises(ConfigError, match=r"memory.*lbfgs") as exc:
        minimize(obj, obj.init("zeros"), "gd", memory=5)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["optimizer.memory=0"], "optimizer.memory"),
        (["optimizer.wolfe_c2=1.0"], "optimizer.wolfe_c2"),
        (["optimizer.wolfe_max_evals=0"], "optimizer.wolfe_max_evals"),
        (["optimizer.wolfe_c2=1.0e-5"], "optimizer.wolfe_c2"),  # below armijo_c
    ],
)
def test_config_range_checks_name_the_key(overrides: list[str], key: str) -> None:
    cfg = compose_app("train", ["optimizer=lbfgs", *overrides])
    with pytest.raises(ConfigError) as exc:
        validate_train_config(cfg)
    assert key in str(exc.value) and "\n" not in str(exc.value)


def test_other_optimizers_ignore_the_lbfgs_keys() -> None:
    cfg = compose_app("train", ["optimizer=gd_armijo", "optimizer.armijo_c=0.95"])
    validate_train_config(cfg)  # wolfe_c2 = 0.9 < armijo_c matters to lbfgs only
    kwargs = RunSpec.from_config(cfg).solver.minimize_kwargs(0)
    assert not {"memory", "wolfe_c2", "wolfe_max_evals"} & set(kwargs)
