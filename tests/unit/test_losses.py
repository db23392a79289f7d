"""Objectives: gradients and HVPs against finite differences, Hessian structure, stability,
errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logsumexp

from pipeline.core.errors import ConfigError, DataError, NumericalError
from pipeline.core.objectives import MSE_LOGISTIC_CURVATURE, make_objective

MODELS = ["linear", "logistic", "logistic_mse", "softmax"]


def _data(model: str, n: int = 60, d: int = 5, seed: int = 0, zero_col: bool = True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if zero_col:
        X[:, 1] = 0.0  # an all-zero feature (exercises the dropped-column path)
    if model == "linear":
        y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    elif model == "softmax":
        y = rng.integers(0, 3, size=n)
    else:
        y = rng.integers(0, 2, size=n)
    return X, y


def _obj(model: str, fit_intercept: bool = True, dtype=np.float64, l2: float = 0.1, **kw):
    X, y = _data(model, **kw)
    return make_objective(model, X, y, l2=l2, fit_intercept=fit_intercept,
                          n_classes=3 if model == "softmax" else None, dtype=dtype)


def _reference_value(model: str, X, y, W, b, l2: float) -> float:
    """Independent, naive implementation of each objective (no shared code with
    pipeline.core.objectives)."""
    n = X.shape[0]
    z = X @ W + b
    if model == "linear":
        data = 0.5 * np.mean((z - y) ** 2)
    elif model == "logistic":
        data = np.mean(np.logaddexp(0.0, z) - y * z)
    elif model == "logistic_mse":
        data = 0.5 * np.mean((expit(z) - y) ** 2)
    else:
        data = np.mean(logsumexp(z, axis=1) - z[np.arange(n), y])
    return float(data + 0.5 * l2 * np.sum(W**2))


def _fd_grad(f, w, eps):
    E = np.eye(w.size)
    return np.array([(f(w + eps * e) - f(w - eps * e)) / (2 * eps) for e in E])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_value_matches_independent_reference(model, fit_intercept):
    X, y = _data(model)
    obj = make_objective(model, X, y, l2=0.3, fit_intercept=fit_intercept,
                         n_classes=3 if model == "softmax" else None)
    w = np.random.default_rng(1).normal(size=obj.n_params)
    W, b = obj.unpack(w)
    assert obj.value(w) == pytest.approx(_reference_value(model, X, y, W, b, 0.3), rel=1e-12)
    assert obj.predict_loss(X, y, w) == pytest.approx(
        _reference_value(model, X, y, W, b, 0.0), rel=1e-12
    )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_gradient_and_hvp_match_central_differences_float64(model, fit_intercept):
    obj = _obj(model, fit_intercept)
    rng = np.random.default_rng(2)
    w, v = rng.normal(size=obj.n_params), rng.normal(size=obj.n_params)
    g = obj.grad(w)
    np.testing.assert_allclose(g, _fd_grad(obj.value, w, 1e-6), rtol=1e-6, atol=1e-8)
    hv_fd = (obj.grad(w + 1e-6 * v) - obj.grad(w - 1e-6 * v)) / 2e-6
    np.testing.assert_allclose(obj.hvp(w, v), hv_fd, rtol=1e-6, atol=1e-8)
    f, g2 = obj.value_grad(w)
    assert f == obj.value(w)
    np.testing.assert_array_equal(g, g2)


@pytest.mark.parametrize("model", MODELS)
def test_float32_gradient_and_hvp_agree_with_float64_differences(model):
    """float32 objectives: results in float32, within float32 accuracy of the float64
    derivatives."""
    obj32, obj64 = _obj(model, dtype=np.float32), _obj(model, dtype=np.float64)
    rng = np.random.default_rng(3)
    w, v = rng.normal(size=obj64.n_params), rng.normal(size=obj64.n_params)
    g32 = obj32.grad(w)
    assert g32.dtype == np.float32
    g_fd = _fd_grad(obj64.value, w, 1e-6)
    np.testing.assert_allclose(g32, g_fd, rtol=2e-4, atol=2e-5)
    hv_fd = (obj64.grad(w + 1e-6 * v) - obj64.grad(w - 1e-6 * v)) / 2e-6
    np.testing.assert_allclose(obj32.hvp(w, v), hv_fd, rtol=2e-4, atol=2e-5)
    # and a float32 finite difference of the float32 objective itself (coarse step, loose tolerance)
    g_fd32 = _fd_grad(lambda u: obj32.value(u), w.astype(np.float32), np.float32(1e-2))
    np.testing.assert_allclose(g32, g_fd32, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dense_hessian_symmetric_matches_hvp_and_diagonal(model, fit_intercept):
    obj = _obj(model, fit_intercept)
    rng = np.random.default_rng(4)
    w, v = rng.normal(size=obj.n_params), rng.normal(size=obj.n_params)
    H = obj.hessian(w)
    assert H.shape == (obj.n_params, obj.n_params)
    np.testing.assert_allclose(H, H.T, atol=1e-14)
    np.testing.assert_allclose(H @ v, obj.hvp(w, v), rtol=1e-12, atol=1e-13)
    op = obj.hess_operator(w)
    np.testing.assert_allclose(op.diagonal(), np.diag(H), rtol=1e-12, atol=1e-14)
    # the float32 fast path used inside Newton-CG: same operator to single precision
    np.testing.assert_allclose(obj.hess_operator(w, precision="float32").matvec(v), H @ v,
                               rtol=1e-4, atol=1e-5)
    # the Hessian columns are the finite differences of the gradient
    H_fd = np.column_stack([(obj.grad(w + 1e-6 * e) - obj.grad(w - 1e-6 * e)) / 2e-6
                            for e in np.eye(obj.n_params)])
    np.testing.assert_allclose(H, H_fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_row_blocked_hvp_equals_dense_hessian_product(model, fit_intercept, monkeypatch):
    """The Hessian-vector product runs over blocks of rows; blocks of 7 (the last one ragged) give H
    v."""
    import pipeline.core.objectives as losses

    obj = _obj(model, fit_intercept)
    rng = np.random.default_rng(5)
    w, v = rng.normal(size=obj.n_params), rng.normal(size=obj.n_params)
    one_block = obj.hvp(w, v)
    monkeypatch.setattr(losses, "HVP_ROW_BLOCK", 7)
    assert obj.n % 7 and obj.n > 7 * 3
    H = obj.hessian(w)
    np.testing.assert_allclose(obj.hvp(w, v), H @ v, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(obj.hvp(w, v), one_block, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        obj.hess_operator(w, precision="float32").matvec(v), H @ v, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_value_and_gradient_over_row_blocks(model, fit_intercept, dtype, monkeypatch):
    """Past FUSED_ROW_BLOCK rows (f, ∇f) is one blocked pass (the last block ragged; no
    whole-matrix margins): the value of the naive reference, the gradient of central differences,
    and the whole-matrix products' value and gradient to rounding; at or below it, the
    whole-matrix path's bits."""
    import pipeline.core.objectives as losses

    n = 2 * losses.FUSED_ROW_BLOCK + 37
    obj = _obj(model, fit_intercept, dtype=dtype, n=n, d=6)
    X, y = _data(model, n=n, d=6)
    rng = np.random.default_rng(3)
    w = rng.normal(size=obj.n_params).astype(dtype)
    f0, g0 = obj.value_grad_from_margins(w, obj.margins(w))  # two whole-matrix products
    with monkeypatch.context() as m:
        m.setattr(obj, "margins", lambda w: pytest.fail("whole-matrix margins in value_grad"))
        f, g = obj.value_grad(w)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    assert f == pytest.approx(f0, rel=tol)
    np.testing.assert_allclose(g, g0, rtol=tol * 10, atol=tol)
    assert g.dtype == g0.dtype and g.shape == g0.shape
    if dtype == np.float64:
        W, b = obj.unpack(w)
        assert f == pytest.approx(_reference_value(model, X, y, W, b if fit_intercept else 0.0,
                                                   0.1), rel=1e-12)
        np.testing.assert_allclose(g, _fd_grad(lambda v: obj.value(v), w, 1e-6), rtol=1e-6,
                                   atol=1e-7)
    small = _obj(model, fit_intercept, dtype=dtype, n=losses.FUSED_ROW_BLOCK, d=6)
    ws = rng.normal(size=small.n_params).astype(dtype)
    fs, gs = small.value_grad(ws)
    fs0, gs0 = small.value_grad_from_margins(ws, small.margins(ws))
    assert fs == fs0 and np.array_equal(gs, gs0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_class_blocks_built_over_threads_have_the_bits_of_one(fit_intercept, monkeypatch):
    """The softmax class-block preconditioner builds each class on one BLAS thread and spreads the
    classes over the BLAS thread budget: with 3 workers, M⁻¹r is bit for bit the one-worker
    result, and it inverts the class-diagonal blocks of the dense Hessian (λ = 0.1, P = I)."""
    import concurrent.futures

    import pipeline.core.objectives as losses

    n, d, c = losses.HVP_ROW_BLOCK + 700, 6, 5  # two gather chunks per class
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(n, d)), rng.integers(0, c, size=n)
    obj = make_objective("softmax", X, y, l2=0.1, n_classes=c, fit_intercept=fit_intercept)
    w, r = 0.3 * rng.normal(size=obj.n_params), rng.normal(size=obj.n_params)
    op = obj.hess_operator(w)
    monkeypatch.setattr(losses, "_blas_threads", lambda: 1)
    one = op.class_block_solver(rel_threshold=0.0)(r)
    seen: list[int] = []

    class Pool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            seen.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(losses, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(losses, "_blas_threads", lambda: 3)
    three = op.class_block_solver(rel_threshold=0.0)(r)
    assert seen == [3] and np.array_equal(one, three)
    H = obj.hessian(w)
    k = obj.n_rows
    R = r.reshape(k, c)
    blocks = [H.reshape(k, c, k, c)[:, j, :, j] for j in range(c)]
    # its class-mean-free part is Π M⁻¹ Π r (M_k the dense Hessian's class-diagonal blocks)
    Pi = R - R.mean(axis=1, keepdims=True)
    ref = np.stack([np.linalg.solve(B, Pi[:, j]) for j, B in enumerate(blocks)], axis=1)
    ref -= ref.mean(axis=1, keepdims=True)
    got = three.reshape(k, c) - three.reshape(k, c).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("model", ["logistic", "logistic_mse", "softmax"])
def test_lipschitz_bound_of_a_large_x_without_the_augmented_copy(model, monkeypatch):
    """Past FUSED_ROW_BLOCK rows the bound's second moment (1/n) X̃ᵀX̃ is built from XᵀX, Xᵀ1 and n
    (no [X, 1] copy): the same L as the eigenvalues of the explicit X̃ᵀX̃ (and of b X̃ᵀX̃/n + λP
    for a penalty matrix) to rounding; small objectives keep the explicit product."""
    import pipeline.core.objectives as losses

    n = losses.FUSED_ROW_BLOCK + 300
    X, y = _data(model, n=n, d=7)
    X[:, 0] += 3.0  # a large mean: the intercept's row and column matter
    kw = {"n_classes": 3 if model == "softmax" else None, "l2": 0.1}
    A = np.random.default_rng(2).normal(size=(7, 7))
    for P in (None, A @ A.T):  # (linear regression's L is its exact Hessian's, not this bound)
        obj = make_objective(model, X, y, penalty=P, **kw)
        Xt = np.hstack([X, np.ones((n, 1))])
        C = obj.curvature_bound * Xt.T @ Xt / n
        if P is not None:
            C[:7, :7] += 0.1 * P
        expected = np.linalg.eigvalsh(C)[-1] + (0.1 if P is None else 0.0)
        with monkeypatch.context() as m:
            m.setattr(obj, "_Xtilde_full", lambda: pytest.fail("X̃ = [X, 1] copied"))
            assert obj.lipschitz() == pytest.approx(expected, rel=1e-12)
    small = make_objective(model, X[:200], y[:200], **kw)
    Xt = np.hstack([X[:200], np.ones((200, 1))])
    assert small.input_second_moment_max() == losses.largest_eigenvalue(Xt.T @ Xt / 200)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_convex_models_have_psd_hessians_and_sound_lipschitz_bound(model):
    obj = _obj(model)
    rng = np.random.default_rng(5)
    L = obj.lipschitz()
    for _ in range(3):
        ev = np.linalg.eigvalsh(obj.hessian(3 * rng.normal(size=obj.n_params)))
        assert ev[0] >= -1e-12
        assert ev[-1] <= L * (1 + 1e-10)
    if model == "linear":  # constant Hessian: the bound is attained
        assert L == pytest.approx(
            np.linalg.eigvalsh(obj.hessian(np.zeros(obj.n_params)))[-1], rel=1e-10
        )
        assert obj.lipschitz(method="lanczos") == pytest.approx(L, rel=1e-6)


def test_logistic_mse_hessian_is_indefinite_for_confident_mistakes():
    """Non-convex: a weight vector that is confidently wrong gives a negative curvature
    direction."""
    X, y = _data("logistic")
    obj = make_objective("logistic_mse", X, y, l2=0.0, fit_intercept=True)
    w_good = make_objective("logistic", X, y, l2=1e-2).init("zeros")
    # steepest 'wrong' direction: flip the sign of a classifier that fits the data
    from pipeline.core.solvers import minimize

    fit = minimize(make_objective("logistic", X, y, l2=1e-2), w_good, "newton", tol=1e-10)
    ev = np.linalg.eigvalsh(obj.hessian(-3.0 * fit.w))
    assert ev[0] < -1e-6
    # and the curvature bound used for lr = 1/L really bounds |ℓ''|
    s = expit(np.linspace(-30, 30, 200001))
    ell2 = np.maximum(np.abs(s**2 * (1 - s) * (2 - 3 * s)), np.abs((1 - s) ** 2 * s * (3 * s - 1)))
    assert ell2.max() <= MSE_LOGISTIC_CURVATURE * (1 + 1e-9)
    assert ell2.max() >= MSE_LOGISTIC_CURVATURE * (1 - 1e-6)


def test_softmax_stable_for_logits_of_plus_minus_1000():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([0, 1, 2])
    obj = make_objective("softmax", X, y, l2=0.0, fit_intercept=False, n_classes=3)
    W = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]])
    w = obj.pack(W)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        f, g = obj.value_grad(w)
        hv = obj.hvp(w, np.ones(obj.n_params))
    # example 0: z = (1000, -1000, 0), class 0 → loss ≈ e^-1000 ≈ 0; example 1 likewise;
    # example 2: z = (0, 0, 0) → log 3
    assert f == pytest.approx(np.log(3.0) / 3.0, rel=1e-12)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(hv))
    P = obj.predict_proba(X, w)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    # a confidently wrong example: loss = 2000 exactly (lse = 1000, z_y = −1000)
    obj2 = make_objective("softmax", X[:1], np.array([1]), l2=0.0, fit_intercept=False, n_classes=3)
    assert obj2.value(w) == pytest.approx(2000.0, rel=1e-14)


