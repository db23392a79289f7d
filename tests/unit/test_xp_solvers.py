"""Every optimizer on objectives of any array API library: the same path and optimum on
array_api_strict (and torch on the CPU, where installed) as on numpy, the result in the
objective's namespace, divergence detected on each.

The objectives below are written only with the array API namespace of their data (``xp``), so a
numpy-only call anywhere in a solver fails on array_api_strict."""

from __future__ import annotations

from typing import Any

import array_api_compat
import array_api_strict
import numpy as np
import pytest

from pipeline.core.backend import namespace, to_numpy
from pipeline.core.errors import ConfigError
from pipeline.core.linalg import SingularMatrixError, cholesky_solve
from pipeline.core.solvers import METHODS, damped_newton_step, minimize, pcg

BACKENDS = ["numpy", "array_api_strict", "torch"]
SEED = 7


def _namespace(backend: str) -> Any:
    if backend == "numpy":
        return namespace(np.zeros(0))
    if backend == "array_api_strict":
        return array_api_strict
    torch = pytest.importorskip("torch")
    return namespace(torch.zeros(0))


def _asarray(xp: Any, a: np.ndarray) -> Any:
    if array_api_compat.is_numpy_namespace(xp):
        return np.array(a)
    return xp.asarray(np.ascontiguousarray(a), dtype=xp.float64)


