"""Preprocessing fitted on the training split and applied to both: ``none``, ``zscore``, ``whiten``.

Every preprocessing is an affine map z = A x + c held in a ``Transform``. ``none`` and
``zscore`` store A as a diagonal (``scale``) so applying them is an elementwise op; ``whiten``
stores a dense A and applies as one matmul. With augmented whitening the constant feature is
inside z (``absorbs_bias``): fit the model without an intercept and its MSE Hessian is I.

``penalty_space`` says where the model's L2 penalty acts: ``input`` (default) on the input-space
weights W_x = Aᵀ W — the transform then only changes coordinates, the objective (f*, optimum,
predictions) is the one of the raw data, and the penalty matrix is P = A Aᵀ; ``transformed`` on W
itself (P = I: another objective for every preprocessing). Ridge whitening (``ridge`` = λ)
whitens (1/n) X̃ᵀX̃ + λ·[I 0; 0 0], so that the regularized least-squares Hessian in z is I.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import DataError, OptionError
from pipeline.core.whitening import fit_whitening

KINDS = ("none", "zscore", "whiten")
PENALTY_SPACES = ("input", "transformed")
# the default: the schema's preprocess.penalty_space and old files
PENALTY_SPACE = PENALTY_SPACES[0]
DROPPING_KEYS = ("rel_threshold", "n_components", "explained_variance")  # drop data directions
WHITEN_DEFAULTS = {  # whiten-only options and their defaults (other kinds must leave them so)
    "eps": 0.0,
    "ridge": 0.0,
    "rel_threshold": None,
    "n_components": None,
    "explained_variance": None,
    "zca": False,
    "augment": True,
}


@dataclass(frozen=True, eq=False)
class Transform:
    """An affine map z = A x + c, A either diagonal (``scale``, shape (d,)) or dense (``matrix``,
    (k, d))."""

    kind: str  # none | zscore | whiten
    offset: np.ndarray  # c, shape (k,)
    scale: np.ndarray | None = None  # diag(A) for elementwise kinds (None with matrix None: A = I)
    matrix: np.ndarray | None = None  # dense A
    absorbs_bias: bool = False  # the constant feature is inside z: fit without an intercept
    eigenvalues: np.ndarray | None = (
        None  # whiten: spectrum of the training second moment, descending
    )
    n_kept: int | None = None  # whiten: eigen-directions kept
    # input: the penalty acts on W_x = Aᵀ W (P = A Aᵀ); transformed: on W
    penalty_space: str = PENALTY_SPACE

    def penalty_matrix(self) -> np.ndarray | None:
        """P of the penalty λ/2 tr(Wᵀ P W) on weights over z: A Aᵀ (``input``), None = I
        (``transformed``, ``none``)."""
        if self.penalty_space == "transformed" or (self.matrix is None and self.scale is None):
            return None
        if self.matrix is None:
            return np.diag(self.scale**2)  # type: ignore[operator]
        return self.matrix @ self.matrix.T

    @property
    def n_features_in(self) -> int:
        return int(self.matrix.shape[1]) if self.matrix is not None else int(self.offset.shape[0])

    @property
    def n_features_out(self) -> int:
        return int(self.offset.shape[0])

    @property
    def A(self) -> np.ndarray:
        """The dense (k, d) matrix of the map (built on demand for the diagonal kinds)."""
        if self.matrix is not None:
            return self.matrix
        s = np.ones(self.n_features_in) if self.scale is None else self.scale
        return np.diag(s)

    @property
    def c(self) -> np.ndarray:
        return self.offset

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Z = X Aᵀ + cᵀ (rows are examples); ``none`` returns float64 ``X`` itself, uncopied."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            raise DataError(
                f"{self.kind} transform expects (n, {self.n_features_in}) inputs, got {X.shape}; "
                "apply it to data with the features it was fitted on"
            )
        if self.matrix is not None:
            Z = X @ self.matrix.T
            Z += self.offset
            return Z
        if self.scale is None:
            return X if not self.offset.any() else X + self.offset
        Z = X * self.scale
        Z += self.offset
        return Z

    def input_weights(self, W: np.ndarray, b: Any = 0.0) -> tuple[np.ndarray, Any]:
        """Weights of a linear model on z mapped to the inputs: W_x = Aᵀ W, b_x = cᵀ W + b."""
        W = np.asarray(W, dtype=np.float64)
        if W.shape[0] != self.n_features_out:
            raise DataError(
                f"weights have {W.shape[0]} rows but the {self.kind} transform outputs "
                f"{self.n_features_out} features; use weights fitted on this prepared data"
            )
        if self.matrix is not None:
            W_x = self.matrix.T @ W
        elif self.scale is None:
            W_x = W.copy()
        else:
            W_x = self.scale.reshape((-1,) + (1,) * (W.ndim - 1)) * W
        b_x = self.offset @ W + (0.0 if b is None else b)
        return W_x, b_x

    def transformed_weights(self, W_x: np.ndarray, b_x: Any = 0.0) -> tuple[np.ndarray, Any]:
        """The inverse of ``input_weights``: W on z with Aᵀ W = W_x and cᵀ W + b = b_x (the same
        predictions); least squares when A drops directions. ``absorbs_bias``: [Aᵀ; cᵀ] W = [W_x;
        b_x], b = 0."""
        W_x = np.asarray(W_x, dtype=np.float64)
        b_x = np.asarray(b_x, dtype=np.float64)
        if W_x.shape[0] != self.n_features_in:
            raise DataError(
                f"input weights have {W_x.shape[0]} rows but the {self.kind} transform reads "
                f"{self.n_features_in} features; map weights of a model on these inputs"
            )
        if self.absorbs_bias:
            M = np.vstack([self.A.T, self.offset[None, :]])
            W = np.linalg.lstsq(M, np.vstack([W_x.reshape(W_x.shape[0], -1), b_x.reshape(1, -1)]),
                                rcond=None)[0]
            return W.reshape((W.shape[0],) + W_x.shape[1:]), np.zeros_like(b_x)
        if self.matrix is not None:
            W = np.linalg.lstsq(self.matrix.T, W_x.reshape(W_x.shape[0], -1), rcond=None)[0]
            W = W.reshape((W.shape[0],) + W_x.shape[1:])
        elif self.scale is None:
            W = W_x.copy()
        else:
            W = W_x / self.scale.reshape((-1,) + (1,) * (W_x.ndim - 1))
        return W, b_x - self.offset @ W

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (no pickles: strings are 0-d ``str`` arrays)."""
        d: dict[str, np.ndarray] = {
            "kind": np.array(self.kind),
            "offset": self.offset,
            "absorbs_bias": np.array(self.absorbs_bias),
            "n_features_in": np.array(self.n_features_in, dtype=np.int64),
            "penalty_space": np.array(self.penalty_space),
        }
        if self.scale is not None:
            d["scale"] = self.scale
        if self.matrix is not None:
            d["matrix"] = self.matrix
        if self.eigenvalues is not None:
            d["eigenvalues"] = self.eigenvalues
        if self.n_kept is not None:
            d["n_kept"] = np.array(self.n_kept, dtype=np.int64)
        return d

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray]) -> Transform:
        """Rebuild a Transform from ``to_arrays()`` output."""
        try:
            kind = str(d["kind"][()])
            offset = np.asarray(d["offset"], dtype=np.float64)
            absorbs = bool(d["absorbs_bias"][()])
            space = str(d["penalty_space"][()])
        except KeyError as err:
            raise DataError(
                f"stored transform lacks {err}; rerun `python -m pipeline.prepare`"
            ) from None
        if kind not in KINDS:
            raise DataError(
                f"stored transform kind {kind!r} is unknown; rerun `python -m pipeline.prepare`"
            )
        return cls(
            kind=kind,
            offset=offset,
            scale=np.asarray(d["scale"], dtype=np.float64) if "scale" in d else None,
            matrix=np.asarray(d["matrix"], dtype=np.float64) if "matrix" in d else None,
            absorbs_bias=absorbs,
            eigenvalues=np.asarray(d["eigenvalues"], dtype=np.float64)
            if "eigenvalues" in d
            else None,
            n_kept=int(d["n_kept"][()]) if "n_kept" in d else None,
            penalty_space=space,
        )