def test_logistic_stable_for_large_margins():
    X = np.array([[1.0], [1.0]])
    y = np.array([0, 1])
    obj = make_objective("logistic", X, y, l2=0.0, fit_intercept=False)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        f, g = obj.value_grad(np.array([800.0]))
    assert f == pytest.approx(400.0, rel=1e-12)  # (800 + 0)/2
    assert np.all(np.isfinite(g))


def test_bias_is_not_penalized_and_layout_roundtrips():
    obj = _obj("softmax", l2=0.5)
    rng = np.random.default_rng(6)
    w = rng.normal(size=obj.n_params)
    W, b = obj.unpack(w)
    assert W.shape == (obj.d, 3) and b.shape == (3,)
    np.testing.assert_array_equal(obj.pack(W, b), w)
    obj0 = _obj("softmax", l2=0.0)
    assert obj.value(w) - obj0.value(w) == pytest.approx(0.25 * np.sum(W**2), rel=1e-12)
    gb = obj.grad(w).reshape(-1, 3)[-1]
    np.testing.assert_allclose(gb, obj0.grad(w).reshape(-1, 3)[-1], rtol=0, atol=1e-15)
    lin = _obj("linear")
    wl = rng.normal(size=lin.n_params)
    Wl, bl = lin.unpack(wl)
    assert Wl.shape == (lin.d,) and isinstance(bl, float) and bl == wl[-1]


