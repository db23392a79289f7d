"""Optimizers: Newton = closed form in one step, GD monotone / divergent, Newton-CG = Newton,
stops."""

from __future__ import annotations

import numpy as np
import pytest
from optimizer_cases import make_classif

from pipeline.core.errors import ConfigError
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import HISTORY_KEYS, damped_newton_step, minimize, pcg


def _linear(n=200, d=6, seed=0, l2=1e-2, fit_intercept=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d) + 1.0  # uncentered, anisotropic
    y = X @ rng.normal(size=d) + 2.0 + 0.1 * rng.normal(size=n)
    return X, y, make_objective("linear", X, y, l2=l2, fit_intercept=fit_intercept)



def test_closed_form_matches_independent_least_squares():
    X, y, obj = _linear(l2=0.3)
    n, d = X.shape
    # ridge with unpenalized intercept as one stacked least-squares problem
    A = np.vstack([np.hstack([X, np.ones((n, 1))]) / np.sqrt(n),
                   np.hstack([np.sqrt(0.3) * np.eye(d), np.zeros((d, 1))])])
    rhs = np.concatenate([y / np.sqrt(n), np.zeros(d)])
    w_ref = np.linalg.lstsq(A, rhs, rcond=None)[0]
    res = minimize(obj, obj.init("zeros"), "closed_form")
    assert res.converged and res.n_iter == 1
    np.testing.assert_allclose(res.w, w_ref, rtol=1e-10, atol=1e-12)
    assert len(res.history["loss"]) == 2 and res.history["loss"][1] < res.history["loss"][0]


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_newton_on_linear_regression_reaches_optimum_in_one_step(fit_intercept):
    _, _, obj = _linear(fit_intercept=fit_intercept)
    w_star = minimize(obj, obj.init("zeros"), "closed_form").w
    res = minimize(obj, obj.init("random", rng=0), "newton", tol=1e-9, max_iter=10)
    assert res.converged and res.n_iter == 1
    np.testing.assert_allclose(res.w, w_star, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_gd_with_lr_one_over_L_decreases_monotonically(model):
    obj = _linear()[2] if model == "linear" else make_classif(model)
    res = minimize(obj, obj.init("random", rng=3), "gd", lr="auto", max_iter=200, tol=0.0)
    assert res.status == "max_iter" and res.n_iter == 200
    assert res.lr == pytest.approx(1.0 / obj.lipschitz())
    loss = res.history["loss"]
    assert np.all(np.diff(loss) <= 1e-12 * np.abs(loss[:-1]))
    assert loss[-1] < 0.9 * loss[0]


def test_gd_with_lr_far_above_2_over_L_is_reported_as_diverged():
    _, _, obj = _linear()
    L = obj.lipschitz()
    res = minimize(obj, obj.init("zeros"), "gd", lr=10.0 / L, max_iter=10_000, tol=1e-8)
    assert res.status == "diverged" and not res.converged
    assert "lr" in res.message and "\n" not in res.message
    assert np.all(np.isfinite(res.w)) and np.isfinite(obj.value(res.w))
    assert res.n_iter < 10_000
    # and just below 2/L it converges (slowly): the threshold is where the theory puts it
    ok = minimize(obj, obj.init("zeros"), "gd", lr=1.9 / L, max_iter=20_000, tol=1e-6)
    assert ok.status in ("converged", "max_iter")
    assert ok.history["loss"][-1] < ok.history["loss"][0]


def test_non_finite_loss_ends_with_diverged_and_last_finite_iterate():
    class Exploding:
        n_params = 1
        dtype = np.float64

        def value_grad(self, w):
            f = float(np.exp(w[0] ** 2))  # overflows to inf for |w| > ~26.6
            return f, np.array([2 * w[0] * f])

        def value(self, w):
            return self.value_grad(w)[0]

    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(
            Exploding(), np.array([1.0]), "gd", lr=0.5, max_iter=100, divergence_factor=np.inf
        )
    assert res.status == "diverged" and "non-finite" in res.message
    assert np.all(np.isfinite(res.w))


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_newton_cg_newton_and_gd_with_line_search_agree(model):
    obj = make_classif(model)
    w0 = obj.init("zeros")
    nt = minimize(obj, w0, "newton", tol=1e-10, max_iter=50, line_search=True)
    cg = minimize(obj, w0, "newton_cg", tol=1e-10, max_iter=50, line_search=True)
    cg64 = minimize(obj, w0, "newton_cg", tol=1e-10, max_iter=50, line_search=True,
                    hvp_precision="float64", preconditioner="block")
    assert nt.converged and cg.converged and cg64.converged, (nt.message, cg.message, cg64.message)
    assert nt.n_iter <= 12
    f_star = nt.loss
    assert abs(cg.loss - f_star) <= 1e-13 * abs(f_star) + 1e-15
    assert abs(cg64.loss - f_star) <= 1e-13 * abs(f_star) + 1e-15
    gd = minimize(obj, w0, "gd", line_search=True, lr=10.0, max_iter=5000, tol=1e-6)
    assert gd.converged and gd.loss - f_star <= 1e-9
    assert np.all(np.diff(gd.history["loss"]) <= 0)  # Armijo: every step decreases f


def test_newton_quadratic_convergence_on_logistic():
    obj = make_classif("logistic", l2=1e-3)
    res = minimize(obj, obj.init("zeros"), "newton", tol=1e-12, max_iter=30)
    g = res.history["grad_norm"]
    assert res.converged
    # locally quadratic: the estimated order log(g_k/g_{k-1}) / log(g_{k-1}/g_{k-2}) is ≈ 2
    k = int(np.flatnonzero(g > 1e-14)[-1])  # last value above the rounding floor
    order = np.log(g[k] / g[k - 1]) / np.log(g[k - 1] / g[k - 2])
    assert order > 1.6, g


def test_newton_damps_indefinite_hessian_of_logistic_mse():
    obj = make_classif("logistic_mse", l2=1e-4)
    w0 = obj.init("saturated", scale=1.0, rng=0)
    assert np.linalg.eigvalsh(obj.hessian(w0))[0] < 0  # start in a non-convex region
    res = minimize(obj, w0, "newton", line_search=True, tol=1e-8, max_iter=200)
    assert res.info["n_damped"] >= 1 and "damped" in res.message
    loss = res.history["loss"]
    assert np.all(np.diff(loss) <= 0) and loss[-1] < 0.5 * loss[0]
    assert np.all(np.isfinite(res.w))


def test_damped_newton_step_makes_the_system_positive_definite():
    H = np.array([[1.0, 0.0], [0.0, -2.0]])
    g = np.array([1.0, 1.0])
    s, tau = damped_newton_step(H, g)
    assert tau > 2.0
    assert g @ s < 0  # a descent direction
    np.testing.assert_allclose((H + tau * np.eye(2)) @ s, -g)


def test_pcg_solves_spd_systems_and_flags_negative_curvature():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 30))
    H = A @ A.T + 0.1 * np.eye(30)
    b = rng.normal(size=30)
    x, it, neg = pcg(lambda v: H @ v, b, 1e-12, 500, 1.0 / np.diag(H))
    assert not neg
    np.testing.assert_allclose(x, np.linalg.solve(H, b), rtol=1e-8, atol=1e-10)
    _, _, neg = pcg(lambda v: -v, b, 1e-8, 10)
    assert neg


