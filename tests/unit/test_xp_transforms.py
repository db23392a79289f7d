"""Transforms, whitening and the theory helpers on any array API namespace: numpy and
array_api_strict (strict: a numpy-only call on the generic path fails), against numpy's results."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import pytest

from pipeline.core.backend import namespace, to_numpy
from pipeline.core.errors import DataError, NumericalError
from pipeline.core.theory import check_convexity, curvature, hessian_eigenvalues
from pipeline.core.transforms import Transform, fit_preprocess
from pipeline.core.whitening import (
    condition_number,
    fit_whitening,
    numerical_rank,
    second_moment,
    spectrum,
)

xps = pytest.importorskip("array_api_strict")
LIBS = ["numpy", "array_api_strict"]
CONFIGS = {
    "none": {"name": "none"},
    "zscore": {"name": "zscore"},
    "whiten": {"name": "whiten"},
    "whiten_ridge": {"name": "whiten", "ridge": 1.0e-2},
    "whiten_plain": {"name": "whiten", "augment": False},
    "whiten_zca_dropping": {"name": "whiten", "zca": True, "augment": False,
                            "rel_threshold": 1.0e-3, "penalty_space": "transformed"},
}


def lib_array(lib: str, a: Any) -> Any:
    """``a`` as a float64 array of ``lib`` (numpy or array_api_strict)."""
    return np.asarray(a, dtype=np.float64) if lib == "numpy" else xps.asarray(
        np.asarray(a, dtype=np.float64))


def assert_of(lib: str, *arrays: Any) -> None:
    """Every array is of ``lib``'s namespace."""
    for a in arrays:
        if lib == "numpy":
            assert isinstance(a, np.ndarray), type(a)
        else:
            assert namespace(a) is xps, type(a)