def test_gauge_direction_of_softmax_bias_is_flat():
    obj = _obj("softmax")
    U = obj.gauge_directions()
    assert U.shape == (1, obj.n_params)
    w = np.random.default_rng(7).normal(size=obj.n_params)
    assert obj.value(w + 5.0 * U[0]) == pytest.approx(obj.value(w), rel=1e-13)
    np.testing.assert_allclose(obj.hvp(w, U[0]), 0.0, atol=1e-14)


def test_predict_and_init():
    obj = _obj("softmax")
    X, _ = _data("softmax")
    rng = np.random.default_rng(8)
    w = rng.normal(size=obj.n_params)
    Z = obj.predict_margins(X, w)
    np.testing.assert_array_equal(obj.predict(X, w), Z.argmax(axis=1))
    assert np.all(obj.init("zeros") == 0)
    ws = obj.init("saturated", scale=2.0, rng=0)
    assert np.median(np.abs(obj.margins(ws))) == pytest.approx(20.0, rel=1e-10)
    lg = _obj("logistic")
    wl = lg.init("random", rng=1)
    np.testing.assert_array_equal(
        lg.predict(X, wl), (lg.predict_margins(X, wl)[:, 0] > 0).astype(int)
    )


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda: make_objective("ridge", np.ones((3, 2)), np.ones(3)), ConfigError),
        (lambda: make_objective("logistic", np.ones((3, 2)), np.array([0, 1, 2])), DataError),
        (
            lambda: make_objective("softmax", np.ones((3, 2)), np.array([0, 1, 5]), n_classes=3),
            DataError,
        ),
        (lambda: make_objective("linear", np.array([[np.nan, 1.0]]), np.ones(1)), DataError),
        (lambda: make_objective("linear", np.ones((3, 2)), np.ones(4)), DataError),
        (lambda: make_objective("linear", np.ones((3, 2)), np.ones(3), l2=-1.0), ConfigError),
        (
            lambda: make_objective("linear", np.ones((3, 2)), np.ones(3), dtype="float16"),
            ConfigError,
        ),
        (
            lambda: make_objective("linear", np.ones((3, 2)), np.ones(3)).value(np.ones(5)),
            ConfigError,
        ),
        (lambda: make_objective("linear", np.ones(3), np.ones(3)), DataError),
    ],
)
def test_bad_input_raises_one_line_curvlab_error(call, err):
    with pytest.raises(err) as exc:
        call()
    assert "\n" not in str(exc.value) and len(str(exc.value)) > 10