def _opt_number(cfg: Mapping[str, Any], key: str) -> float | None:
    v = cfg.get(key)
    if v is not None and not (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ):
        raise OptionError("transform", key, v, "must be a finite number or null")
    return v


def validate_preprocess_config(cfg: Mapping[str, Any]) -> None:
    """Check a ``preprocess`` config; a bad value is a one-line ConfigError."""
    name = cfg.get("name", "none")
    if name not in KINDS:
        raise OptionError("transform", "name", name, "is unknown; use one of {kinds}",
                          kinds=", ".join(KINDS))
    eps = _opt_number(cfg, "eps") if "eps" in cfg else 0.0
    if eps is None or eps < 0:
        raise OptionError("transform", "eps", eps, "must be >= 0 (e.g. 1.0e-3; 0 = none)", show=str)
    ridge = _opt_number(cfg, "ridge") if "ridge" in cfg else 0.0
    if ridge is None or ridge < 0:
        raise OptionError("transform", "ridge", ridge, "must be >= 0 (ridge whitening: the "
                          "model's λ, ${{{objective.l2}}})", show=str)
    space = cfg.get("penalty_space", PENALTY_SPACE)
    if space not in PENALTY_SPACES:
        raise OptionError("transform", "penalty_space", space,
                          "is unknown; use input or transformed")
    rt = _opt_number(cfg, "rel_threshold")
    if rt is not None and not (0 <= rt < 1):
        raise OptionError("transform", "rel_threshold", rt,
                          "must lie in [0, 1), e.g. 1.0e-6, or be null", show=str)
    nc = cfg.get("n_components")
    if nc is not None and not (isinstance(nc, int) and not isinstance(nc, bool) and nc >= 1):
        raise OptionError("transform", "n_components", nc, "must be an integer >= 1 or null",
                          show=str)
    ev = _opt_number(cfg, "explained_variance")
    if ev is not None and not (0 < ev <= 1):
        raise OptionError("transform", "explained_variance", ev,
                          "must lie in (0, 1], e.g. 9.9e-1, or be null", show=str)
    if space == "input" and name == "whiten":
        for key in DROPPING_KEYS:
            if cfg.get(key) is not None:
                raise OptionError(
                    "transform", key, cfg[key], "drops directions that carry data, which "
                    "changes the objective under {transform.penalty_space}=input; set it to null "
                    "({transform.ridge} keeps whitening well conditioned) or use "
                    "{transform.penalty_space}=transformed", show=str)
    if name != "whiten":
        for key, default in WHITEN_DEFAULTS.items():
            if key in cfg and cfg[key] != default:
                raise OptionError(
                    "transform", key, cfg[key], "only applies to {transform}=whiten "
                    "(this is {name}); remove the override or use {transform}=whiten",
                    show=str, name=name)