def test_softmax_newton_respects_gauge_and_history_contract():
    obj = make_classif("softmax")
    calls = []
    res = minimize(
        obj, obj.init("zeros"), "newton", tol=1e-10, callback=lambda i, r: calls.append((i, r))
    )
    assert res.converged
    _, b = obj.unpack(res.w)
    assert abs(b.sum()) < 1e-10  # no drift along the flat direction b + t·1
    h = res.history
    assert set(h) == set(HISTORY_KEYS)
    assert all(len(v) == res.n_iter + 1 for v in h.values())
    assert h["iteration"][0] == 0 and h["step_size"][0] == 0 and h["time_s"][0] >= 0
    assert np.all(np.diff(h["time_s"]) >= 0)
    assert h["loss"][0] == pytest.approx(np.log(3.0))
    assert [i for i, _ in calls] == list(range(res.n_iter + 1))
    assert calls[-1][1]["grad_norm"] == h["grad_norm"][-1] <= 1e-10


def test_time_budget_and_max_iter_stop():
    obj = make_classif("softmax")
    res = minimize(obj, obj.init("zeros"), "gd", time_budget_s=1e-9, max_iter=10_000, tol=0.0)
    assert res.status == "time_budget" and res.n_iter <= 1
    res = minimize(obj, obj.init("zeros"), "gd", max_iter=3, tol=0.0)
    assert res.status == "max_iter" and res.n_iter == 3 and "max_iter" in res.message