def test_dense_hessian_refused_when_too_big(monkeypatch):
    import pipeline.core.objectives as L

    monkeypatch.setattr(L, "DENSE_HESSIAN_MAX_PARAMS", 5)
    obj = _obj("softmax")
    with pytest.raises(NumericalError, match="newton_cg"):
        obj.hessian(np.zeros(obj.n_params))


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_objective_keeps_a_callers_x_with_zero_columns_when_penalized(model):
    """copy_X=True (the caller keeps X) with λ > 0: X is used as it is, all-zero columns and all,
    never copied only to drop them; the same f, ∇f and HVP as the compacted objective to rounding,
    and those columns' weights see only the penalty. Without a penalty they are dropped (their
    directions would be flat), in a copy."""
    rng = np.random.default_rng(4)
    n = 3000
    X = rng.standard_normal((n, 7))
    X[:, [2, 5]] = 0.0
    y = {"linear": rng.standard_normal(n), "logistic": (X[:, 1] > 0).astype(float),
         "softmax": rng.integers(0, 3, n)}[model]
    c = 3 if model == "softmax" else 1
    kw = {"l2": 1e-2, "n_classes": c if model == "softmax" else None}
    obj = make_objective(model, X, y, **kw)
    assert obj._X is X
    compact = make_objective(model, np.asfortranarray(X), y, **kw)
    assert compact._X.shape == (n, 5) and not np.shares_memory(compact._X, X)
    w = rng.standard_normal(obj.n_params) * 0.3
    (f, g), (f_c, g_c) = obj.value_grad(w), compact.value_grad(w)
    assert f == pytest.approx(f_c, rel=1e-13)
    np.testing.assert_allclose(g, g_c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(obj.hvp(w, g), compact.hvp(w, g), rtol=1e-6, atol=1e-9)
    W, Gz = w.reshape(-1, c)[[2, 5]], g.reshape(-1, c)[[2, 5]]
    np.testing.assert_allclose(Gz, 1e-2 * W, rtol=1e-12, atol=0)
    free = make_objective(model, X, y, **{**kw, "l2": 0.0})
    assert free._X.shape == (n, 5)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_objective_takes_over_x_in_place_with_the_same_bits(model):
    """copy_X=False squeezes the all-zero columns out of X's own buffer (no second copy of X):
    the objective computes exactly what one built on a copy does, and its training predictions
    are those of predict on the original X."""
    rng = np.random.default_rng(3)
    n = 5000  # more than one 2048-row block
    X = rng.standard_normal((n, 9))
    X[:, [0, 4, 8]] = 0.0  # constant features, dropped from the products
    y = {"linear": rng.standard_normal(n), "logistic": (X[:, 1] > 0).astype(float),
         "softmax": rng.integers(0, 3, n)}[model]
    kw = {"l2": 1e-2, "n_classes": 3 if model == "softmax" else None}
    ref = make_objective(model, np.asfortranarray(X), y, **kw)  # copied: Fortran order
    assert ref._X.shape == (n, 6)
    X_given = X.copy()
    obj = make_objective(model, X_given, y, copy_X=False, **kw)
    assert np.shares_memory(obj._X, X_given) and obj._X.shape == (n, 6)
    w = rng.standard_normal(obj.n_params) * 0.3
    f, g = obj.value_grad(w)
    f_ref, g_ref = ref.value_grad(w)
    assert f == f_ref and np.array_equal(g, g_ref)
    assert np.array_equal(obj.hvp(w, g), ref.hvp(w, g))
    np.testing.assert_allclose(obj.predict_train(w), ref.predict(X, w), rtol=1e-12, atol=1e-12)
    # a view (not the array's own data) or another dtype is copied, never overwritten
    view = X[:, :]
    before = X.copy()
    make_objective(model, view, y, copy_X=False, **kw)
    make_objective(model, X.astype(np.float32), y, copy_X=False, **kw)
    assert np.array_equal(X, before)
