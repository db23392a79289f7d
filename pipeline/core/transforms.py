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

Data of any array API library (torch, cupy, ...) is fitted and transformed with that library on
its device: a Transform's arrays are of the namespace it was fitted on, and applying it (or
mapping weights) moves them once to the namespace and device of the data; numpy data take
numpy's own calls. ``to_arrays`` is always numpy (files are ``.npz``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.core import linalg
from pipeline.core.backend import foreign_namespace, namespace, to_namespace
from pipeline.core.errors import DataError, OptionError
from pipeline.core.rows import AffineRows
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
    offset: Any  # c, shape (k,)
    scale: Any = None  # diag(A) for elementwise kinds (None with matrix None: A = I)
    matrix: Any = None  # dense A
    absorbs_bias: bool = False  # the constant feature is inside z: fit without an intercept
    eigenvalues: Any = None  # whiten: spectrum of the training second moment, descending
    n_kept: int | None = None  # whiten: eigen-directions kept
    # input: the penalty acts on W_x = Aᵀ W (P = A Aᵀ); transformed: on W
    penalty_space: str = PENALTY_SPACE

    def on(self, like: Any) -> Transform:
        """This transform with its arrays in the namespace and on the device of the array
        ``like`` (None: numpy on the host); itself when they already are."""
        xp_like, xp_self = foreign_namespace(like), foreign_namespace(self.offset)
        if xp_like is None and xp_self is None:
            return self
        fields = ("offset", "scale", "matrix", "eigenvalues")
        moved = {f: None if getattr(self, f) is None else to_namespace(getattr(self, f), like)
                 for f in fields}
        if all(moved[f] is getattr(self, f) for f in fields):
            return self
        return replace(self, **moved)

    def penalty_matrix(self) -> Any:
        """P of the penalty λ/2 tr(Wᵀ P W) on weights over z: A Aᵀ (``input``), None = I
        (``transformed``, ``none``); an array of the transform's namespace."""
        if self.penalty_space == "transformed" or (self.matrix is None and self.scale is None):
            return None
        xp = foreign_namespace(self.offset)
        if xp is not None:
            return self.A @ self.A.T
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
    def A(self) -> Any:
        """The dense (k, d) matrix of the map (built on demand for the diagonal kinds)."""
        if self.matrix is not None:
            return self.matrix
        xp = foreign_namespace(self.offset)
        if xp is not None:
            eye = xp.eye(self.n_features_in, dtype=xp.float64, device=self.offset.device)
            return eye if self.scale is None else eye * self.scale
        s = np.ones(self.n_features_in) if self.scale is None else self.scale
        return np.diag(s)

    @property
    def c(self) -> Any:
        return self.offset

    def apply(self, X: Any, out: Any = None) -> Any:
        """Z = X Aᵀ + cᵀ (rows are examples); ``none`` returns float64 ``X`` itself, uncopied.
        Z is of X's namespace, computed on X's device. ``out`` (numpy, elementwise kinds): Z is
        written there (may be X itself), the same operations."""
        xp = foreign_namespace(X)
        if xp is not None:
            return self.on(X)._apply_xp(xp, X)
        if foreign_namespace(self.offset) is not None:
            return self.on(None).apply(X, out)
        X = np.asarray(X, dtype=np.float64)
        self._check_inputs(X.ndim, X.shape)
        if self.matrix is not None:
            Z = X @ self.matrix.T
            Z += self.offset
            return Z
        if self.scale is None:
            if self.offset.any():
                return np.add(X, self.offset, out=out)
            if out is None or out is X:
                return X
            np.copyto(out, X)
            return out
        Z = np.multiply(X, self.scale, out=out)
        Z += self.offset
        return Z

    def _check_inputs(self, ndim: int, shape: tuple[int, ...]) -> None:
        if ndim != 2 or shape[1] != self.n_features_in:
            raise DataError(
                f"{self.kind} transform expects (n, {self.n_features_in}) inputs, got {shape}; "
                "apply it to data with the features it was fitted on"
            )

    def _apply_xp(self, xp: Any, X: Any) -> Any:
        """``apply`` with the namespace ``xp`` of X (the transform's arrays already in it)."""
        X = xp.asarray(X, dtype=xp.float64)
        self._check_inputs(X.ndim, tuple(X.shape))
        if self.matrix is not None:
            return X @ self.matrix.T + self.offset
        if self.scale is None:
            return X if not bool(xp.any(self.offset != 0)) else X + self.offset
        return X * self.scale + self.offset

    def _check_weights(self, rows: int, out: bool) -> None:
        if out and rows != self.n_features_out:
            raise DataError(
                f"weights have {rows} rows but the {self.kind} transform outputs "
                f"{self.n_features_out} features; use weights fitted on this prepared data"
            )
        if not out and rows != self.n_features_in:
            raise DataError(
                f"input weights have {rows} rows but the {self.kind} transform reads "
                f"{self.n_features_in} features; map weights of a model on these inputs"
            )

    def input_weights(self, W: Any, b: Any = 0.0) -> tuple[Any, Any]:
        """Weights of a linear model on z mapped to the inputs: W_x = Aᵀ W, b_x = cᵀ W + b (of
        W's namespace)."""
        xp = foreign_namespace(W)
        if xp is not None:
            return self.on(W)._input_weights_xp(xp, W, b)
        if foreign_namespace(self.offset) is not None:
            return self.on(None).input_weights(W, b)
        W = np.asarray(W, dtype=np.float64)
        self._check_weights(W.shape[0], out=True)
        if self.matrix is not None:
            W_x = self.matrix.T @ W
        elif self.scale is None:
            W_x = W.copy()
        else:
            W_x = self.scale.reshape((-1,) + (1,) * (W.ndim - 1)) * W
        b_x = self.offset @ W + (0.0 if b is None else b)
        return W_x, b_x

    def _input_weights_xp(self, xp: Any, W: Any, b: Any) -> tuple[Any, Any]:
        """``input_weights`` with the namespace ``xp`` of W (the transform's arrays in it)."""
        W = xp.asarray(W, dtype=xp.float64)
        self._check_weights(W.shape[0], out=True)
        if self.matrix is not None:
            W_x = self.matrix.T @ W
        elif self.scale is None:
            W_x = xp.asarray(W, copy=True)
        else:
            W_x = xp.reshape(self.scale, (-1,) + (1,) * (W.ndim - 1)) * W
        b = 0.0 if b is None else b
        return W_x, self.offset @ W + (b if isinstance(b, (int, float)) else to_namespace(b, W))

    def transformed_weights(self, W_x: Any, b_x: Any = 0.0) -> tuple[Any, Any]:
        """The inverse of ``input_weights``: W on z with Aᵀ W = W_x and cᵀ W + b = b_x (the same
        predictions); least squares when A drops directions. ``absorbs_bias``: [Aᵀ; cᵀ] W = [W_x;
        b_x], b = 0. Of W_x's namespace."""
        xp = foreign_namespace(W_x)
        if xp is not None:
            return self.on(W_x)._transformed_weights_xp(xp, W_x, b_x)
        if foreign_namespace(self.offset) is not None:
            return self.on(None).transformed_weights(W_x, b_x)
        W_x = np.asarray(W_x, dtype=np.float64)
        b_x = np.asarray(b_x, dtype=np.float64)
        self._check_weights(W_x.shape[0], out=False)
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

    def _transformed_weights_xp(self, xp: Any, W_x: Any, b_x: Any) -> tuple[Any, Any]:
        """``transformed_weights`` with the namespace ``xp`` of W_x (the transform's arrays in
        it); least squares by ``linalg.lstsq``."""
        W_x = xp.asarray(W_x, dtype=xp.float64)
        b_x = to_namespace(b_x, W_x)
        self._check_weights(W_x.shape[0], out=False)
        W2 = xp.reshape(W_x, (W_x.shape[0], -1))
        if self.absorbs_bias:
            M = xp.concat([self.A.T, self.offset[None, :]], axis=0)
            W = linalg.lstsq(M, xp.concat([W2, xp.reshape(b_x, (1, -1))], axis=0))
            return xp.reshape(W, (W.shape[0],) + tuple(W_x.shape[1:])), xp.zeros_like(b_x)
        if self.matrix is not None:
            W = xp.reshape(linalg.lstsq(self.matrix.T, W2), (-1,) + tuple(W_x.shape[1:]))
        elif self.scale is None:
            W = xp.asarray(W_x, copy=True)
        else:
            W = W_x / xp.reshape(self.scale, (-1,) + (1,) * (W_x.ndim - 1))
        return W, b_x - self.offset @ W

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays for ``np.savez`` (no pickles: strings are 0-d ``str`` arrays), from
        a transform of any namespace."""
        if foreign_namespace(self.offset) is not None:
            return self.on(None).to_arrays()
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
    if foreign_namespace(X_train) is not None:
        return _fit_preprocess_xp(cfg, X_train, second_moment_aug)
    streamed = isinstance(X_train, AffineRows)  # rows made on demand: stored pixels, finite
    X = X_train if streamed else np.asarray(X_train, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"training inputs have shape {X.shape}; need a non-empty (n, d) matrix")
    if not streamed and not np.isfinite(X).all():
        raise DataError("training inputs contain NaN or inf; clean the data before preprocessing")
    d = X.shape[1]
    name = cfg.get("name", "none")
    space = str(cfg.get("penalty_space", PENALTY_SPACE))
    if name == "none":
        return Transform(kind="none", offset=np.zeros(d), penalty_space=space)
    if name == "zscore":
        if streamed:  # over blocks of rows: the same statistics to rounding
            mu, sigma, const = X.column_stats()
        else:
            mu = X.mean(axis=0)
            sigma = X.std(axis=0)
            const = np.ptp(X, axis=0) == 0  # a constant feature is centred, never divided by 0
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


def _fit_preprocess_xp(cfg: Mapping[str, Any], X_train: Any, C_aug: Any) -> Transform:
    """``fit_preprocess`` for an array API (non-numpy) X: fitted with X's namespace on its
    device, the Transform's arrays of that namespace."""
    xp = namespace(X_train)
    X = xp.asarray(X_train, dtype=xp.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"training inputs have shape {tuple(X.shape)}; need a non-empty (n, d) "
                        "matrix")
    if not bool(xp.all(xp.isfinite(X))):
        raise DataError("training inputs contain NaN or inf; clean the data before preprocessing")
    d = X.shape[1]
    name = cfg.get("name", "none")
    space = str(cfg.get("penalty_space", PENALTY_SPACE))
    if name == "none":
        zeros = xp.zeros(d, dtype=xp.float64, device=X.device)
        return Transform(kind="none", offset=zeros, penalty_space=space)
    if name == "zscore":
        mu, sigma = xp.mean(X, axis=0), xp.std(X, axis=0)
        one = xp.ones_like(sigma)
        const = xp.max(X, axis=0) == xp.min(X, axis=0)  # centred, never divided by its std 0
        scale = xp.where(const, one, one / xp.where(const, one, sigma))
        return Transform(kind="zscore", offset=-mu * scale, scale=scale, penalty_space=space)
    augment = absorbs_bias(cfg)
    C = None
    if C_aug is not None:
        C = to_namespace(C_aug, X)
        C = C if augment else C[:d, :d]
    w = fit_whitening(
        X, eps=float(cfg.get("eps", 0.0)), ridge=float(cfg.get("ridge", 0.0)),
        drop_null_only=space == "input", rel_threshold=cfg.get("rel_threshold"),
        n_components=cfg.get("n_components"), explained_variance=cfg.get("explained_variance"),
        zca=bool(cfg.get("zca", False)), augment=augment, C=C,
    )
    if augment:
        A, c = w.T[:, :d], w.T[:, d]
    else:
        A, c = w.T, xp.zeros(w.T.shape[0], dtype=xp.float64, device=X.device)
    return Transform(kind="whiten", offset=c, matrix=A, absorbs_bias=augment,
                     eigenvalues=w.eigenvalues, n_kept=w.n_kept, penalty_space=space)