def assert_close(a: Any, b: Any, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Correlated inputs with one constant feature, and a test split."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6))
    X = rng.normal(size=(400, 6)) @ mix * np.array([1.0, 2.0, 0.5, 3.0, 1.0, 0.1]) + 0.3
    X[:, 3] = 1.5
    return X[:300], X[300:]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fitted_and_applied_transform_equals_numpy(lib, name, data):
    X, X_test = data
    ref = fit_preprocess(CONFIGS[name], X)
    tr = fit_preprocess(CONFIGS[name], lib_array(lib, X))
    Z = tr.apply(lib_array(lib, X_test))
    assert_of(lib, Z, tr.offset)
    assert_close(Z, ref.apply(X_test))
    assert tr.n_kept == ref.n_kept and tr.absorbs_bias == ref.absorbs_bias
    for field in ("scale", "matrix", "eigenvalues"):
        got, want = getattr(tr, field), getattr(ref, field)
        assert (got is None) == (want is None)
        if want is not None:
            assert_of(lib, got)
            assert_close(got, want)
    P, P_ref = tr.penalty_matrix(), ref.penalty_matrix()
    assert (P is None) == (P_ref is None)
    if P_ref is not None:
        assert_of(lib, P)
        assert_close(P, P_ref)


@pytest.mark.parametrize("lib", LIBS)
def test_whitened_second_moment_is_the_identity(lib, data):
    X = lib_array(lib, data[0])
    xp = namespace(X)
    n = X.shape[0]
    for cfg in (CONFIGS["whiten"], CONFIGS["whiten_plain"]):
        tr = fit_preprocess(cfg, X)
        Z = tr.apply(X)  # the augmented map carries the constant feature inside z
        assert_of(lib, Z)
        assert_close((Z.T @ Z) / n, np.eye(Z.shape[1]), atol=1e-10)
    # ridge whitening: T (C + λ·[I 0; 0 0]) Tᵀ = I with T = [A, c]
    tr = fit_preprocess(CONFIGS["whiten_ridge"], X)
    T = xp.concat([tr.matrix, tr.offset[:, None]], axis=1)
    C = second_moment(X, augment=True)
    assert_of(lib, C, T)
    m = C.shape[0]
    I_W = np.diag(np.r_[np.ones(m - 1), 0.0])
    assert_close(T @ (C + 1.0e-2 * lib_array(lib, I_W)) @ T.T, np.eye(m), atol=1e-10)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_input_and_transformed_weights_round_trip(lib, name, data):
    X = data[0]
    ref = fit_preprocess(CONFIGS[name], X)
    tr = fit_preprocess(CONFIGS[name], lib_array(lib, X))
    rng = np.random.default_rng(3)
    W = rng.normal(size=(tr.n_features_out, 4))
    b = rng.normal(size=4)
    W_x, b_x = tr.input_weights(lib_array(lib, W), lib_array(lib, b))
    assert_of(lib, W_x, b_x)
    W_x_ref, b_x_ref = ref.input_weights(W, b)
    assert_close(W_x, W_x_ref, atol=1e-10)
    assert_close(b_x, b_x_ref, atol=1e-10)
    # the same predictions on the inputs and on z
    Xl = lib_array(lib, X)
    assert_close(Xl @ W_x + b_x, tr.apply(Xl) @ lib_array(lib, W) + lib_array(lib, b),
                 atol=1e-9)
    W2, b2 = tr.transformed_weights(W_x, b_x)
    assert_of(lib, W2, b2)
    W2_ref, b2_ref = ref.transformed_weights(W_x_ref, b_x_ref)
    assert_close(W2, W2_ref, atol=1e-9)
    assert_close(b2, b2_ref, atol=1e-9)
    assert_close(tr.apply(Xl) @ W2 + b2, Xl @ W_x + b_x, atol=1e-9)


def test_transform_of_one_namespace_applies_to_data_of_another(data):
    X, X_test = data
    ref = fit_preprocess(CONFIGS["whiten"], X)
    Z = ref.apply(xps.asarray(X_test))  # numpy-fitted, strict data: strict result
    assert_of("array_api_strict", Z)
    assert_close(Z, ref.apply(X_test))
    tr = fit_preprocess(CONFIGS["whiten"], xps.asarray(X))
    Z_np = tr.apply(X_test)  # strict-fitted, numpy data: numpy result
    assert_of("numpy", Z_np)
    assert_close(Z_np, ref.apply(X_test))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_serialization_stays_numpy(name, data, tmp_path):
    X, X_test = data
    tr = fit_preprocess(CONFIGS[name], xps.asarray(X))
    arrays = tr.to_arrays()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    np.savez(tmp_path / "t.npz", **arrays)
    with np.load(tmp_path / "t.npz", allow_pickle=False) as f:
        back = Transform.from_arrays(dict(f))
    assert isinstance(back.offset, np.ndarray)
    assert_close(back.apply(X_test), fit_preprocess(CONFIGS[name], X).apply(X_test))


def test_bad_inputs_raise_the_numpy_errors_on_strict_arrays(data):
    X = xps.asarray(data[0])
    tr = fit_preprocess(CONFIGS["zscore"], X)
    with pytest.raises(DataError, match=r"expects \(n, 6\) inputs"):
        tr.apply(X[:, :5])
    with pytest.raises(DataError, match="weights have 5 rows"):
        tr.input_weights(xps.zeros((5, 2), dtype=xps.float64))
    with pytest.raises(DataError, match="input weights have 5 rows"):
        tr.transformed_weights(xps.zeros((5, 2), dtype=xps.float64))
    bad = np.array(data[0])
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        fit_preprocess(CONFIGS["zscore"], xps.asarray(bad))
    with pytest.raises(NumericalError) as strict_err:  # the constant feature: C is singular
        fit_whitening(X, augment=True)
    with pytest.raises(NumericalError) as numpy_err:
        fit_whitening(data[0], augment=True)
    assert str(strict_err.value) == str(numpy_err.value)


@pytest.mark.parametrize("lib", LIBS)
def test_whitening_helpers_match_numpy(lib, data):
    X = data[0]
    C = second_moment(lib_array(lib, X), augment=True)
    C_ref = second_moment(X, augment=True)
    assert_of(lib, C)
    assert_close(C, C_ref)
    lam = spectrum(C)
    assert_of(lib, lam)
    assert_close(lam, spectrum(C_ref))
    assert numerical_rank(lam) == numerical_rank(spectrum(C_ref)) == C_ref.shape[0] - 1
    assert condition_number(lam) == np.inf
    ridge = fit_whitening(lib_array(lib, X), ridge=0.5, zca=True, augment=False)
    ridge_ref = fit_whitening(X, ridge=0.5, zca=True, augment=False)
    assert_of(lib, ridge.T, ridge.eigenvalues)
    assert_close(ridge.T, ridge_ref.T)
    assert condition_number(ridge.eigenvalues) == pytest.approx(
        condition_number(ridge_ref.eigenvalues), rel=1e-12)


class Quadratic:
    """f(w) = ½ wᵀ H w with H PSD and one exact flat direction u (H u = 0), in namespace xp."""

    def __init__(self, xp: Any, H: np.ndarray, u: np.ndarray) -> None:
        self.xp, self.n_params = xp, H.shape[0]
        self._H, self._u = xp.asarray(H), xp.asarray(u[None, :])

    def hessian(self, w: Any) -> Any:
        assert array_api_compat.array_namespace(w) is self.xp
        return self._H

    def hvp(self, w: Any, v: Any) -> Any:
        assert array_api_compat.array_namespace(w, v) is self.xp
        return self._H @ v

    def gauge_directions(self) -> Any:
        return self._u


@pytest.fixture(scope="module")
def quadratic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H = Q diag(λ) Qᵀ with λ = 0 (the gauge u), 0.5, …, 40: L = 40, μ = 0.5 off the gauge."""
    rng = np.random.default_rng(5)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    lam = np.r_[0.0, np.geomspace(0.5, 40.0, 11)]
    return (Q * lam) @ Q.T, Q[:, 0], lam


@pytest.mark.parametrize("lib", LIBS)
def test_curvature_of_an_array_api_objective(lib, quadratic):
    H, u, lam = quadratic
    xp = np if lib == "numpy" else xps
    obj, ref = Quadratic(namespace(lib_array(lib, H)), H, u), Quadratic(namespace(H), H, u)
    for method in ("dense", "lanczos"):
        c, c_ref = curvature(obj, method=method), curvature(ref, method=method)
        assert c.L == pytest.approx(40.0, rel=1e-8) and c.mu == pytest.approx(0.5, rel=1e-6)
        assert c.L == pytest.approx(c_ref.L, rel=1e-8) and c.mu == pytest.approx(c_ref.mu,
                                                                                 rel=1e-6)
        assert c.kappa == pytest.approx(80.0, rel=1e-6)
    ev = hessian_eigenvalues(obj, xp.zeros(12, dtype=xp.float64))
    assert_of(lib, ev)
    assert_close(ev, np.sort(lam), atol=1e-10)


@pytest.mark.parametrize("lib", LIBS)
def test_convexity_of_an_array_api_objective(lib, quadratic):
    H, u, _ = quadratic
    pts = lib_array(lib, np.random.default_rng(6).normal(size=(3, 12)))
    rep = check_convexity(Quadratic(namespace(pts), H, u), pts)
    assert_of(lib, rep.eigenvalues)
    assert rep.psd and rep.min_eigenvalue == pytest.approx(0.0, abs=1e-12)
    H_neg = H - 2.0 * np.outer(u, u)  # the flat direction turned to curvature −2
    neg = check_convexity(Quadratic(namespace(pts), H_neg, u), pts)
    assert not neg.psd and neg.min_eigenvalue == pytest.approx(-2.0, rel=1e-10)


def test_torch_whitening_is_a_whitening_on_torch(data):
    """torch's eigenvectors may differ from LAPACK's in sign: check what whitening means."""
    torch = pytest.importorskip("torch")
    X, X_test = data
    Xt = torch.asarray(X, dtype=torch.float64)
    tr = fit_preprocess(CONFIGS["whiten"], Xt)
    Z = tr.apply(Xt)
    assert isinstance(Z, torch.Tensor) and isinstance(tr.matrix, torch.Tensor)
    assert_close((Z.T @ Z) / X.shape[0], np.eye(Z.shape[1]), atol=1e-10)
    ref = fit_preprocess(CONFIGS["whiten"], X)
    assert_close(np.abs(to_numpy(tr.apply(torch.asarray(X_test)))), np.abs(ref.apply(X_test)),
                 atol=1e-10)
    W = torch.asarray(np.random.default_rng(7).normal(size=(tr.n_features_out, 3)))
    W_x, b_x = tr.input_weights(W)
    assert isinstance(W_x, torch.Tensor)
    assert_close(Xt @ W_x + b_x, Z @ W, atol=1e-9)
