"""penalty_space=input: every preprocessing is a change of coordinates of the raw data's objective.

The penalty λ/2 tr(W_zᵀ P W_z) with P = A Aᵀ equals λ/2 ‖W_x‖² on the input-space weights, so
none / zscore / whiten reach the same f*, the same predictions and scikit-learn's optimum; exact
Newton is affine invariant (same step counts) while GD and Newton-CG's inner CG get faster.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.compose import compose_app

from pipeline.config.schemas import as_kwargs
from pipeline.core.objectives import make_objective
from pipeline.core.solvers import minimize
from pipeline.core.transforms import Transform, fit_preprocess
from pipeline.data.datasets import load_dataset
from pipeline.prepare import prepare
from pipeline.spec import ModelSpec, RunSpec, run_objective
from pipeline.store.prepared import prepared_file
from pipeline.store.rundir import read_run_record
from pipeline.train import train

MODELS = ("linear", "logistic", "logistic_mse", "softmax")
PRES = {
    "none": {"name": "none"},
    "zscore": {"name": "zscore"},
    "whiten": {"name": "whiten", "ridge": None},  # ridge = λ of the problem (filled in below)
}


def _data(model: str, n: int = 40, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 3.0, 0.2, 1.0, 5.0])[:d] + 0.5
    if model == "linear":
        return X, X @ rng.normal(size=d) + rng.normal(size=n)
    if model == "softmax":
        return X, rng.integers(0, 3, n)
    return X, (rng.random(n) < 0.5).astype(np.int64)


def _spd(d: int, seed: int = 1, singular: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(d, d))
    if singular:
        B[:, 0] = 0.0  # a direction the penalty does not see (an absorbed bias)
    return B @ B.T / d


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_gradient_hvp_hessian_with_penalty_matrix_match_finite_differences(
    model: str, fit_intercept: bool
) -> None:
    X, y = _data(model)
    X[:, 3] = 0.0  # an all-zero feature: dropped from the products, coupled in by P
    P = _spd(X.shape[1])
    obj = make_objective(
        model,
        X,
        y,
        l2=0.3,
        fit_intercept=fit_intercept,
        n_classes=3 if model == "softmax" else None,
        penalty=P,
    )
    rng = np.random.default_rng(2)
    w, v = rng.normal(size=obj.n_params) * 0.3, rng.normal(size=obj.n_params)
    h = 1e-6
    fd_g = np.array(
        [(obj.value(w + h * e) - obj.value(w - h * e)) / (2 * h) for e in np.eye(obj.n_params)]
    )
    np.testing.assert_allclose(obj.grad(w), fd_g, rtol=1e-6, atol=1e-8)
    fd_hv = (obj.grad(w + h * v) - obj.grad(w - h * v)) / (2 * h)
    np.testing.assert_allclose(obj.hvp(w, v), fd_hv, rtol=1e-5, atol=1e-7)
    H = obj.hessian(w)
    np.testing.assert_allclose(H @ v, obj.hvp(w, v), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.diag(H), obj.hess_operator(w).diagonal(), rtol=1e-10, atol=1e-12)
    # the penalty itself: f(w) − loss = λ/2 tr(Wᵀ P W)
    W = obj.unpack(w)[0].reshape(X.shape[1], -1)
    pen = obj.value(w) - obj.predict_loss(X, y, w)
    assert pen == pytest.approx(0.15 * float(np.sum(W * (P @ W))), rel=1e-12)
    # L is an upper bound of the curvature, exact for least squares
    L = obj.lipschitz()
    top = np.linalg.eigvalsh(H)[-1]
    assert L >= top * (1 - 1e-9) and (model != "linear" or L == pytest.approx(top, rel=1e-9))


def test_softmax_gauge_includes_the_penalty_null_space() -> None:
    X, y = _data("softmax")
    obj = make_objective(
        "softmax", X, y, l2=0.3, fit_intercept=False, n_classes=3, penalty=_spd(5, singular=True)
    )
    U = obj.gauge_directions()
    assert U.shape[0] == 1
    w = np.random.default_rng(0).normal(size=obj.n_params)
    assert obj.value(w + 3.0 * U[0]) == pytest.approx(obj.value(w), rel=1e-12)
    assert abs(obj.grad(w) @ U[0]) < 1e-12


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("pre", ["zscore", "whiten", "whiten_noaug", "whiten_ridge"])
def test_transformed_objective_equals_raw_objective_at_mapped_weights(model: str, pre: str) -> None:
    X, y = _data(model, n=60)
    cfg = {"zscore": {"name": "zscore"}, "whiten": {"name": "whiten"},
           "whiten_noaug": {"name": "whiten", "augment": False},
           "whiten_ridge": {"name": "whiten", "ridge": 0.3}}[pre]
    tr = fit_preprocess(cfg, X)
    assert tr.penalty_space == "input"
    c = 3 if model == "softmax" else None
    mcfg = {"name": model, "l2": 0.3, "fit_intercept": True}
    raw = make_objective(model, X, y, l2=0.3, n_classes=c)
    ds = type("D", (), {"X_train": tr.apply(X), "y_train": y, "n_classes": c})()
    obj = run_objective(ModelSpec.from_node(mcfg), ds, tr)
    w = np.random.default_rng(3).normal(size=obj.n_params)
    W, b = obj.unpack(w)
    Wx, bx = tr.input_weights(W, b)
    assert obj.value(w) == pytest.approx(raw.value(raw.pack(Wx, bx)), rel=1e-11)
    # the same data with penalty_space=transformed is another objective
    tr_t = fit_preprocess({**cfg, "penalty_space": "transformed"}, X)
    other = run_objective(ModelSpec.from_node(mcfg), ds, tr_t)
    assert abs(other.value(w) - obj.value(w)) > 1e-6


def test_transform_round_trip_keeps_penalty_space_and_old_files_are_refused() -> None:
    X, _ = _data("linear")
    tr = fit_preprocess({"name": "whiten", "penalty_space": "transformed"}, X)
    back = Transform.from_arrays(tr.to_arrays())
    assert back.penalty_space == "transformed" and back.penalty_matrix() is None
    arrays = fit_preprocess({"name": "whiten"}, X).to_arrays()
    np.testing.assert_allclose(Transform.from_arrays(arrays).penalty_matrix(),
                               arrays["matrix"] @ arrays["matrix"].T)
    del arrays["penalty_space"]
    with pytest.raises(Exception, match="rerun `python -m pipeline.prepare`"):
        Transform.from_arrays(arrays)


def test_dropping_data_directions_is_refused_under_input_penalty() -> None:
    from pipeline.config.checks import config_keys
    from pipeline.core.errors import ConfigError
    from pipeline.core.transforms import validate_preprocess_config

    for key, val in (("rel_threshold", 1.0e-6), ("n_components", 3), ("explained_variance", 0.9)):
        with pytest.raises(ConfigError, match=f"preprocess.{key}=.*penalty_space=transformed"), \
                config_keys():
            validate_preprocess_config({"name": "whiten", key: val})
        with pytest.raises(ConfigError, match=f"^{key}=.* or use penalty_space=transformed"):
            validate_preprocess_config({"name": "whiten", key: val})
        validate_preprocess_config({"name": "whiten", key: val, "penalty_space": "transformed"})
    with pytest.raises(ConfigError, match="penalty_space"):
        validate_preprocess_config({"name": "zscore", "penalty_space": "inputs"})


def _solve_all(ds, model: str, lam: float, method: str, **opts):
    out = {}
    for name, pre in PRES.items():
        pre = {**pre, "ridge": lam} if name == "whiten" else pre
        tr = fit_preprocess(pre, ds.X_train)
        d2 = replace(ds, X_train=tr.apply(ds.X_train), X_test=tr.apply(ds.X_test))
        obj = run_objective(
            ModelSpec.from_node({"name": model, "l2": lam, "fit_intercept": True}), d2, tr
        )
        res = minimize(obj, obj.init("zeros"), method, **opts)
        out[name] = (obj, res, d2, tr)
    return out


def _agree(out, tol_f: float = 1e-9) -> None:
    f0 = out["none"][0].value(out["none"][1].w)
    p0 = out["none"][0].predict(out["none"][2].X_test, out["none"][1].w)
    for name, (obj, res, d2, _) in out.items():
        assert res.status == "converged", (name, res.message)
        assert abs(obj.value(res.w) - f0) <= tol_f * abs(f0), name
        pred = obj.predict(d2.X_test, res.w)
        same = np.isclose(pred, p0, rtol=1e-6, atol=1e-9) if pred.dtype.kind == "f" else pred == p0
        assert np.mean(same) >= 0.999, name


def test_least_squares_same_objective_closed_form_and_one_gd_step() -> None:
    ds = load_dataset(
        {
            "name": "synthetic_regression",
            "id": "synth",
            "n_samples": 2000,
            "n_features": 20,
            "condition_number": 1.0e2,
            "noise": 0.1,
            "test_fraction": 0.2,
        },
        seed=0,
    )
    lam = 1.0e-2
    out = _solve_all(ds, "linear", lam, "newton", tol=1e-9, max_iter=5)
    _agree(out)
    obj_w, _, d2, _ = out["whiten"]
    # ridge whitening: the regularized Hessian is exactly I; one GD step with ε = 1 is the minimizer
    np.testing.assert_allclose(
        obj_w.hessian(np.zeros(obj_w.n_params)), np.eye(obj_w.n_params), atol=1e-10
    )
    step = minimize(obj_w, obj_w.init("zeros"), "gd", lr=1.0, max_iter=1, tol=0.0)
    np.testing.assert_allclose(step.w, obj_w.closed_form(), atol=1e-10)
    # closed forms agree, and with scikit-learn's Ridge on the raw data (alpha = λ n for ½‖r‖²/n)
    from sklearn.linear_model import Ridge

    f_star = out["none"][0].value(out["none"][0].closed_form())
    for obj, _, _, _ in out.values():
        assert obj.value(obj.closed_form()) == pytest.approx(f_star, rel=1e-12)
    n = ds.X_train.shape[0]
    sk = Ridge(alpha=lam * n, tol=1e-12).fit(ds.X_train, ds.y_train)
    raw = out["none"][0]
    assert raw.value(raw.pack(sk.coef_, sk.intercept_)) == pytest.approx(f_star, rel=1e-10)


@pytest.fixture(scope="module")
def binary38():
    return load_dataset(
        {
            "name": "mnist_binary",
            "id": "mnist-3v8",
            "digits": [3, 8],
            "n_train": 2000,
            "n_test": 1000,
        },
        seed=0,
    )


@pytest.mark.slow
def test_logistic_3v8_same_optimum_as_sklearn_and_affine_invariant_newton(
    binary38, mnist_dir
) -> None:
    lam = 1.0e-4
    out = _solve_all(binary38, "logistic", lam, "newton", tol=1e-9, max_iter=50, line_search=True)
    _agree(out)
    steps = {k: v[1].n_iter for k, v in out.items()}
    assert max(steps.values()) - min(steps.values()) <= 2, steps  # affine invariance of Newton
    from sklearn.linear_model import LogisticRegression

    n = binary38.X_train.shape[0]
    sk = LogisticRegression(C=1.0 / (lam * n), tol=1e-12, max_iter=1000, solver="newton-cg").fit(
        binary38.X_train, binary38.y_train)
    raw = out["none"][0]
    f_sk = raw.value(raw.pack(sk.coef_.ravel(), sk.intercept_[0]))
    f_star = raw.value(out["none"][1].w)
    assert f_star <= f_sk + 1e-12 and (f_sk - f_star) <= 1e-8 * f_star
    # GD with ε = 1/L on the same objective: whitening needs far fewer iterations
    # (measured, 2000 images: relative suboptimality after 100 steps 5.2 raw, 0.98 whitened)
    gap = {
        k: (
            minimize(v[0], v[0].init("zeros"), "gd", lr="auto", max_iter=100, tol=0.0).history[
                "loss"
            ][-1]
            - f_star
        )
        / f_star
        for k, v in out.items()
        if k in ("none", "whiten")
    }
    assert gap["whiten"] * 3 <= gap["none"], gap


@pytest.mark.slow
def test_softmax_mnist5k_same_optimum_newton_cg_inner_iterations_drop(mnist_dir) -> None:
    ds = load_dataset({"name": "mnist", "id": "mnist-5k", "n_train": 5000, "n_test": 2000}, seed=0)
    out = _solve_all(ds, "softmax", 1.0e-4, "newton_cg", tol=1e-9, max_iter=60, line_search=True,
                     cg_max_iter=500)
    _agree(out)
    # plain CG on the first Newton system H s = −∇f at w = 0 to a relative residual of 1e-6 (the
    # class-block preconditioner of preconditioner=auto already hides most of the raw
    # ill-conditioning)
    cg = {k: _cg_iterations(v[0], cap=150) for k, v in out.items() if k in ("none", "whiten")}
    assert cg["whiten"] * 3 <= cg["none"], cg


def _cg_iterations(obj, cap: int, rtol: float = 1e-6) -> int:
    w = obj.init("zeros")
    op = obj.hess_operator(w)
    b = -obj.grad(w)
    x, r = np.zeros_like(b), b.copy()
    p, rr = r.copy(), float(r @ r)
    for k in range(1, cap + 1):
        Ap = op.matvec(p)
        a = rr / float(p @ Ap)
        x += a * p
        r -= a * Ap
        rr_new = float(r @ r)
        if np.sqrt(rr_new) <= rtol * np.linalg.norm(b):
            return k
        p, rr = r + (rr_new / rr) * p, rr_new
    return cap


@pytest.mark.slow
def test_train_cli_whitened_logistic_matches_raw_train_loss(tmp_path: Path, mnist_dir) -> None:
    losses = {}
    for pre in ("none", "whiten"):
        base = [
            f"paths.prepared_dir={tmp_path / 'prepared'}",
            f"paths.experiments_dir={tmp_path / 'exp'}",
            "mlflow.enabled=false",
            "progress=false",
            "data=mnist_binary",
            f"preprocess={pre}",
            "model=logistic",
            "optimizer=newton",
            "optimizer.tol=1.0e-10",
            "data.n_train=1000",
            "data.n_test=500",
            "data.id=mnist-3v8-1k",
        ]
        cfg = compose_app("train", base)
        path = prepared_file(RunSpec.from_config(cfg))
        prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), int(cfg.seed), path.parent)
        m = train(cfg)
        written = read_run_record(
            next((tmp_path / "exp").rglob(f"*-{pre}-logistic-newton/metrics.json")))
        assert written["train_loss"] == m["train_loss"] and written["converged"]
        losses[pre] = written["train_loss"]
    assert losses["whiten"] == pytest.approx(losses["none"], rel=1e-9)
