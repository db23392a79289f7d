"""Whitening: identity auto-covariance, the train-fitted map on test data, singular covariances,
MNIST."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from pipeline.core.errors import ConfigError, NumericalError
from pipeline.core.transforms import WHITEN_DEFAULTS, Transform, fit_preprocess
from pipeline.core.whitening import condition_number, fit_whitening, n_keep, second_moment, spectrum
from pipeline.data.datasets import load_dataset
from pipeline.prepare import hessian_after

# the whitening mechanics (dropping directions, singular C); penalty_space=input:
# test_penalty_space.py
WHITEN = {"name": "whiten", **WHITEN_DEFAULTS, "penalty_space": "transformed"}


def ellipsoidal(n: int = 400, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full-rank, badly scaled, non-centred train and test inputs."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d, d)) * np.geomspace(1.0, 1.0e-2, d)
    shift = rng.standard_normal(d)
    return rng.standard_normal((n, d)) @ M + shift, rng.standard_normal((n // 4, d)) @ M + shift


def aug(X: np.ndarray) -> np.ndarray:
    return np.c_[X, np.ones(X.shape[0])]


@pytest.mark.parametrize("zca", [False, True])
def test_augmented_whitening_identity_and_condition_one(zca: bool) -> None:
    X, _ = ellipsoidal()
    tr = fit_preprocess({**WHITEN, "zca": zca}, X)
    Z = tr.apply(X)
    n = X.shape[0]
    assert tr.absorbs_bias and Z.shape == (n, 7)
    np.testing.assert_allclose(Z.T @ Z / n, np.eye(7), atol=1e-8)
    assert condition_number(spectrum(Z.T @ Z / n)) == pytest.approx(1.0, abs=1e-6)
    assert condition_number(spectrum(aug(X).T @ aug(X) / n)) > 1e4  # it was badly conditioned


def test_plain_whitening_without_augment() -> None:
    X, _ = ellipsoidal()
    tr = fit_preprocess({**WHITEN, "augment": False}, X)
    Z = tr.apply(X)
    assert not tr.absorbs_bias and Z.shape == X.shape
    np.testing.assert_allclose(Z.T @ Z / X.shape[0], np.eye(6), atol=1e-8)
    np.testing.assert_array_equal(tr.c, 0.0)
    # uncentred data: with an intercept column the Hessian is NOT the identity (why augment exists)
    Za = aug(Z)
    assert condition_number(spectrum(Za.T @ Za / X.shape[0])) > 10


def test_test_split_uses_the_train_fitted_map() -> None:
    X, Xt = ellipsoidal()
    tr = fit_preprocess(WHITEN, X)
    Zt = tr.apply(Xt)
    C = aug(X).T @ aug(X) / X.shape[0]
    # sign/rotation-free check: Z Zᵀ = X̃ C⁻¹ X̃ᵀ with C from the TRAINING split
    np.testing.assert_allclose(
        Zt @ Zt.T, aug(Xt) @ np.linalg.solve(C, aug(Xt).T), rtol=1e-8, atol=1e-8
    )
    C_test = aug(Xt).T @ aug(Xt) / Xt.shape[0]
    assert not np.allclose(Zt @ Zt.T, aug(Xt) @ np.linalg.solve(C_test, aug(Xt).T), atol=1e-3)
    # ZCA is unique: z = C^-1/2 x̃, computed independently with scipy's matrix power
    zca = fit_preprocess({**WHITEN, "zca": True}, X)
    Cm12 = scipy.linalg.fractional_matrix_power(C, -0.5).real
    np.testing.assert_allclose(zca.apply(Xt), aug(Xt) @ Cm12.T, rtol=1e-7, atol=1e-9)


def test_transform_round_trip_and_input_weights() -> None:
    X, Xt = ellipsoidal()
    tr = fit_preprocess({**WHITEN, "rel_threshold": 1.0e-9}, X)
    buf = io.BytesIO()
    np.savez(buf, **tr.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        back = Transform.from_arrays({k: z[k] for k in z.files})
    assert back.kind == "whiten" and back.absorbs_bias and back.n_kept == tr.n_kept
    np.testing.assert_array_equal(back.apply(Xt), tr.apply(Xt))
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((tr.n_features_out, 3)), np.zeros(3)
    Wx, bx = tr.input_weights(W, b)
    assert Wx.shape == (6, 3)
    np.testing.assert_allclose(tr.apply(Xt) @ W + b, Xt @ Wx + bx, rtol=1e-9, atol=1e-9)


def singular_data() -> np.ndarray:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 5))
    return np.c_[X, X[:, 0] + X[:, 1], np.zeros(300)]  # a dependent column and an always-zero pixel


def test_singular_covariance_is_a_one_line_error() -> None:
    with pytest.raises(NumericalError) as ei:
        fit_preprocess(WHITEN, singular_data())
    msg = str(ei.value)
    assert "\n" not in msg and "singular" in msg and "rel_threshold" in msg and "eps" in msg


@pytest.mark.parametrize(
    "opts",
    [{"rel_threshold": 1.0e-10}, {"n_components": 4}, {"explained_variance": 0.9}, {"eps": 1.0e-3}],
)
def test_singular_covariance_remedies(opts: dict) -> None:
    X = singular_data()
    tr = fit_preprocess({**WHITEN, **opts}, X)
    Z = tr.apply(X)
    assert np.isfinite(Z).all()
    H = Z.T @ Z / X.shape[0]
    if "eps" in opts:  # every direction kept, eigenvalues λ/(λ+ε) ≤ 1
        assert tr.n_kept == 8 and np.linalg.eigvalsh(H).max() <= 1.0 + 1e-12
    else:
        np.testing.assert_allclose(H, np.eye(tr.n_kept), atol=1e-8)
    if "rel_threshold" in opts:
        assert tr.n_kept == 6  # rank of [X, x0 + x1, 0, 1]
    if "n_components" in opts:
        assert tr.n_kept == 4


def test_n_keep_rules() -> None:
    lam = np.array([4.0, 2.0, 1.0, 0.5, 0.5])
    assert n_keep(lam) == 5
    assert n_keep(lam, rel_threshold=0.2) == 3
    assert n_keep(lam, explained_variance=0.75) == 2  # 6/8 = 0.75 exactly
    assert n_keep(lam, explained_variance=1.0) == 5
    assert n_keep(lam, n_components=4, rel_threshold=0.2) == 3  # the strictest rule wins
    with pytest.raises(ConfigError, match="n_components=6 exceeds"):
        n_keep(lam, n_components=6)


def test_all_zero_inputs() -> None:
    with pytest.raises(NumericalError, match="all zero"):
        fit_whitening(np.zeros((10, 3)), augment=False)


def test_hessian_after_matches_direct_computation() -> None:
    X, _ = ellipsoidal()
    C = second_moment(X, augment=True)
    np.testing.assert_allclose(C, aug(X).T @ aug(X) / X.shape[0], atol=1e-12)
    for cfg in ({"name": "none"}, {"name": "zscore"}, WHITEN, {**WHITEN, "augment": False}):
        tr = fit_preprocess(cfg, X)
        Z = tr.apply(X)
        Zt = Z if tr.absorbs_bias else aug(Z)
        np.testing.assert_allclose(
            hessian_after(tr, C), Zt.T @ Zt / X.shape[0], rtol=1e-9, atol=1e-9
        )


@pytest.mark.slow
def test_mnist_whitening(mnist_dir: Path) -> None:
    cfg = {
        "name": "mnist",
        "id": "mnist",
        "root": str(mnist_dir),
        "scale": 1 / 255,
        "n_train": 10000,
    }
    ds = load_dataset(cfg, seed=0)
    with pytest.raises(NumericalError, match="rel_threshold"):  # never-lit pixels: C is singular
        fit_preprocess(WHITEN, ds.X_train)
    tr = fit_preprocess({**WHITEN, "rel_threshold": 1.0e-6}, ds.X_train)
    Z = tr.apply(ds.X_train)
    assert 500 < tr.n_kept < 785 and np.isfinite(Z).all()
    np.testing.assert_allclose(Z.T @ Z / Z.shape[0], np.eye(tr.n_kept), atol=1e-8)
    Zt = tr.apply(ds.X_test)
    assert Zt.shape == (10000, tr.n_kept) and np.isfinite(Zt).all()
