"""The objectives on any array-API library: numpy, array_api_strict (CPU, strict: a numpy-only
call fails) and torch on the CPU when it is installed. Every quantity agrees with numpy's (values
to 1e-12), gradients and Hessian-vector products agree with finite differences, and every array
returned is of the input's namespace."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import pytest

from pipeline.core import linalg, objectives
from pipeline.core.errors import ConfigError, DataError, NumericalError
from pipeline.core.objectives import make_objective

pytestmark = pytest.mark.unit

MODELS = ("linear", "logistic", "logistic_mse", "softmax")
VARIANTS = ("plain", "zero_column", "penalty")
N, D, C = 40, 5, 3


class Backend:
    """An array library under test: arrays to it and back, and its namespace as the objectives
    report it."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "numpy":
            self.lib: Any = np
        elif name == "array_api_strict":
            self.lib = pytest.importorskip("array_api_strict")
        else:
            self.lib = pytest.importorskip("torch")
        self.xp = array_api_compat.array_namespace(self.to(np.zeros(1)))

    def to(self, a: np.ndarray) -> Any:
        """A numpy array as an array of this library (same dtype)."""
        if self.name == "numpy":
            return np.array(a)
        return self.lib.asarray(np.ascontiguousarray(a))

    def assert_mine(self, a: Any) -> None:
        """``a`` is an array of this library."""
        assert array_api_compat.array_namespace(a) is self.xp


