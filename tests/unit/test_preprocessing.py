"""none / zscore preprocessing, config validation, and the Transform contract."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.checks import config_keys
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.transforms import (
    WHITEN_DEFAULTS,
    Transform,
    fit_preprocess,
    validate_preprocess_config,
)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0] + [0.0, 5.0, -2.0, 1.0, 0.0]
    X[:, 4] = 7.0  # a constant feature
    Xt = rng.standard_normal((50, 5)) * 2.0
    return X, Xt


def test_none_is_identity_without_copy(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Xt = data
    tr = fit_preprocess({"name": "none"}, X)
    assert tr.apply(Xt) is Xt  # float64 input passes through unchanged
    np.testing.assert_array_equal(tr.A, np.eye(5))
    assert tr.matrix is None and not tr.absorbs_bias
    W = np.arange(10.0).reshape(5, 2)
    Wx, bx = tr.input_weights(W, np.array([1.0, 2.0]))
    np.testing.assert_array_equal(Wx, W)
    np.testing.assert_array_equal(bx, [1.0, 2.0])


def test_zscore_standardizes_train_and_reuses_train_stats(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    X, Xt = data
    tr = fit_preprocess({"name": "zscore"}, X)
    assert tr.matrix is None and tr.scale is not None  # stored as a diagonal, no dense 784x784
    Z = tr.apply(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z[:, :4].std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(Z[:, 4], 0.0)  # constant feature: centred, not divided by 0
    assert np.isfinite(tr.apply(Xt)).all()
    mu, sd = X[:, :4].mean(axis=0), X[:, :4].std(axis=0)
    np.testing.assert_allclose(tr.apply(Xt)[:, :4], (Xt[:, :4] - mu) / sd, rtol=1e-12)
    np.testing.assert_allclose(tr.apply(Xt)[:, 4], Xt[:, 4] - 7.0)
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal(5), 0.3
    Wx, bx = tr.input_weights(W, b)
    np.testing.assert_allclose(tr.apply(Xt) @ W + b, Xt @ Wx + bx, rtol=1e-10)
    np.testing.assert_allclose(tr.apply(Xt), Xt @ tr.A.T + tr.c, rtol=1e-12)  # z = A x + c


def test_transform_arrays_hold_no_objects(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    arrs = fit_preprocess({"name": "zscore"}, X).to_arrays()
    assert all(a.dtype != object for a in arrs.values())
    back = Transform.from_arrays(arrs)
    np.testing.assert_array_equal(back.apply(X), fit_preprocess({"name": "zscore"}, X).apply(X))
    with pytest.raises(DataError, match="lacks"):
        Transform.from_arrays({"kind": np.array("zscore")})


def test_apply_checks_feature_count(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    tr = fit_preprocess({"name": "zscore"}, X)
    with pytest.raises(DataError, match=r"expects \(n, 5\) inputs"):
        tr.apply(np.zeros((3, 4)))


def test_non_finite_training_data(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    X = X.copy()
    X[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_preprocess({"name": "zscore"}, X)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "pca"}, "preprocess.name"),
        ({"name": "whiten", "eps": -1.0e-3}, "preprocess.eps"),
        ({"name": "whiten", "eps": float("inf")}, "preprocess.eps"),
        ({"name": "whiten", "rel_threshold": 1.5}, "preprocess.rel_threshold"),
        ({"name": "whiten", "n_components": 0}, "preprocess.n_components"),
        ({"name": "whiten", "explained_variance": 0.0}, "preprocess.explained_variance"),
        ({"name": "whiten", "explained_variance": 1.5}, "preprocess.explained_variance"),
        ({"name": "zscore", "eps": 1.0e-3}, "preprocess.eps"),
        ({"name": "none", "zca": True}, "preprocess.zca"),
    ],
)
def test_bad_preprocess_config(cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError) as ei, config_keys():  # the stages' wording: config keys
        validate_preprocess_config(cfg)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(key)
    with pytest.raises(ConfigError) as ei:  # the core's own: the bare option name
        validate_preprocess_config(cfg)
    assert str(ei.value) == msg.removeprefix("preprocess.").replace("preprocess=", "transform=")


def test_defaults_of_other_kinds_are_accepted() -> None:
    validate_preprocess_config({"name": "zscore", "id": "zscore", **WHITEN_DEFAULTS})
