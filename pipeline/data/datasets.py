"""Data sets as ``Dataset`` records: MNIST (10 classes), a binary MNIST pair, synthetic regression.

``load_dataset(cfg, seed)`` takes the ``data`` config as a dict (``DataConfig``); everything
random is drawn from ``numpy.random.default_rng(seed)`` so a (config, seed) pair is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.data.mnist import load_mnist
from pipeline.errors import ConfigError

NAMES = ("mnist", "mnist_binary", "synthetic_regression")
TASKS = ("regression", "binary", "multiclass")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split, one example per row: ``X (n, d) float64``; ``y`` int64 classes or float64 targets."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # regression | binary | multiclass
    n_classes: int | None  # None for regression
    name: str
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # JSON-friendly facts (source, digits, w*, ...)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_data_config(cfg: Mapping[str, Any]) -> None:
    """Check the ranges of a ``data`` config; a bad value is a one-line ConfigError."""
    name = cfg.get("name")
    if name not in NAMES:
        raise ConfigError(f"data.name={name!r} is unknown; use one of {', '.join(NAMES)}")
    scale = cfg.get("scale", 1.0 / 255.0)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(
            f"data.scale={scale} must be a finite number > 0, e.g. 3.9215686e-3 (1/255)"
        )
    for key in ("n_train", "n_test"):
        v = cfg.get(key)
        if v is not None and not (_is_int(v) and v >= 1):
            raise ConfigError(f"data.{key}={v} must be a positive integer or null (use all)")
    if name == "mnist_binary":
        digits = list(cfg.get("digits") or [])
        if not (
            len(digits) == 2
            and all(_is_int(d) and 0 <= d <= 9 for d in digits)
            and digits[0] != digits[1]
        ):
            raise ConfigError(
                f"data.digits={digits} must be two distinct digits 0-9 [negative, positive], e.g. [3, 8]"
            )
    if name == "synthetic_regression":
        n, d = cfg.get("n_samples", 2000), cfg.get("n_features", 20)
        kappa, noise, tf = (
            cfg.get("condition_number", 1.0e2),
            cfg.get("noise", 0.1),
            cfg.get("test_fraction", 0.2),
        )
        if not (_is_int(d) and d >= 1):
            raise ConfigError(f"data.n_features={d} must be an integer >= 1")
        if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa >= 1):
            raise ConfigError(
                f"data.condition_number={kappa} must be a finite number >= 1 (1 = spherical)"
            )
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"data.noise={noise} must be a finite number >= 0")
        if not (isinstance(tf, (int, float)) and 0 < tf < 1):
            raise ConfigError(
                f"data.test_fraction={tf} must lie strictly between 0 and 1, e.g. 2.0e-1"
            )
        if not _is_int(n):
            raise ConfigError(f"data.n_samples={n} must be an integer")
        n_tr, n_te = _split_sizes(int(n), float(tf))
        if n_te < 1 or n_tr < d + 1:
            raise ConfigError(
                f"data.n_samples={n} with test_fraction={tf} leaves {n_tr} training rows for "
                f"{d} features; need at least n_features + 1 = {d + 1} (raise data.n_samples)"
            )


def _split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    n_test = int(round(n * test_fraction))
    return n - n_test, n_test


def _subsample(
    X: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` rows after a seeded shuffle (all rows, unshuffled, when ``n`` is None)."""
    if n is None:
        return X, y
    if n > X.shape[0]:
        raise ConfigError(
            f"data.{key}={n} exceeds the {X.shape[0]} available examples; lower it or use null"
        )
    idx = np.sort(rng.permutation(X.shape[0])[:n])
    return X[idx], y[idx]