@pytest.fixture(params=["numpy", "array_api_strict", "torch"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


def host(a: Any) -> np.ndarray:
    """A numpy copy of an array of any library."""
    return np.asarray(objectives.to_numpy(a), dtype=np.float64)


def problem(model: str, variant: str, intercept: bool, l2: float = 1e-2
            ) -> tuple[dict[str, Any], np.ndarray]:
    """Arguments of make_objective for a small random problem (numpy arrays) and a point w."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, D))
    if variant != "plain":
        X[:, 2] = 0.0  # an all-zero feature (its weight sees the penalty only)
    z = X @ rng.standard_normal(D)
    if model == "linear":
        y: np.ndarray = z + 0.1 * rng.standard_normal(N)
    elif model == "softmax":
        y = rng.integers(0, C, N)
    else:
        y = (z + 0.5 * rng.standard_normal(N) > 0).astype(np.float64)
    P = None
    if variant == "penalty":
        A = rng.standard_normal((D, D))
        P = A @ A.T + 0.1 * np.eye(D)
    args = dict(model=model, X=X, y=y, l2=l2, fit_intercept=intercept, penalty=P,
                n_classes=C if model == "softmax" else None)
    c = C if model == "softmax" else 1
    w = 0.3 * rng.standard_normal((D + int(intercept)) * c)
    return args, w


def build(bk: Backend, args: dict[str, Any]) -> Any:
    """The objective of ``args`` with X, y and P as arrays of ``bk``."""
    conv = {k: (bk.to(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    model = conv.pop("model")
    return make_objective(model, conv.pop("X"), conv.pop("y"), **conv)


CASES = [(m, v, i) for m in MODELS for v in VARIANTS for i in (True, False)]


@pytest.fixture(params=CASES, ids=[f"{m}-{v}-{'b' if i else 'nob'}" for m, v, i in CASES])
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], np.ndarray]:
    return problem(*request.param)


def test_value_and_gradient_match_numpy_and_finite_differences(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    assert obj.xp is backend.xp
    f, g = obj.value_grad(backend.to(w))
    f0, g0 = ref.value_grad(w)
    assert isinstance(f, float)
    backend.assert_mine(g)
    assert f == pytest.approx(f0, rel=1e-12)
    assert obj.value(backend.to(w)) == pytest.approx(f0, rel=1e-12)
    np.testing.assert_allclose(host(g), g0, rtol=1e-11, atol=1e-13)
    rng = np.random.default_rng(1)
    for _ in range(3):
        u, h = rng.standard_normal(w.size), 1e-6
        fd = (obj.value(backend.to(w + h * u)) - obj.value(backend.to(w - h * u))) / (2 * h)
        assert fd == pytest.approx(float(host(g) @ u), rel=1e-6, abs=1e-8)


def test_hvp_matches_finite_differences_dense_hessian_and_numpy(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    wx = backend.to(w)
    H = obj.hessian(wx)
    backend.assert_mine(H)
    np.testing.assert_allclose(host(H), ref.hessian(w), rtol=1e-11, atol=1e-13)
    rng = np.random.default_rng(2)
    op = obj.hess_operator(wx)
    for _ in range(2):
        v, h = rng.standard_normal(w.size), 1e-5
        hv = op.matvec(backend.to(v))
        backend.assert_mine(hv)
        g_plus, g_minus = obj.grad(backend.to(w + h * v)), obj.grad(backend.to(w - h * v))
        fd = (host(g_plus) - host(g_minus)) / (2 * h)
        np.testing.assert_allclose(host(hv), fd, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(host(hv), host(H) @ v, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(host(obj.hvp(wx, backend.to(v))), ref.hvp(w, v),
                                   rtol=1e-10, atol=1e-12)
        low = obj.hess_operator(wx, precision="float32").matvec(backend.to(v))
        backend.assert_mine(low)
        assert low.dtype == backend.xp.float64
        np.testing.assert_allclose(host(low), host(hv), rtol=1e-4,
                                   atol=1e-5 * np.abs(host(hv)).max())


def test_margins_and_value_grad_from_margins(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    wx = backend.to(w)
    Z = obj.margins(wx)
    backend.assert_mine(Z)
    np.testing.assert_allclose(host(Z), ref.margins(w), rtol=1e-12, atol=1e-14)
    f, g = obj.value_grad_from_margins(wx, Z)
    f1, g1 = obj.value_grad(wx)
    assert f == f1 and obj.value_from_margins(wx, Z) == pytest.approx(f1, rel=1e-14)
    np.testing.assert_array_equal(host(g), host(g1))
    rows = np.array([0, 3, 5, 11, 39])
    gb = obj.batch_grad(wx, rows)
    backend.assert_mine(gb)
    np.testing.assert_allclose(host(gb), ref.batch_grad(w, rows), rtol=1e-11, atol=1e-13)


def test_diag_hessian_is_the_diagonal_of_the_dense_hessian(backend: Backend, case) -> None:
    args, w = case
    obj = build(backend, args)
    wx = backend.to(w)
    dg = obj.hess_operator(wx).diagonal()
    backend.assert_mine(dg)
    np.testing.assert_allclose(host(dg), np.diag(host(obj.hessian(wx))), rtol=1e-10, atol=1e-13)
    low = obj.hess_operator(wx, precision="float32").diagonal()
    np.testing.assert_allclose(host(low), host(dg), rtol=1e-5)


def _class_blocks(H: np.ndarray, n_rows: int, c: int) -> np.ndarray:
    """The Hessian without the coupling between classes: H[(j,k),(j',l)] δ_kl."""
    H4 = H.reshape(n_rows, c, n_rows, c)
    return (H4 * np.eye(c)[None, :, None, :]).reshape(H.shape)


def _shift_split(M: np.ndarray, r: np.ndarray, obj: Any) -> np.ndarray:
    """Π M⁻¹ Π r + (I − Π) r / λ (0 on the unpenalized bias row), Π: each row less its mean over
    the classes — by a dense solve."""
    R = r.reshape(obj.n_rows, obj.c)
    mean = R.mean(axis=1, keepdims=True)
    Z = np.linalg.solve(M, (R - mean).ravel()).reshape(R.shape)
    gamma = np.full((obj.n_rows, 1), 1.0 / obj.l2)
    gamma[obj.d:] = 0.0
    return (Z - Z.mean(axis=1, keepdims=True) + mean * gamma).ravel()


def test_class_block_solver_inverts_the_class_blocks(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    wx = backend.to(w)
    solve = obj.hess_operator(wx).class_block_solver(rel_threshold=0.0)
    solve0 = ref.hess_operator(w).class_block_solver(rel_threshold=0.0)
    v = np.random.default_rng(3).standard_normal(w.size)
    out = solve(backend.to(v))
    backend.assert_mine(out)
    np.testing.assert_allclose(host(out), solve0(v), rtol=1e-8, atol=1e-10)
    if args["penalty"] is None and args["model"] != "logistic_mse":
        # M the class-diagonal blocks of the Hessian (logistic_mse's curvature can be negative,
        # which the preconditioner clips at 0); softmax: M⁻¹ split along the class shifts
        M = _class_blocks(host(obj.hessian(wx)), obj.n_rows, obj.c)
        if obj.class_shift_invariant:
            np.testing.assert_allclose(host(out), _shift_split(M, v, obj), rtol=1e-7, atol=1e-7)
        else:
            np.testing.assert_allclose(host(solve(backend.to(M @ v))), v, rtol=1e-7, atol=1e-7)
    sub = obj.hess_operator(wx).class_block_solver(max_rows=20)(backend.to(v))
    np.testing.assert_allclose(host(sub), ref.hess_operator(w).class_block_solver(max_rows=20)(v),
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_softmax_preconditioner_is_exact_on_the_class_shifts(backend: Backend, variant) -> None:
    """Along W + V1ᵀ (every class shifted alike) the softmax Hessian is the penalty alone,
    ∇²f u = λ (P ⊗ I) u, and maps the shifts to themselves; the split class-block preconditioner
    inverts it there (exactly for P = I, P's diagonal otherwise) and keeps every other direction
    off the shifts: what the data adds has rows summing to 0 over the classes."""
    args, w = problem("softmax", variant, True)
    obj = build(backend, args)
    wx = backend.to(w)
    rng = np.random.default_rng(5)
    U = np.zeros((obj.n_rows, obj.c))
    U[: obj.d] = rng.standard_normal((obj.d, 1))  # V 1ᵀ on the weights, bias row 0
    H = host(obj.hessian(wx))
    Hu = H @ U.ravel()
    P = np.eye(obj.d) if args["penalty"] is None else np.asarray(args["penalty"])
    np.testing.assert_allclose(Hu.reshape(U.shape)[: obj.d], obj.l2 * P @ U[: obj.d], rtol=1e-10,
                               atol=1e-12)
    solve = obj.hess_operator(wx).class_block_solver()
    got = host(solve(backend.to(Hu))).reshape(U.shape)
    if args["penalty"] is None:
        np.testing.assert_allclose(got, U, rtol=1e-10, atol=1e-12)
    else:  # λ P u ↦ P u / diag P: on the shifts still
        np.testing.assert_allclose(got - got.mean(axis=1, keepdims=True), 0.0, atol=1e-10)
    r = rng.standard_normal(obj.n_params)
    r.reshape(U.shape)[:] -= r.reshape(U.shape).mean(axis=1, keepdims=True)  # off the shifts
    z = host(solve(backend.to(r))).reshape(U.shape)
    np.testing.assert_allclose(z.sum(axis=1), 0.0, atol=1e-10)


def test_ridged_inverse_raises_the_same_error_on_every_backend(backend: Backend) -> None:
    G = -np.eye(3)  # negative definite: no ridge of the ladder makes it positive definite
    with pytest.raises(NumericalError) as np_err:
        objectives._ridged_inverse(G.copy())
    with pytest.raises(NumericalError) as err:
        objectives._ridged_inverse_xp(backend.to(G))
    assert str(err.value) == str(np_err.value)
    S = np.array([[2.0, 0.5], [0.5, 1.0]])
    inv = objectives._ridged_inverse_xp(backend.to(S))
    backend.assert_mine(inv)
    np.testing.assert_allclose(host(inv), np.linalg.inv(S), rtol=1e-8)


def test_predictions_match_numpy(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    Xn = np.random.default_rng(4).standard_normal((7, D))
    pred = obj.predict(backend.to(Xn), backend.to(w))
    backend.assert_mine(pred)
    np.testing.assert_allclose(host(pred), ref.predict(Xn, w), rtol=1e-12, atol=1e-14)
    if hasattr(ref, "predict_proba"):
        proba = obj.predict_proba(backend.to(Xn), backend.to(w))
        backend.assert_mine(proba)
        np.testing.assert_allclose(host(proba), ref.predict_proba(Xn, w), rtol=1e-12, atol=1e-15)
    loss = obj.predict_loss(backend.to(Xn), backend.to(np.asarray(args["y"][:7])), backend.to(w))
    assert loss == pytest.approx(ref.predict_loss(Xn, args["y"][:7], w), rel=1e-12)


def test_lipschitz_bound_and_lanczos_match_numpy(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    assert obj.lipschitz(method="bound") == pytest.approx(ref.lipschitz(method="bound"), rel=1e-10)
    lz = obj.lipschitz(backend.to(w), method="lanczos")
    assert lz == pytest.approx(ref.lipschitz(w, method="lanczos"), rel=1e-6)
    # Lanczos gives λ_max of the Hessian at w
    assert lz == pytest.approx(np.linalg.eigvalsh(host(obj.hessian(backend.to(w))))[-1], rel=1e-6)
    assert obj.lipschitz_max() == pytest.approx(ref.lipschitz_max(), rel=1e-12)


def test_large_problem_operators_equal_their_dense_matrices(backend: Backend, case) -> None:
    """The matrix-free products that lipschitz uses past 2000 rows (the bound with a penalty
    matrix only), on a small problem."""
    args, _ = case
    obj = build(backend, args)
    b = obj.curvature_bound
    Xt = host(obj._Xtilde_full())
    C = Xt.T @ Xt / obj.n
    v = np.random.default_rng(5).standard_normal(C.shape[0])
    np.testing.assert_allclose(host(objectives._second_moment_mv(obj)(backend.to(v))), C @ v,
                               rtol=1e-12, atol=1e-13)
    if obj.P is None:
        return
    M = np.zeros((obj.n_rows, obj.n_rows))
    rows = obj._scatter_rows()
    M[np.ix_(rows, rows)] = b * C
    M[: obj.d, : obj.d] += obj.l2 * host(obj.P)
    u = np.random.default_rng(6).standard_normal(obj.n_rows)
    out = objectives._bound_mv(obj)(backend.to(u))
    backend.assert_mine(out)
    np.testing.assert_allclose(host(out), M @ u, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_closed_form_of_linear_regression_matches_numpy(backend: Backend, variant: str,
                                                        l2: float) -> None:
    args, _ = problem("linear", variant, True, l2=l2)
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    w = obj.closed_form()
    backend.assert_mine(w)
    np.testing.assert_allclose(host(w), ref.closed_form(), rtol=1e-10, atol=1e-12)
    assert np.abs(host(obj.grad(w))).max() < 1e-10  # the optimum


def test_layout_init_gauge_and_penalty_matrix(backend: Backend, case) -> None:
    args, w = case
    ref, obj = build(Backend("numpy"), args), build(backend, args)
    W, b = obj.unpack(backend.to(w))
    W0, b0 = ref.unpack(w)
    np.testing.assert_allclose(host(W), W0)
    assert float(np.asarray(host(b)).ravel()[0]) == pytest.approx(float(np.ravel(b0)[0]))
    packed = obj.pack(W, b)
    backend.assert_mine(packed)
    np.testing.assert_array_equal(host(packed), w)
    for kind in ("zeros", "random", "saturated"):
        w1 = obj.init(kind, rng=3)
        backend.assert_mine(w1)
        np.testing.assert_allclose(host(w1), ref.init(kind, rng=3), rtol=1e-12)
    gauge = obj.gauge_directions()
    backend.assert_mine(gauge)
    np.testing.assert_array_equal(host(gauge), ref.gauge_directions())
    P = obj.penalty_matrix()
    backend.assert_mine(P)
    np.testing.assert_allclose(host(P), ref.penalty_matrix(), rtol=1e-15)


def test_float32_objective_and_margins_helpers(backend: Backend) -> None:
    args, w = problem("softmax", "zero_column", True)
    obj = build(backend, dict(args, dtype="float32"))
    ref = build(Backend("numpy"), args)
    f, g = obj.value_grad(backend.to(w))
    assert g.dtype == backend.xp.float32
    assert f == pytest.approx(ref.value(w), rel=1e-5)
    Z = backend.to(np.random.default_rng(8).standard_normal((6, C)) * 30)
    Zn = host(Z)
    lse = np.log(np.exp(Zn - Zn.max(1, keepdims=True)).sum(1)) + Zn.max(1)
    np.testing.assert_allclose(host(objectives.logsumexp_rows(Z)), lse, rtol=1e-14)
    np.testing.assert_allclose(host(objectives.softmax_rows(Z)), np.exp(Zn - lse[:, None]),
                               rtol=1e-12, atol=1e-300)


BAD_INPUTS = [
    ("logistic", np.array([[0.0, np.nan]] * 3), np.array([0.0, 1.0, 1.0])),
    ("logistic", np.ones((3, 2)), np.array([0.0, 2.0, 1.0])),
    ("logistic", np.ones((3, 2)), np.array([0.0, 1.0])),
    ("linear", np.ones((3, 2)), np.array([0.0, np.inf, 1.0])),
    ("softmax", np.ones((3, 2)), np.array([0, -1, 1])),
    ("softmax", np.ones((3, 2)), np.array([0.0, 1.5, 1.0])),
    ("softmax", np.ones((3, 2)), np.array([0, 0, 0])),
    ("linear", np.ones((3,)), np.array([0.0, 1.0, 1.0])),
]


@pytest.mark.parametrize("model,X,y", BAD_INPUTS)
def test_input_checks_say_the_same_on_every_backend(backend: Backend, model: str, X: np.ndarray,
                                                    y: np.ndarray) -> None:
    with pytest.raises((DataError, ConfigError)) as np_err:
        make_objective(model, X, y)
    with pytest.raises(type(np_err.value)) as err:
        make_objective(model, backend.to(X), backend.to(y))
    assert str(err.value) == str(np_err.value)


def test_bad_parameter_vector_and_penalty_shape(backend: Backend) -> None:
    args, w = problem("logistic", "plain", True)
    obj = build(backend, args)
    with pytest.raises(ConfigError, match=r"w has shape \(3,\), expected \(6,\)"):
        obj.value(backend.to(np.zeros(3)))
    with pytest.raises(DataError, match=r"penalty matrix has shape \(2, 2\), expected \(5, 5\)"):
        build(backend, dict(args, penalty=np.eye(2)))


def test_eigenvalue_helpers_live_in_linalg_and_are_reexported() -> None:
    assert objectives.largest_eigenvalue is linalg.largest_eigenvalue
    assert objectives.top_eigenvalue is linalg.top_eigenvalue