def test_float32_objective_runs_all_iterative_methods():
    obj = make_objective("logistic", *_xy32(), l2=1e-2, dtype="float32")
    for method in ("gd", "newton", "newton_cg"):
        res = minimize(obj, obj.init("zeros"), method, tol=1e-4, max_iter=500, line_search=True)
        assert res.converged, (method, res.message)
        assert res.w.dtype == np.float32


def _xy32():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 4))
    return X, (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "adamw"},  # not a registered method
        {"method": "gd", "lr": -1.0},
        {"method": "gd", "lr": "fast"},
        {"method": "gd", "max_iter": -3},
        {"method": "gd", "tol": float("nan")},
        {"method": "gd", "armijo_c": 1.5},
        {"method": "gd", "backtrack": 0.0},
        {"method": "newton_cg", "cg_max_iter": 0},
        {"method": "gd", "time_budget_s": 0},
        {"method": "gd", "momentum": 0.9},
        {"method": "closed_form"},  # logistic has no closed form
    ],
)
def test_bad_options_raise_config_error(kwargs):
    obj = make_classif("logistic")
    with pytest.raises(ConfigError) as exc:
        minimize(obj, obj.init("zeros"), **kwargs)
    assert "\n" not in str(exc.value)


def test_bad_start_point_raises():
    obj = make_classif("logistic")
    with pytest.raises(ConfigError):
        minimize(obj, np.zeros(3), "gd")
    with pytest.raises(ConfigError):
        minimize(obj, np.full(obj.n_params, np.nan), "gd")


def test_config_keys_for_the_start_point_are_accepted():
    obj = make_classif("logistic")
    res = minimize(obj, obj.init("zeros"), "gd", init="zeros", init_scale=1.0, max_iter=2)
    assert res.n_iter == 2


@pytest.mark.parametrize("preconditioner", ["auto", "block", "jacobi", "none"])
def test_newton_cg_preconditioners_reach_the_newton_optimum_even_without_penalty(preconditioner):
    # no penalty: the preconditioner needs its own ridge
    obj = make_classif("softmax", n=400, l2=0.0)
    obj_pen = make_classif("softmax", n=400, l2=1e-3)
    for o in (obj, obj_pen):
        ref = minimize(o, o.init("zeros"), "newton", tol=1e-9, line_search=True, max_iter=100)
        res = minimize(o, o.init("zeros"), "newton_cg", tol=1e-9, line_search=True, max_iter=100,
                       preconditioner=preconditioner, cg_max_iter=10)  # ≥ 8: auto builds
        assert res.converged, res.message
        assert res.loss <= ref.loss + 1e-12 * abs(ref.loss)