def absorbs_bias(cfg: Mapping[str, Any]) -> bool:
    """Augmented whitening (``whiten`` with ``augment``) puts the constant feature inside z."""
    return cfg.get("name", "none") == "whiten" and bool(cfg.get("augment", True))


def fit_preprocess(
    cfg: Mapping[str, Any], X_train: np.ndarray, *, second_moment_aug: np.ndarray | None = None
) -> Transform:
    """Fit the preprocessing a ``preprocess`` config names on the training inputs only.

    ``second_moment_aug`` may pass a precomputed (1/n) X̃ᵀX̃ (X̃ = [X, 1]) to save an O(n d²)
    product.
    """
    validate_preprocess_config(cfg)
    X = np.asarray(X_train, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"training inputs have shape {X.shape}; need a non-empty (n, d) matrix")
    if not np.isfinite(X).all():
        raise DataError("training inputs contain NaN or inf; clean the data before preprocessing")
    d = X.shape[1]
    name = cfg.get("name", "none")
    space = str(cfg.get("penalty_space", PENALTY_SPACE))
    if name == "none":
        return Transform(kind="none", offset=np.zeros(d), penalty_space=space)
    if name == "zscore":
        mu = X.mean(axis=0)
        sigma = X.std(axis=0)
        const = np.ptp(X, axis=0) == 0  # a constant feature is centred, never divided by its std 0
        scale = np.where(const, 1.0, 1.0 / np.where(const, 1.0, sigma))
        return Transform(kind="zscore", offset=-mu * scale, scale=scale, penalty_space=space)
    augment = absorbs_bias(cfg)  # the constant feature is whitened with the inputs: inside z
    C = None
    if second_moment_aug is not None:
        C = second_moment_aug if augment else second_moment_aug[:d, :d]
    w = fit_whitening(
        X,
        eps=float(cfg.get("eps", 0.0)),
        ridge=float(cfg.get("ridge", 0.0)),
        drop_null_only=space == "input",
        rel_threshold=cfg.get("rel_threshold"),
        n_components=cfg.get("n_components"),
        explained_variance=cfg.get("explained_variance"),
        zca=bool(cfg.get("zca", False)),
        augment=augment,
        C=C,
    )
    if augment:
        A, c = np.ascontiguousarray(w.T[:, :d]), np.ascontiguousarray(w.T[:, d])
    else:
        A, c = w.T, np.zeros(w.T.shape[0])
    return Transform(
        kind="whiten",
        offset=c,
        matrix=A,
        absorbs_bias=augment,
        eigenvalues=w.eigenvalues,
        n_kept=w.n_kept,
        penalty_space=space,
    )