def _mnist(cfg: Mapping[str, Any], rng: np.random.Generator) -> Dataset:
    raw = load_mnist(cfg.get("root"))
    scale = float(cfg.get("scale", 1.0 / 255.0))
    Xtr = raw.train_images.reshape(raw.train_images.shape[0], -1)
    Xte = raw.test_images.reshape(raw.test_images.shape[0], -1)
    ytr = raw.train_labels.astype(np.int64)
    yte = raw.test_labels.astype(np.int64)
    meta: dict[str, Any] = {"source": raw.source, "sha256": dict(raw.sha256), "scale": scale}
    if cfg["name"] == "mnist_binary":
        neg, pos = (int(d) for d in cfg["digits"])
        mtr = (ytr == neg) | (ytr == pos)
        mte = (yte == neg) | (yte == pos)
        Xtr, ytr = Xtr[mtr], (ytr[mtr] == pos).astype(np.int64)
        Xte, yte = Xte[mte], (yte[mte] == pos).astype(np.int64)
        meta["digits"] = [neg, pos]
        task, n_classes = "binary", 2
    else:
        task, n_classes = "multiclass", 10
    Xtr, ytr = _subsample(Xtr, ytr, cfg.get("n_train"), rng, "n_train")
    Xte, yte = _subsample(Xte, yte, cfg.get("n_test"), rng, "n_test")
    # uint8 -> float64 and scaling in one pass each (no Python loop over images)
    Xtr = np.multiply(Xtr, scale, dtype=np.float64)
    Xte = np.multiply(Xte, scale, dtype=np.float64)
    return Dataset(Xtr, ytr, Xte, yte, task, n_classes, str(cfg["name"]), meta)


def synthetic_regression(
    n_samples: int,
    n_features: int,
    condition_number: float,
    noise: float,
    test_fraction: float,
    rng: np.random.Generator,
) -> Dataset:
    """Linear regression y = X w* + b* + σ·ε whose training second moment (1/n) XᵀX = V diag(λ) Vᵀ has cond κ exactly.

    λ_i are geometrically spaced from 1 down to 1/κ (κ = 1: spherical level sets). The training
    inputs are X = √n · Q diag(√λ) Vᵀ with Q (n×d) orthonormal columns orthogonal to the constant
    vector, so the columns have mean 0 and the bias-augmented Hessian (1/n) X̃ᵀX̃ = diag(V Λ Vᵀ, 1)
    has the same condition number κ. Test inputs are drawn from N(0, V Λ Vᵀ) (same second moment).
    """
    d = n_features
    n_train, n_test = _split_sizes(n_samples, test_fraction)
    lam = np.geomspace(1.0, 1.0 / condition_number, num=d) if d > 1 else np.ones(1)
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    G = rng.standard_normal((n_train, d))
    G -= G.mean(axis=0)  # orthogonal to the constant vector
    Q, R = np.linalg.qr(G)
    Q *= np.sign(np.diag(R))  # a deterministic sign convention
    X_train = math.sqrt(n_train) * (Q * np.sqrt(lam)) @ V.T
    X_test = (rng.standard_normal((n_test, d)) * np.sqrt(lam)) @ V.T
    w_star = rng.standard_normal(d)
    b_star = float(rng.standard_normal())
    y_train = X_train @ w_star + b_star + noise * rng.standard_normal(n_train)
    y_test = X_test @ w_star + b_star + noise * rng.standard_normal(n_test)
    meta = {
        "condition_number": float(condition_number),
        "eigenvalues": lam.tolist(),
        "w_star": w_star.tolist(),
        "b_star": b_star,
        "noise": float(noise),
    }
    return Dataset(
        X_train, y_train, X_test, y_test, "regression", None, "synthetic_regression", meta
    )


def load_dataset(cfg: Mapping[str, Any], seed: int | None = None) -> Dataset:
    """Load the data set a ``data`` config names; ``seed`` (else ``cfg['seed']``, else 0) fixes all randomness."""
    validate_data_config(cfg)
    if seed is None:
        seed = int(cfg.get("seed", 0) or 0)
    rng = np.random.default_rng(seed)
    name = cfg["name"]
    if name in ("mnist", "mnist_binary"):
        return _mnist(cfg, rng)
    ds = synthetic_regression(
        int(cfg.get("n_samples", 2000)),
        int(cfg.get("n_features", 20)),
        float(cfg.get("condition_number", 1.0e2)),
        float(cfg.get("noise", 0.1)),
        float(cfg.get("test_fraction", 0.2)),
        rng,
    )
    Xtr, ytr = _subsample(ds.X_train, ds.y_train, cfg.get("n_train"), rng, "n_train")
    Xte, yte = _subsample(ds.X_test, ds.y_test, cfg.get("n_test"), rng, "n_test")
    return Dataset(Xtr, ytr, Xte, yte, ds.task, None, ds.name, ds.meta)