def _data(n: int = 60, d: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((n, d))
    w_true = rng.standard_normal(d)
    labels = (X @ w_true + 0.5 * rng.standard_normal(n) > 0).astype(np.float64)
    targets = X @ w_true + 0.1 * rng.standard_normal(n)
    return X, labels, targets


def _col(xp: Any, v: Any) -> Any:
    return xp.reshape(v, (-1, 1))


class XpLogistic:
    """f(w) = (1/n) Σ log(1 + e^{z_i}) − y_i z_i + (λ/2)‖w‖², z = Xw, in X's namespace."""

    def __init__(self, X: Any, y: Any, l2: float, xp: Any) -> None:
        self.X, self.y, self.l2, self.xp = X, y, l2, xp
        self.n, self.n_params = X.shape
        self.dtype = np.float64

    def _p(self, z: Any) -> Any:
        return 1.0 / (1.0 + self.xp.exp(-z))

    def _grad(self, w: Any, X: Any, y: Any, z: Any) -> Any:
        return self.xp.matmul((self._p(z) - y), X) / X.shape[0] + self.l2 * w

    def value(self, w: Any) -> float:
        xp, z = self.xp, self.X @ w
        return float(xp.mean(xp.logaddexp(xp.zeros_like(z), z) - self.y * z)
                     + 0.5 * self.l2 * (w @ w))

    def value_grad(self, w: Any) -> tuple[float, Any]:
        return self.value(w), self._grad(w, self.X, self.y, self.X @ w)

    def hvp(self, w: Any, v: Any) -> Any:
        p = self._p(self.X @ w)
        return ((p * (1.0 - p) * (self.X @ v)) @ self.X) / self.n + self.l2 * v

    def hessian(self, w: Any) -> Any:
        xp, p = self.xp, self._p(self.X @ w)
        H = self.X.T @ (self.X * _col(xp, p * (1.0 - p))) / self.n
        return H + self.l2 * xp.eye(self.n_params, dtype=xp.float64)

    def lipschitz(self) -> float:
        return float(self.xp.sum(self.X * self.X)) / (4.0 * self.n) + self.l2

    def strong_convexity(self) -> float:
        return self.l2

    def lipschitz_max(self) -> float:
        return float(self.xp.max(self.xp.sum(self.X * self.X, axis=1))) / 4.0 + self.l2

    def batch_grad(self, w: Any, rows: Any) -> Any:
        Xb = self.xp.take(self.X, rows, axis=0)
        return self._grad(w, Xb, self.xp.take(self.y, rows), Xb @ w)


class _Operator:
    """v ↦ ∇²f(w)v of a linear model from its curvature, in float32 when asked."""

    def __init__(self, obj: XpLinearLogistic, curv: Any, precision: str | None) -> None:
        xp = obj.xp
        self.dt = xp.float32 if precision == "float32" else xp.float64
        self.X, self.curv = xp.astype(obj.X, self.dt), xp.astype(curv, self.dt)
        self.obj, self.xp = obj, xp

    def matvec(self, v: Any) -> Any:
        xp, n = self.xp, self.obj.n
        Hv = ((self.curv * (self.X @ xp.astype(v, self.dt))) @ self.X) / n
        return xp.astype(Hv, v.dtype) + self.obj.l2 * v

    def diagonal(self) -> Any:
        return (self.curv @ (self.X * self.X)) / self.obj.n + self.obj.l2


class XpLinearLogistic(XpLogistic):
    """The same f as a linear model: f and ∇f from the margins Z = Xw, the Hessian an operator."""

    n_rows = 5

    def margins(self, w: Any) -> Any:
        return self.X @ w

    def value_from_margins(self, w: Any, Z: Any) -> float:
        xp = self.xp
        return float(xp.mean(xp.logaddexp(xp.zeros_like(Z), Z) - self.y * Z)
                     + 0.5 * self.l2 * (w @ w))

    def value_grad_from_margins(self, w: Any, Z: Any) -> tuple[float, Any]:
        return self.value_from_margins(w, Z), self._grad(w, self.X, self.y, Z)

    def hess_operator(self, w: Any, Z: Any = None, precision: str | None = None) -> _Operator:
        p = self._p(self.X @ w if Z is None else Z)
        return _Operator(self, p * (1.0 - p), precision)


class XpLeastSquares(XpLogistic):
    """f(w) = (1/2n)‖Xw − y‖² + (λ/2)‖w‖² (a convex quadratic with a closed form)."""

    def _grad(self, w: Any, X: Any, y: Any, z: Any) -> Any:
        return ((z - y) @ X) / X.shape[0] + self.l2 * w

    def value(self, w: Any) -> float:
        r = self.X @ w - self.y
        return float(0.5 * (r @ r) / self.n + 0.5 * self.l2 * (w @ w))

    def hvp(self, w: Any, v: Any) -> Any:
        return ((self.X @ v) @ self.X) / self.n + self.l2 * v

    def hessian(self, w: Any) -> Any:
        xp = self.xp
        return self.X.T @ self.X / self.n + self.l2 * xp.eye(self.n_params, dtype=xp.float64)

    def lipschitz(self) -> float:
        return 4.0 * (super().lipschitz() - self.l2) + self.l2

    def lipschitz_max(self) -> float:
        return 4.0 * (super().lipschitz_max() - self.l2) + self.l2

    def closed_form(self) -> Any:
        return self.xp.linalg.solve(self.hessian(None), (self.y @ self.X) / self.n)


def _objective(kind: str, backend: str, l2: float = 0.1) -> Any:
    xp = _namespace(backend)
    X, labels, targets = _data()
    cls = {"logistic": XpLogistic, "linear_logistic": XpLinearLogistic,
           "least_squares": XpLeastSquares}[kind]
    y = targets if kind == "least_squares" else labels
    return cls(_asarray(xp, X), _asarray(xp, y), l2, xp)


# method → (objective, options, whether it reaches tol)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "gd": ("logistic", {"max_iter": 2000}, True),
    "gd_armijo": ("logistic", {"lr": 5.0, "line_search": True, "max_iter": 2000}, True),
    "heavy_ball": ("logistic", {"max_iter": 2000}, True),
    "nesterov": ("logistic", {"restart": "gradient", "max_iter": 2000}, True),
    "adam": ("logistic", {"lr": 0.05, "max_iter": 300}, False),
    "adagrad": ("logistic", {"lr": 0.5, "max_iter": 300}, False),
    "adam_minibatch": ("logistic", {"lr": 0.01, "batch_size": 16, "epochs": 4}, False),
    "newton": ("logistic", {"max_iter": 50}, True),
    "diag_newton": ("logistic", {"line_search": True, "max_iter": 2000}, True),
    "newton_cg": ("logistic", {"max_iter": 50}, True),
    "newton_cg_linear_auto": ("linear_logistic", {"max_iter": 50}, True),
    "newton_cg_linear_float64": ("linear_logistic", {"hvp_precision": "float64"}, True),
    "newton_cg_jacobi": ("linear_logistic", {"preconditioner": "jacobi"}, True),
    "closed_form": ("least_squares", {}, True),
    "sgd": ("logistic", {"batch_size": 16, "epochs": 4, "momentum": 0.5}, False),
    "lbfgs": ("logistic", {"max_iter": 200}, True),
}
TOL = 1e-10


