"""Heavy ball, Nesterov, Adam and AdaGrad on the shared loop: the predicted linear rates of
pipeline.core.theory measured on a quadratic with known μ and L, Adam's and AdaGrad's first update
by hand, a clean one-line divergence at too large a step, and a train run for each kind."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support.project import SYNTH, ensure_prepared, make_cfg, read_history

from pipeline.core.errors import ConfigError
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import METHODS, minimize
from pipeline.core.theory import gd_rate, heavy_ball_rate, nesterov_rate
from pipeline.spec import RunSpec
from pipeline.store.rundir import read_run_record, run_dir
from pipeline.train import train

MU, L, P = 1.0, 100.0, 30  # κ = 100: ρ = 0.99 (GD), 0.818 (heavy ball), 0.9 (Nesterov)
# the measured exponent −log ρ̂ within this factor of the predicted −log ρ (measured here: GD 1.02,
# heavy ball 0.94, Nesterov 0.98): the double root of heavy ball's and Nesterov's critically damped
# extreme modes adds a factor k to ρᵏ, which a fit over a finite window reads as a slightly
# different rate
RATE_FACTOR = 1.15


class Quadratic:
    """f(w) = ½ (w − w*)ᵀ H (w − w*) with H = Q diag(λ) Qᵀ, λ from μ to L (known exactly)."""

    def __init__(self, mu: float = MU, L: float = L, p: int = P, known_mu: bool = True) -> None:
        rng = np.random.default_rng(3)
        Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
        self.lam = np.geomspace(mu, L, p)
        self.H = (Q * self.lam) @ Q.T
        self.w_star = rng.standard_normal(p)
        self.n_params, self.dtype, self.mu, self.L = p, np.float64, mu, L
        if known_mu:
            self.strong_convexity = lambda: self.mu

    def value(self, w: np.ndarray) -> float:
        return self.value_grad(w)[0]

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        d = w - self.w_star
        with np.errstate(over="ignore", invalid="ignore"):  # the divergence tests overflow f
            Hd = self.H @ d
            return 0.5 * float(d @ Hd), Hd

    def lipschitz(self) -> float:
        return self.L


def measured_rate(grad_norm: np.ndarray, lo: float = 1e-9, hi: float = 1e-3) -> float:
    """ρ̂ = exp(slope) of the least-squares line through log ‖∇f_k‖ over the iterations where
    ‖∇f_k‖/‖∇f_0‖ lies in [lo, hi] (the asymptotic regime, before rounding)."""
    r = grad_norm / grad_norm[0]
    k = np.flatnonzero((r <= hi) & (r >= lo))
    assert k.size >= 10, "too few iterations in the fitting window"
    slope = np.polyfit(k, np.log(grad_norm[k]), 1)[0]
    return math.exp(slope)


@pytest.mark.parametrize(("method", "predicted", "options"), [
    ("gd", gd_rate, {}),
    ("heavy_ball", heavy_ball_rate, {}),
    ("nesterov", nesterov_rate, {}),
])
def test_each_method_reaches_its_predicted_linear_rate(method, predicted, options) -> None:
    q = Quadratic()
    res = minimize(q, np.zeros(P), method, max_iter=5000, tol=1e-10, **options)
    assert res.status == "converged", res.message
    rho = predicted(L, MU)
    rho_hat = measured_rate(res.history["grad_norm"])
    ratio = math.log(rho_hat) / math.log(rho)
    assert 1 / RATE_FACTOR <= ratio <= RATE_FACTOR, (method, rho, rho_hat)
    np.testing.assert_allclose(res.w, q.w_star, atol=1e-8)
    # one gradient per iteration, and the start point's
    np.testing.assert_array_equal(res.history["passes"], np.arange(res.n_iter + 1) + 1.0)


def test_accelerated_methods_need_about_sqrt_kappa_iterations() -> None:
    q = Quadratic()
    its = {m: minimize(q, np.zeros(P), m, max_iter=5000, tol=1e-8).n_iter
           for m in ("gd", "heavy_ball", "nesterov")}
    assert its["heavy_ball"] < its["nesterov"] < its["gd"] / 5


def test_theory_rates_are_the_formulas() -> None:
    assert gd_rate(100.0, 1.0) == pytest.approx(0.99)
    assert heavy_ball_rate(100.0, 1.0) == pytest.approx(9 / 11)
    assert nesterov_rate(100.0, 1.0) == pytest.approx(0.9)


def test_heavy_ball_auto_is_the_optimal_pair_or_a_safe_fallback() -> None:
    res = minimize(Quadratic(), np.zeros(P), "heavy_ball", max_iter=1)
    assert res.lr == pytest.approx(4 / (math.sqrt(L) + math.sqrt(MU)) ** 2)
    assert res.info["momentum"] == pytest.approx((9 / 11) ** 2)
    blind = minimize(Quadratic(known_mu=False), np.zeros(P), "heavy_ball", max_iter=5000,
                     tol=1e-8)  # μ unknown: β = 0.9, lr = (1 − β)/L
    assert blind.info["momentum"] == 0.9 and blind.lr == pytest.approx(0.1 / L)
    assert blind.status == "converged"
    fixed = minimize(Quadratic(), np.zeros(P), "heavy_ball", momentum=0.5, max_iter=1)
    assert fixed.lr == pytest.approx(0.5 / L) and fixed.info["momentum"] == 0.5


@pytest.mark.parametrize("restart", ["none", "function", "gradient"])
def test_nesterov_without_mu_uses_t_k_and_restart_speeds_it_up(restart) -> None:
    q = Quadratic(known_mu=False)
    res = minimize(q, np.zeros(P), "nesterov", restart=restart, max_iter=5000, tol=1e-8)
    assert res.status == "converged" and res.info["momentum"] is None
    if restart == "none":
        assert res.info["restarts"] == 0
    else:  # restarted: linear convergence at about the accelerated rate
        plain = minimize(q, np.zeros(P), "nesterov", max_iter=5000, tol=1e-8)
        assert res.info["restarts"] > 0 and res.n_iter < plain.n_iter


def test_adam_first_update_matches_the_hand_computed_step() -> None:
    q = Quadratic()
    w0 = np.linspace(-1.0, 1.0, P)
    g = q.value_grad(w0)[1]
    eta, b1, b2, delta = 0.01, 0.8, 0.99, 1e-6
    m_hat = (1 - b1) * g / (1 - b1)  # bias correction at t = 1 undoes the (1 − β) factors
    v_hat = (1 - b2) * g**2 / (1 - b2)
    expected = w0 - eta * m_hat / (np.sqrt(v_hat) + delta)
    res = minimize(q, w0, "adam", lr=eta, beta1=b1, beta2=b2, delta=delta, max_iter=1)
    np.testing.assert_allclose(res.w, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.w, w0 - eta * np.sign(g), rtol=0, atol=1e-6)  # ≈ sign step
    assert res.history["passes"].tolist() == [1.0, 2.0]


def test_adagrad_first_update_matches_the_hand_computed_step() -> None:
    q = Quadratic()
    w0 = np.linspace(-1.0, 1.0, P)
    g = q.value_grad(w0)[1]
    eta, delta = 0.3, 1e-7
    expected = w0 - eta * g / (np.sqrt(g * g) + delta)
    res = minimize(q, w0, "adagrad", lr=eta, delta=delta, max_iter=1)
    np.testing.assert_allclose(res.w, expected, rtol=0, atol=1e-15)


def _linear_objective():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.standard_normal(120)
    return make_objective("linear", X, y, l2=1e-3)


@pytest.mark.parametrize("method", ["adam", "adagrad"])
def test_minibatch_runs_on_sgds_batches(method) -> None:
    obj = _linear_objective()
    w0 = obj.init("zeros")
    eta, delta = 0.05, 1e-8
    res = minimize(obj, w0, method, lr=eta, delta=delta, batch_size=40, epochs=2, log_every=1,
                   seed=7)  # 3 batches of 40 rows per epoch, a history row after each
    assert res.n_iter == 6
    np.testing.assert_allclose(res.history["passes"], np.arange(7) * 40 / obj.n)
    # one batch of all n rows: the first update on SGD's permutation (from the seed), by hand
    first = minimize(obj, w0, method, lr=eta, delta=delta, batch_size=obj.n, epochs=1, seed=7)
    g = obj.batch_grad(w0, np.random.default_rng(7).permutation(obj.n))
    expected = w0 - eta * g / (np.sqrt(g * g) + delta)  # Adam's and AdaGrad's first step alike
    assert first.n_iter == 1
    np.testing.assert_allclose(first.w, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("method", "options"), [
    ("heavy_ball", {"lr": 1.0, "momentum": 0.5}),
    ("nesterov", {"lr": 1.0}),
    # Adam's and AdaGrad's steps are at most about lr per coordinate (g/√v): too large an lr
    # overflows f at once rather than growing it geometrically
    ("adam", {"lr": 1.0e200}),
    ("adagrad", {"lr": 1.0e200}),
])
def test_too_large_a_step_diverges_cleanly(method, options) -> None:
    res = minimize(Quadratic(), np.zeros(P), method, max_iter=200, **options)
    assert res.status == "diverged", res.message
    assert "step is too large" in res.message
    assert "\n" not in res.message and res.message
    assert np.all(np.isfinite(res.w))


@pytest.mark.parametrize(("method", "options"), [
    ("heavy_ball", {"momentum": 1.0}),
    ("heavy_ball", {"line_search": True}),
    ("nesterov", {"restart": "sometimes"}),
    ("adam", {"beta1": 1.0}),
    ("adam", {"beta2": -0.1}),
    ("adagrad", {"delta": 0.0}),
    ("adam", {"batch_size": 0}),
    ("gd", {"beta1": 0.9}),  # an option of another method
])
def test_bad_options_are_one_line_config_errors(method, options) -> None:
    with pytest.raises(ConfigError) as exc:
        minimize(Quadratic(), np.zeros(P), method, **options)
    assert "\n" not in str(exc.value)


def test_the_methods_are_registered() -> None:
    assert {"heavy_ball", "nesterov", "adam", "adagrad"} <= set(METHODS)


@pytest.mark.parametrize(("optimizer", "extra", "folder"), [
    ("nesterov", [], "synth-kappa100-zscore-linear-nesterov"),
    ("adam", ["optimizer.lr=0.05", "optimizer.batch_size=50", "optimizer.epochs=3"],
     "synth-kappa100-zscore-linear-adam"),
])
def test_train_writes_a_run_folder(work: Path, optimizer, extra, folder) -> None:
    cfg = make_cfg(work, [*SYNTH, "preprocess=zscore", f"optimizer={optimizer}", *extra])
    ensure_prepared(cfg)
    metrics = train(cfg)
    out = run_dir(RunSpec.from_config(cfg))
    assert out.name == folder
    assert metrics["status"] in ("converged", "max_iter") and metrics["optimizer"] == optimizer
    assert read_run_record(out / "metrics.json")["status"] == metrics["status"]
    header, hist = read_history(out / "history.csv")
    loss = hist[:, header.index("loss")]
    assert hist[-1, 0] == metrics["iterations"] and np.all(np.isfinite(loss))
    assert loss[-1] < loss[0]


@pytest.mark.parametrize(("override", "key"), [
    ("optimizer.beta1=1.5", "optimizer.beta1"),
    ("optimizer.restart=never", "optimizer.restart"),
    ("optimizer.delta=0", "optimizer.delta"),
])
def test_config_range_checks_name_the_key(work: Path, override, key) -> None:
    cfg = make_cfg(work, [*SYNTH, "preprocess=zscore", "optimizer=adam", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as exc:
        train(cfg)
    assert "\n" not in str(exc.value)