@pytest.mark.parametrize("penalized", [False, True])
def test_newton_cg_class_blocks_split_along_the_softmax_shifts_need_few_cg_steps(
        monkeypatch, penalized: bool) -> None:
    """Small λ: the class blocks see the data's curvature on W + v1ᵀ where the Hessian is only λ.
    Split along those shifts, preconditioned CG needs a fraction of the iterations of the plain
    blocks, from zeros and from a random start (whose shift part the split solves exactly), and
    reaches the same optimum."""
    from pipeline.core import objectives

    rng = np.random.default_rng(0)
    n, d, c = 2000, 30, 5
    X = rng.standard_normal((n, d)) * np.logspace(0, -2, d)
    y = rng.integers(0, c, n)
    X[:, :3] += 0.5 * y[:, None]
    P = None
    if penalized:
        A = rng.standard_normal((d, d))
        P = A @ A.T / d + 0.1 * np.eye(d)
    obj = make_objective("softmax", X, y, l2=1e-4, fit_intercept=True, n_classes=c, penalty=P)

    def solve(init: str) -> tuple[int, float]:
        res = minimize(obj, obj.init(init, rng=1), "newton_cg", tol=1e-9, max_iter=100,
                       preconditioner="block", line_search=True)
        assert res.converged
        return sum(res.info["cg_per_step"]), float(res.history["loss"][-1])

    split = {init: solve(init) for init in ("zeros", "random")}
    monkeypatch.setattr(objectives, "class_shift_split", lambda o, solve: solve)
    plain = {init: solve(init) for init in ("zeros", "random")}
    for init in split:
        assert split[init][0] * 4 < plain[init][0], (init, split[init], plain[init])
        assert split[init][1] == pytest.approx(plain[init][1], rel=1e-13, abs=0)


def test_diag_newton_solves_a_diagonal_quadratic_in_one_step_with_lr_one() -> None:
    """X with orthogonal columns (no intercept): ∇²f = (1/n) XᵀX is diagonal, so w − D⁻¹∇f is
    Newton's step and lands on the least-squares solution."""
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(40, 4)))
    X = Q * np.array([1.0, 10.0, 100.0, 1000.0])  # κ = 1e6, axis-aligned
    y = rng.normal(size=40)
    obj = make_objective("linear", X, y, fit_intercept=False)
    H = obj.hessian(np.zeros(4))
    assert np.allclose(H, np.diag(np.diag(H)), atol=1e-9 * np.abs(H).max())
    res = minimize(obj, np.zeros(4), "diag_newton", lr=1.0, max_iter=5, tol=1e-8)
    assert res.converged and res.n_iter == 1, res.message
    np.testing.assert_allclose(res.w, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    assert res.history["passes"][-1] == 3.0  # start + (diagonal + gradient)
    gd = minimize(obj, np.zeros(4), "gd", max_iter=5, tol=1e-8)
    assert not gd.converged  # GD at 1/L crawls along the flat direction


def test_diag_newton_diagonal_matches_the_dense_hessian_on_softmax() -> None:
    from pipeline.core.solvers.diag_newton import hessian_diagonal

    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 5)) * np.array([1.0, 2.0, 0.0, 3.0, 0.5])  # an all-zero column
    obj = make_objective("softmax", X, rng.integers(0, 3, 60), l2=1e-2, n_classes=3)
    w = rng.normal(size=obj.n_params)
    np.testing.assert_allclose(hessian_diagonal(obj, w), np.diag(obj.hessian(w)), rtol=1e-10,
                               atol=1e-14)
    res = minimize(obj, obj.init("zeros"), "diag_newton", max_iter=200, tol=1e-8,
                   line_search=True)
    # with Armijo backtracking: a descent method (D⁻¹ ≻ 0), linear but not one-step (coupled H)
    assert res.status == "max_iter" and np.all(np.diff(res.history["loss"]) <= 0)
    gn = res.history["grad_norm"]
    assert gn[-1] < 1e-3 * gn[0] and res.info["min_hessian_diagonal"] == pytest.approx(1e-2)