def _method(case: str) -> str:
    return next(m for m in sorted(METHODS, key=len, reverse=True) if case.startswith(m))


def _run(case: str, backend: str) -> Any:
    kind, opts, _ = CASES[case]
    obj = _objective(kind, backend)
    return minimize(obj, np.zeros(obj.n_params), _method(case), tol=TOL, **opts)


def _optimum(kind: str) -> np.ndarray:
    obj = _objective(kind, "numpy")
    res = minimize(obj, np.zeros(obj.n_params), "newton", tol=1e-13, max_iter=50)
    return np.asarray(res.w)


# torch sums in another order than numpy: where ‖∇f‖ is tiny an Armijo test compares decreases
# below f's rounding, so the last steps may differ (its rows are compared above this ‖∇f‖ only)
ROUNDING_DECIDES = 1e-6
# Newton-CG's float32 Hessian-vector products (hvp_precision 'auto' on a linear model): torch's
# float32 sums move the inexact CG solves by ≈ 1e-8 relative, ‖∇f‖ at the end by up to ≈ 1e-5
FLOAT32_HVP = {"newton_cg_linear_auto", "newton_cg_jacobi"}


def _same_history(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                  exact: bool = True, rtol: float = 1e-10) -> None:
    rows = want["iteration"].shape[0]
    if exact:
        assert got["iteration"].shape == want["iteration"].shape
    else:
        rows = int(np.sum(want["grad_norm"] > ROUNDING_DECIDES))
        assert got["iteration"].shape[0] >= rows
    for key in ("loss", "grad_norm", "step_size", "passes"):
        assert all(isinstance(v, float) for v in got[key].tolist())
        r = rtol * (1e3 if key == "grad_norm" and rtol > 1e-10 else 1.0)
        np.testing.assert_allclose(got[key][:rows], want[key][:rows], rtol=r, atol=1e-13,
                                   err_msg=key)


def test_every_method_has_a_case() -> None:
    assert {_method(c) for c in CASES} == set(METHODS)


@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("case", sorted(CASES))
def test_method_follows_the_numpy_path_on_another_namespace(case: str, backend: str) -> None:
    xp = _namespace(backend)
    got, want = _run(case, backend), _run(case, "numpy")
    assert namespace(got.w) is namespace(xp.zeros(1))
    assert got.w.dtype == xp.float64 and tuple(got.w.shape) == (5,)
    exact = backend == "array_api_strict"  # numpy underneath: the same sums
    assert got.status == want.status
    assert got.n_iter == want.n_iter or not exact
    _same_history(got.history, want.history, exact,
                  1e-10 if exact or case not in FLOAT32_HVP else 1e-7)
    if exact or not CASES[case][2]:
        np.testing.assert_allclose(to_numpy(got.w), want.w, rtol=0, atol=1e-10)
    if CASES[case][2]:
        assert got.status == "converged"
        np.testing.assert_allclose(to_numpy(got.w), _optimum(CASES[case][0]), rtol=0, atol=1e-8)


