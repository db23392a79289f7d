"""Data sets: exact conditioning of the synthetic problem, reproducibility, MNIST views, config
checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.data.catalog import complete
from pipeline.data.datasets import load_dataset, validate_data_config
from pipeline.data.idxsets import load_mnist

SYNTH = {
    "name": "synthetic_regression",
    "id": "synth",
    "n_samples": 500,
    "n_features": 8,
    "condition_number": 1.0e2,
    "noise": 1.0e-1,
    "test_fraction": 0.2,
}


@pytest.mark.parametrize("kappa", [1.0, 1.0e2, 1.0e6])
def test_synthetic_condition_number_exact(kappa: float) -> None:
    ds = load_dataset({**SYNTH, "condition_number": kappa}, seed=3)
    X = ds.X_train
    n = X.shape[0]
    lam = np.linalg.eigvalsh(X.T @ X / n)
    assert lam[-1] / lam[0] == pytest.approx(kappa, rel=1e-8)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)  # so the bias column decouples
    Xa = np.c_[X, np.ones(n)]
    lam_a = np.linalg.eigvalsh(Xa.T @ Xa / n)
    assert lam_a[-1] / lam_a[0] == pytest.approx(kappa, rel=1e-8)
    if kappa == 1.0:
        np.testing.assert_allclose(X.T @ X / n, np.eye(X.shape[1]), atol=1e-12)  # spherical


def test_synthetic_shapes_targets_and_reproducibility() -> None:
    a = load_dataset(SYNTH, seed=1)
    b = load_dataset(SYNTH, seed=1)
    c = load_dataset(SYNTH, seed=2)
    assert a.X_train.shape == (400, 8) and a.X_test.shape == (100, 8)
    assert a.task == "regression" and a.n_classes is None
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.allclose(a.X_train, c.X_train)
    w, b0 = np.asarray(a.meta["w_star"]), a.meta["b_star"]
    resid = a.y_train - a.X_train @ w - b0
    assert resid.std() == pytest.approx(0.1, rel=0.2)  # the noise level
    coef = np.linalg.lstsq(np.c_[a.X_train, np.ones(400)], a.y_train, rcond=None)[0]
    np.testing.assert_allclose(coef, np.r_[w, b0], atol=0.1)
    # test inputs come from the same second moment (loosely: 100 samples)
    lam_test = np.linalg.eigvalsh(a.X_test.T @ a.X_test / 100)
    assert 0.3 < lam_test[-1] < 3.0
    assert load_dataset({**SYNTH, "seed": 1}).X_train.tolist() == a.X_train.tolist()  # seed in cfg


def test_synthetic_subsample() -> None:
    ds = load_dataset({**SYNTH, "n_train": 50, "n_test": 10}, seed=0)
    full = load_dataset(SYNTH, seed=0)
    assert ds.X_train.shape == (50, 8) and ds.y_test.shape == (10,)
    rows = {tuple(r) for r in full.X_train}
    assert all(tuple(r) in rows for r in ds.X_train)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"format": "cifar"}, "data.format"),
        ({"scale": 0.0}, "data.scale"),
        ({"scale": float("nan")}, "data.scale"),
        ({"condition_number": 0.5}, "data.condition_number"),
        ({"noise": -1.0}, "data.noise"),
        ({"test_fraction": 1.0}, "data.test_fraction"),
        ({"n_samples": 20, "n_features": 30}, "data.n_samples"),
        ({"n_train": 0}, "data.n_train"),
        ({"name": "mnist_binary", "classes": [3, 3]}, "data.classes"),
        ({"name": "mnist_binary", "classes": [3, 10]}, "data.classes"),
        ({"name": "mnist_binary", "classes": [3]}, "data.classes"),
        ({"name": "mnist_binary", "classes": [3, -1]}, "data.classes"),
        ({"name": "mnist", "folder": "../up"}, "data.folder"),
        ({"name": "mnist", "files": {}}, "data.files"),
    ],
)
def test_bad_config_values(override: dict, key: str) -> None:
    base = SYNTH if "name" not in override else complete({"name": override["name"]})
    with pytest.raises(ConfigError) as ei:
        validate_data_config(
            {**base, "format": base.get("format", "synthetic_regression"), **override}
        )
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(key)


def test_n_train_too_large() -> None:
    with pytest.raises(ConfigError, match="data.n_train=1000 exceeds the 400 available"):
        load_dataset({**SYNTH, "n_train": 1000}, seed=0)


def test_mnist_multiclass(mnist_dir: Path) -> None:
    ds = load_dataset(
        {"name": "mnist", "id": "mnist", "root": str(mnist_dir), "scale": 1 / 255}, seed=0
    )
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    assert ds.task == "multiclass" and ds.n_classes == 10
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    raw = load_mnist(mnist_dir)
    np.testing.assert_allclose(ds.X_test[7].reshape(28, 28) * 255, raw.test_images[7], atol=1e-9)
    assert set(np.unique(ds.y_test)) == set(range(10))


def test_mnist_binary_and_subsample(mnist_dir: Path) -> None:
    cfg = {
        "name": "mnist_binary",
        "id": "mnist-3v8",
        "root": str(mnist_dir),
        "classes": [3, 8],
        "scale": 1.0,
    }
    ds = load_dataset(cfg, seed=0)
    raw = load_mnist(mnist_dir)
    assert ds.task == "binary" and ds.n_classes == 2
    assert ds.y_train.sum() == np.count_nonzero(raw.train_labels == 8)
    assert ds.y_train.size == np.count_nonzero((raw.train_labels == 3) | (raw.train_labels == 8))
    assert ds.X_train.max() == 255.0  # scale 1
    sub = load_dataset({**cfg, "n_train": 500, "n_test": 100}, seed=4)
    again = load_dataset({**cfg, "n_train": 500, "n_test": 100}, seed=4)
    assert sub.X_train.shape == (500, 784) and sub.y_test.shape == (100,)
    np.testing.assert_array_equal(sub.X_train, again.X_train)
    assert 0 < sub.y_train.mean() < 1