# method → options with a step far too large for f (L ≈ 5; Adam's and AdaGrad's first step moves
# every coordinate by ≈ lr, so f jumps past the divergence factor 1e12·f₀ at once)
DIVERGING: dict[str, dict[str, Any]] = {
    "gd": {"lr": 1.0e3}, "heavy_ball": {"lr": 1.0e3, "momentum": 0.5},
    "nesterov": {"lr": 1.0e3}, "adam": {"lr": 1.0e7}, "adagrad": {"lr": 1.0e7},
    "diag_newton": {"lr": 1.0e3}, "sgd": {"lr": 1.0e3, "batch_size": 16, "epochs": 20},
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", sorted(DIVERGING))
def test_too_large_a_step_diverges_on_every_namespace(method: str, backend: str) -> None:
    obj = _objective("least_squares", backend)
    got = minimize(obj, np.zeros(5), method, max_iter=200, **DIVERGING[method])
    assert got.status == "diverged"
    assert bool(namespace(got.w).all(namespace(got.w).isfinite(got.w)))
    want = minimize(_objective("least_squares", "numpy"), np.zeros(5), method, max_iter=200,
                    **DIVERGING[method])
    assert got.n_iter == want.n_iter and got.message == want.message
    _same_history(got.history, want.history)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_start_point_is_moved_once_and_checked(backend: str) -> None:
    xp = _namespace(backend)
    obj = _objective("least_squares", backend)
    w0 = xp.ones(5, dtype=xp.float64)
    res = minimize(obj, w0, "gd", max_iter=1)
    assert namespace(res.w) is namespace(w0)
    assert float(xp.max(xp.abs(w0 - 1.0))) == 0.0  # the caller's w0 is not touched
    assert res.history["loss"][0] == pytest.approx(obj.value(w0), rel=1e-15)
    res = minimize(obj, [0.5] * 5, "gd", max_iter=1)  # a host list goes to the namespace too
    assert namespace(res.w) is namespace(w0)
    with pytest.raises(ConfigError, match="w0 has 4 entries, the objective has 5"):
        minimize(obj, np.zeros(4), "gd")
    with pytest.raises(ConfigError, match="NaN or infinite"):
        minimize(obj, np.full(5, np.nan), "gd")


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_damped_newton_step_and_cholesky_on_an_indefinite_matrix(backend: str) -> None:
    xp = _namespace(backend)
    H = np.array([[2.0, 3.0, 0.0], [3.0, 1.0, 0.5], [0.0, 0.5, 4.0]])  # eigenvalues of both signs
    g = np.array([1.0, -2.0, 0.5])
    with pytest.raises(SingularMatrixError):
        cholesky_solve(_asarray(xp, H), _asarray(xp, g))
    s, tau = damped_newton_step(_asarray(xp, H), _asarray(xp, g))
    s_np, tau_np = damped_newton_step(H, g)
    assert tau == tau_np > 0
    np.testing.assert_allclose(to_numpy(s), s_np, rtol=1e-12)
    np.testing.assert_allclose((H + tau * np.eye(3)) @ to_numpy(s), -g, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("diagonal", [False, True])
def test_pcg_solves_and_stops_at_negative_curvature_like_numpy(backend: str,
                                                               diagonal: bool) -> None:
    xp = _namespace(backend)
    rng = np.random.default_rng(SEED)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    b = rng.standard_normal(6)
    for eigs, negative in ((np.linspace(1.0, 9.0, 6), False), (np.r_[-1.0, 2.0, 3, 4, 5, 6], True)):
        A = (Q * eigs) @ Q.T
        minv = 1.0 / np.abs(np.diag(A)) if diagonal else None
        want = pcg(lambda v, A=A: A @ v, b, 1e-12, 50, minv)
        A_x = _asarray(xp, A)
        got = pcg(lambda v, A_x=A_x: A_x @ v, _asarray(xp, b), 1e-12, 50,
                  None if minv is None else _asarray(xp, minv))
        assert namespace(got[0]) is namespace(A_x)
        assert got[1:] == want[1:] and got[2] is negative
        np.testing.assert_allclose(to_numpy(got[0]), want[0], rtol=1e-10, atol=1e-12)
        if not negative:
            np.testing.assert_allclose(A @ to_numpy(got[0]), b, atol=1e-10)


class XpGaugedLeastSquares(XpLeastSquares):
    """Least squares without penalty on rows that sum to 0: f is flat along u = 1/√p."""

    def gauge_directions(self) -> Any:
        p = self.n_params
        return self.xp.ones((1, p), dtype=self.xp.float64) / p ** 0.5


@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("method", ["newton", "newton_cg"])
def test_gauge_directions_are_projected_out_on_another_namespace(backend: str,
                                                                 method: str) -> None:
    X, _, targets = _data()
    X = X - X.mean(axis=1, keepdims=True)  # X 1 = 0: the Hessian is singular along 1

    def objective(b: str) -> XpGaugedLeastSquares:
        xp = _namespace(b)
        return XpGaugedLeastSquares(_asarray(xp, X), _asarray(xp, targets), 0.0, xp)

    got = minimize(objective(backend), np.zeros(5), method, tol=1e-10, max_iter=20)
    want = minimize(objective("numpy"), np.zeros(5), method, tol=1e-10, max_iter=20)
    assert got.status == want.status == "converged"
    _same_history(got.history, want.history, backend == "array_api_strict")
    w = to_numpy(got.w)
    assert abs(w.sum()) < 1e-12  # no step along the flat direction from w0 = 0
    np.testing.assert_allclose(w, want.w, atol=1e-10)


class _BlockOperator(_Operator):
    """An operator that offers class blocks (here M⁻¹ = I)."""

    def class_block_solver(self, max_rows: int | None = None) -> Any:
        return lambda v: v


class XpBlockLogistic(XpLinearLogistic):
    """The linear logistic f whose Hessian operator offers a class-block preconditioner."""

    def hess_operator(self, w: Any, Z: Any = None, precision: str | None = None) -> _Operator:
        p = self._p(self.X @ w if Z is None else Z)
        return _BlockOperator(self, p * (1.0 - p), precision)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_newton_cg_auto_preconditioner_is_none_off_numpy(backend: str) -> None:
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((200, 12)) * np.logspace(0, 2, 12)  # CG needs > 8 iterations
    y = (X @ rng.standard_normal(12) > 0).astype(np.float64)

    def run(b: str) -> Any:
        xp = _namespace(b)
        obj = XpBlockLogistic(_asarray(xp, X), _asarray(xp, y), 0.1, xp)
        return minimize(obj, np.zeros(12), "newton_cg", tol=1e-9, max_iter=50,
                        hvp_precision="float64")

    got, want = run(backend), run("numpy")
    assert want.info["preconditioner_builds"] >= 1  # numpy: the class blocks, once CG is long
    assert got.info["preconditioner_builds"] == 0 and got.status == want.status == "converged"
    np.testing.assert_allclose(to_numpy(got.w), want.w, rtol=0, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("method, opts", [
    ("newton_cg", {"preconditioner": "auto"}),
    ("newton_cg", {"preconditioner": "block"}),
    ("newton_cg", {"preconditioner": "jacobi", "hvp_precision": "float64"}),
    ("lbfgs", {}),
    ("nesterov", {"max_iter": 3000, "line_search": False}),
])
def test_softmax_regression_reaches_the_numpy_optimum(backend: str, method: str,
                                                      opts: dict[str, Any]) -> None:
    """The library's own SoftmaxRegression (margins fast path, float32 HVPs, class blocks) on
    another namespace: the same optimum as a tight numpy Newton-CG solve."""
    from pipeline.core.objectives import make_objective

    xp = _namespace(backend)
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((120, 6))
    X[:, 2] = 0.0  # an all-zero feature: its weights only see the penalty
    y = np.argmax(X @ rng.standard_normal((6, 4)) + rng.gumbel(size=(120, 4)), axis=1)
    ref = make_objective("softmax", X, y, l2=1e-2, n_classes=4)
    w_star = minimize(ref, ref.init("zeros"), "newton_cg", tol=1e-12, max_iter=50,
                      line_search=True).w
    obj = make_objective("softmax", _asarray(xp, X), xp.asarray(y), l2=1e-2, n_classes=4)
    kw = {"tol": 1e-10, "max_iter": 200, "line_search": True, **opts}
    res = minimize(obj, obj.init("zeros"), method, **kw)
    assert namespace(res.w) is namespace(_asarray(xp, X))
    assert res.status == "converged", res.message
    np.testing.assert_allclose(to_numpy(res.w), w_star, atol=1e-8)


@pytest.mark.parametrize("method", ["gd", "nesterov", "lbfgs", "newton", "newton_cg", "sgd"])
def test_a_host_start_point_moves_to_the_objectives_device(method: str) -> None:
    """An objective on a second device (array_api_strict's 'device1', standing in for a GPU) and
    a numpy w0: minimize moves w0 to that device once, and the run stays there (mixing devices
    raises in array_api_strict), ending at the CPU run's optimum."""
    from pipeline.core.objectives import make_objective

    dev = array_api_strict.Device("device1")
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((80, 4))
    y = np.argmax(X @ rng.standard_normal((4, 3)) + rng.gumbel(size=(80, 3)), axis=1)
    kw = {"l2": 1e-1, "n_classes": 3}
    obj = make_objective("softmax", array_api_strict.asarray(X, device=dev),
                         array_api_strict.asarray(y, device=dev), **kw)
    assert obj.device == dev
    ref = make_objective("softmax", X, y, **kw)
    opts: dict[str, Any] = {"tol": 1e-9, "max_iter": 2000}
    if method == "sgd":
        opts = {"tol": 0.0, "epochs": 2, "seed": SEED}
    res = minimize(obj, np.zeros(obj.n_params), method, **opts)
    assert res.w.device == dev
    want = minimize(ref, np.zeros(ref.n_params), method, **opts).w
    np.testing.assert_allclose(to_numpy(res.w), want, rtol=1e-8, atol=1e-9)
