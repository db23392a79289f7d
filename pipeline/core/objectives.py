"""Objectives of the linear models: value, gradient, Hessian-vector product and dense Hessian.

Every model is a generalized linear model on the linear predictor ``Z = X W + 1 bᵀ`` (``Z`` of
shape ``(n, c)``; ``c = 1`` for the scalar models) with mean loss over the ``n`` examples and a
(generalized Tikhonov) L2 penalty on the weights only (the bias is not penalized)::

    f(w) = (1/n) Σ_i ℓ(y_i, z_i) + λ/2 tr(Wᵀ P W)        (P = I unless a penalty matrix is given)

so that, with ``X̃ = [X, 1]`` and ``D = ∂²ℓ/∂z²`` per example,
``∇f = (1/n) X̃ᵀ ∂ℓ/∂Z + λ [P W; 0]`` and ``∇²f v = (1/n) X̃ᵀ (D · X̃ V) + λ [P V; 0]``.
With inputs z = A x + c and P = A Aᵀ the penalty is λ/2 ‖Aᵀ W‖², the ordinary ridge penalty on the
input-space weights: preprocessing is then a change of coordinates of one and the same objective.

The flat parameter vector ``w`` is the row-major ravel of the ``(d [+1], c)`` matrix ``[W; bᵀ]``:
``w = [W.ravel(), b]`` — for the scalar models simply ``[w_1..w_d, b]``.  Design after
scikit-learn's ``sklearn/linear_model/_linear_loss.py`` (one object: loss, gradient, HVP).

Features that are zero in every training example (MNIST's border pixels) are dropped from the
matrix products; their weights only see the penalty, which the code adds exactly, so the results
are identical to the products with the full matrix, only cheaper.

Arrays of any array-API library work: the objective computes in the namespace of X (``self.xp``,
``pipeline.core.backend.namespace``) on X's device; values are Python floats, every returned array
is of that namespace. numpy keeps its own calls (scipy's expit, LAPACK, the row-blocked products),
so its results do not depend on this.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import array_api_compat
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg as sla
from scipy import sparse
from scipy.linalg import lapack
from scipy.special import expit, log_expit
from threadpoolctl import threadpool_info, threadpool_limits

from pipeline.core.backend import NUMPY_XP, is_numpy, namespace, to_numpy
from pipeline.core.errors import ConfigError, DataError, NumericalError, OptionError, worded
from pipeline.core.linalg import (  # largest_eigenvalue, top_eigenvalue: re-exported here
    SingularMatrixError,
    cholesky_lower,
    largest_eigenvalue,
    top_eigenvalue,
)
from pipeline.core.rows import AffineRows, compact_columns, row_blocks

DTYPES = {"float64": np.float64, "float32": np.float32}
INITS = ("zeros", "random", "saturated")  # starting points of LinearModelObjective.init
# A dense Hessian of this many parameters takes 8·p² bytes (7850 = MNIST softmax: 493 MB).
DENSE_HESSIAN_MAX_PARAMS = 8000
# rows of X̃ per block of a Hessian-vector product: a block (≈ 6 MB of float32 MNIST) stays in cache
# between its forward and backward product, so each product reads X once from memory (≈ 1.6× faster
# on MNIST)
HVP_ROW_BLOCK = 2048
# rows of X̃ per block of a fused (f, ∇f) pass on numpy: Z_B = X̃_B W, ∂ℓ/∂Z_B and X̃_Bᵀ ∂ℓ/∂Z_B
# while X̃_B (512 × 785 float64 = 3.2 MB) is in cache, so each gradient reads X once (full MNIST,
# 2 threads: 52 ms against 67 ms for the two whole-matrix products). Smaller objectives take the
# whole-matrix path: their values and gradients are the same bits as before the blocking.
FUSED_ROW_BLOCK = 512
# sup_z |∂²/∂z² ½(σ(z) − y)²| for y ∈ {0, 1}: with s = σ(z), ℓ'' = s²(1−s)(2−3s) (y = 0, the
# case y = 1 is its mirror image); its extrema are at the roots of 12s² − 15s + 4 = 0.
_S_CRIT = ((15.0 - np.sqrt(33.0)) / 24.0, (15.0 + np.sqrt(33.0)) / 24.0)
MSE_LOGISTIC_CURVATURE = float(max(abs(s * s * (1 - s) * (2 - 3 * s)) for s in _S_CRIT))

FloatArray = NDArray[np.floating[Any]]


def _as_dtype(dtype: Any) -> type[np.floating[Any]]:
    """Normalize a dtype spec ('float64', np.float32, ...) to np.float64 or np.float32."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ConfigError(f"dtype={dt} is not supported; use float64 or float32")
    return dt.type  # type: ignore[return-value]


def logsumexp_rows(Z: FloatArray) -> FloatArray:
    """Row-wise log Σ_k exp(z_k), stable: m + log Σ exp(z − m) with m = max_k z_k."""
    if not isinstance(Z, np.ndarray):
        xp = namespace(Z)
        m = xp.max(Z, axis=1, keepdims=True)
        return (m + xp.log(xp.sum(xp.exp(Z - m), axis=1, keepdims=True)))[:, 0]
    m = Z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]


def softmax_rows(Z: FloatArray) -> FloatArray:
    """Row-wise softmax p_k = exp(z_k − lse(z)), stable for logits of any magnitude."""
    if not isinstance(Z, np.ndarray):
        xp = namespace(Z)
        E = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
        return E / xp.sum(E, axis=1, keepdims=True)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E


class Objective:
    """A smooth objective f: R^p → R (the interface the optimizers use).

    Subclasses implement ``value_grad`` and ``hessian`` (or ``hvp``); the rest has defaults.
    ``gauge_directions()`` lists exact flat directions (zero curvature, gradient orthogonal to
    them), which Newton's method must leave alone. ``xp`` is the array namespace it computes in
    (numpy's by default): its arrays are of that namespace, its values Python floats.
    """

    n_params: int
    dtype: type[np.floating[Any]] = np.float64
    xp: Any = NUMPY_XP
    device: Any = None  # the device of the objective's arrays (None: the namespace's default)

    def value(self, w: ArrayLike) -> float:
        """f(w)."""
        return self.value_grad(w)[0]

    def grad(self, w: ArrayLike) -> FloatArray:
        """∇f(w)."""
        return self.value_grad(w)[1]

    def value_grad(self, w: ArrayLike) -> tuple[float, FloatArray]:
        """(f(w), ∇f(w))."""
        raise NotImplementedError

    def hvp(self, w: ArrayLike, v: ArrayLike) -> FloatArray:
        """∇²f(w) v (default: from the dense Hessian)."""
        if is_numpy(self.xp):
            return self.hessian(w) @ np.asarray(v, dtype=self.dtype)
        return self.hessian(w) @ self._check_w(v, "v")

    def hessian(self, w: ArrayLike) -> FloatArray:
        """The dense Hessian ∇²f(w), shape (p, p)."""
        raise NotImplementedError

    def gauge_directions(self) -> FloatArray:
        """Orthonormal rows spanning directions along which f is exactly constant (shape (k, p))."""
        return self._from_host(np.zeros((0, self.n_params), dtype=self.dtype))

    def lipschitz(self, w: ArrayLike | None = None, method: str = "lanczos") -> float:
        """Smoothness constant L ≥ λ_max(∇²f); default: Lanczos on HVPs at w (a local value)."""
        w = self._from_host(np.zeros(self.n_params, dtype=self.dtype)) if w is None else w
        like = None if is_numpy(self.xp) else self._check_w(w)
        return top_eigenvalue(lambda v: self.hvp(w, v), self.n_params, self.dtype, like=like)

    def _check_w(self, w: ArrayLike, name: str = "w") -> FloatArray:
        if is_numpy(self.xp):
            arr = np.asarray(w, dtype=self.dtype)
        else:
            arr = self.xp.asarray(w, dtype=_xdtype(self.xp, self.dtype), device=self.device)
        if tuple(arr.shape) != (self.n_params,):
            raise ConfigError(
                f"{name} has shape {tuple(arr.shape)}, expected ({self.n_params},) = the flat "
                "parameter vector; use objective.init(...) to build one"
            )
        return arr

    def _from_host(self, a: NDArray[Any]) -> Any:
        """A host numpy array as an array of this objective's namespace, on its device."""
        return a if is_numpy(self.xp) else self.xp.asarray(a, device=self.device)


class _Smoothness:
    """Smoothness constants of a LinearModelObjective: L = sup‖ℓ''‖ · λ_max((1/n) X̃ᵀX̃) + λ
    (a bound valid everywhere), λ_max(∇²f(w)) by Lanczos, and the worst single example's L_i."""

    def input_second_moment_max(self) -> float:
        """λ_max((1/n) X̃ᵀX̃), the largest eigenvalue of the (augmented) input second-moment
        matrix."""
        if self._lam_max_cov is None:
            k = self._X.shape[1] + int(self.fit_intercept)
            if k <= 2000:
                self._lam_max_cov = largest_eigenvalue(self._gram() / self.n)
            else:
                self._lam_max_cov = top_eigenvalue(_second_moment_mv(self), k, like=self._like())
        return self._lam_max_cov

    def _gram(self) -> FloatArray:
        """X̃ᵀX̃ over the active columns (and the intercept's), float64. A numpy X past
        FUSED_ROW_BLOCK rows is not copied into X̃ = [X, 1] (376 MB for MNIST): the blocks XᵀX,
        Xᵀ1 and n, the same matrix to rounding; smaller ones keep the product of X̃ and its bits."""
        if not (is_numpy(self.xp) and self.fit_intercept and self.n > FUSED_ROW_BLOCK):
            Xt = _float64(self._Xtilde_full())
            return Xt.T @ Xt
        X = _float64(self._X)
        k = X.shape[1]
        G = np.empty((k + 1, k + 1))
        G[:k, :k] = X.T @ X
        G[k, :k] = G[:k, k] = X.sum(axis=0, dtype=np.float64)
        G[k, k] = self.n
        return G

    def _like(self) -> Any:
        """An array of the objective's backend for top_eigenvalue (None for numpy)."""
        return None if is_numpy(self.xp) else self._X

    def bound_matrix_max(self) -> float:
        """λ_max(b · (1/n) X̃ᵀX̃ + λ [P 0; 0 0]) with b = sup‖ℓ''‖: L for a penalty matrix P (exact
        for b = 1)."""
        rows = self._scatter_rows()
        b, lam = self.curvature_bound, self.l2
        # dense: features without data (inactive, e.g. null directions kept by
        if self.n_rows <= 2000:
            # ridge whitening) have zero Gram rows, but λP still couples them to the others
            if is_numpy(self.xp):
                M = np.zeros((self.n_rows, self.n_rows))
                M[np.ix_(rows, rows)] = b * self._gram() / self.n
            else:
                M = self._scatter(b * self._gram() / self.n, (0, 1))
            M[: self.d, : self.d] += lam * self.P  # type: ignore[operator]
            return largest_eigenvalue(M)
        return top_eigenvalue(_bound_mv(self), self.n_rows, like=self._like())

    def lipschitz(self, w: ArrayLike | None = None, method: str = "bound") -> float:
        """Smoothness constant L of ∇f.

        ``'bound'`` (valid everywhere, what GD with lr = 1/L needs): sup‖ℓ''‖ · λ_max((1/n) X̃ᵀX̃) +
        λ
        with sup‖ℓ''‖ = 1 (linear), ¼ (logistic), ½ (softmax), 0.077 (logistic with MSE);
        ``'lanczos'``: λ_max(∇²f(w)) at w (default 0) by Lanczos on Hessian-vector products.
        """
        if method == "bound":
            if self.P is None or not self.l2:
                return self.curvature_bound * self.input_second_moment_max() + self.l2
            return self.bound_matrix_max()
        if method == "lanczos":
            w = (self._from_host(np.zeros(self.n_params, dtype=self.dtype)) if w is None
                 else self._check_w(w))
            op = self.hess_operator(w)
            return top_eigenvalue(op.matvec, self.n_params, self.dtype,
                                  like=None if is_numpy(self.xp) else w)
        raise ConfigError(f"lipschitz method={method!r} is unknown; use 'bound' or 'lanczos'")

    def lipschitz_max(self) -> float:
        """max_i L_i = sup‖ℓ''‖ · max_i ‖x̃_i‖² + λ, the worst smoothness of one example's loss."""
        if isinstance(self._X, AffineRows):
            top = self._X.square_rows_max()
        elif is_numpy(self.xp):
            top = float(np.einsum("ij,ij->i", self._X, self._X, dtype=np.float64).max())
        else:
            top = float(self.xp.max(self.xp.sum(self._X * self._X, axis=1, dtype=self.xp.float64)))
        return self.curvature_bound * (top + float(self.fit_intercept)) + self.l2


class LinearModelObjective(_Smoothness, Objective):
    """Mean loss of a linear model on (X, y) plus λ/2 ‖W‖² (bias not penalized).

    Subclasses define the per-example loss on the linear predictor Z (n, c):
    ``_loss_dz(Z, y=None) -> (Σ_i ℓ_i, ∂ℓ/∂Z)`` (labels y of the rows of Z, default all),
    ``_curvature(Z)`` and ``_curv_apply(curv, U)`` (= D·U).
    """

    model: str = ""
    curvature_bound: float = 1.0  # sup ‖∂²ℓ/∂z²‖, so that L ≤ bound · λ_max((1/n) X̃ᵀX̃) + λ
    # the loss is unchanged by one vector added to every class's weights (softmax: W + v1ᵀ)
    class_shift_invariant: bool = False

    def __init__(self, X: ArrayLike, y: ArrayLike, *, l2: float = 0.0, fit_intercept: bool = True,
                 n_classes: int | None = None, dtype: Any = np.float64,
                 penalty: ArrayLike | None = None, copy_X: bool = True) -> None:
        self.dtype = _as_dtype(dtype)
        X = _check_X(X)
        rows = isinstance(X, AffineRows)  # numpy rows made float64 block by block (core.rows)
        self.xp = namespace(X.P if rows else X)
        self.device = array_api_compat.device(X.P if rows else X)
        self.n, self.d = X.shape
        self.l2 = _check_l2(l2)
        self.P = _check_penalty(penalty, self.d, self.xp, self.device)  # (d, d) or None = I
        self._P_null: FloatArray | None = None
        self._P_diag = None if self.P is None else _diagonal(self.P)
        self.fit_intercept = bool(fit_intercept)
        self.c = self._n_outputs(n_classes)
        self.y = self._prepare_y(y, self.n)
        if rows:
            active = X.active_columns()
        elif copy_X and self.l2 > 0 and self.P is None and _compactable(X, self.dtype, owned=False):
            # no copy of the caller's X only to drop its all-zero columns: with λ > 0 their
            # weights just shrink (gradient λw, curvature λ), at ~k/d more flops per pass
            active = np.arange(self.d)
        else:
            active = _active_columns(X)  # host int array
        self._all_active = active.size == self.d
        self._active = active
        if rows:
            self._X = X if self._all_active else X.columns(active, in_place=not copy_X)
            if self.dtype != np.float64:  # a float32 objective holds its rows (4 bytes a pixel)
                self._X = self._X.astype(self.dtype)
        elif not self._all_active and not copy_X and _compactable(X, self.dtype):
            self._X = compact_columns(X, active)  # X's own buffer: the caller gave it up
        elif not self._all_active:
            self._X = _take_columns(X, active, self.dtype)
        elif is_numpy(self.xp):
            self._X = np.ascontiguousarray(X, dtype=self.dtype)
        else:
            self._X = self.xp.astype(X, _xdtype(self.xp, self.dtype), copy=False)
        self._X32: FloatArray | None = None
        self._X32sq: FloatArray | None = None
        self._Xsq: FloatArray | None = None
        self.n_rows = self.d + int(self.fit_intercept)  # rows of the coefficient matrix [W; bᵀ]
        self.n_params = self.n_rows * self.c
        self._lam_max_cov: float | None = None
        # non-numpy: index arrays on the device (the active features; each row of [W; bᵀ]'s
        # position in [W_active; bᵀ], or the zero row past its end) for gathers instead of scatters
        self._xactive = self._gather = None
        if not is_numpy(self.xp):
            self._xactive = self._from_host(active)
            self._gather = self._from_host(_gather_index(self._scatter_rows(), self.n_rows))

    def _as_input(self, a: ArrayLike) -> Any:
        """``a`` (labels, targets) as an array of the objective's namespace, on its device."""
        return np.asarray(a) if is_numpy(self.xp) else self.xp.asarray(a, device=self.device)

    # ----- hooks per model --------------------------------------------------------------------
    def _n_outputs(self, n_classes: int | None) -> int:
        return 1

    def _prepare_y(self, y: ArrayLike, n: int) -> FloatArray:
        raise NotImplementedError

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        raise NotImplementedError

    def _loss_sum(self, Z: FloatArray) -> float:
        return self._loss_dz(Z)[0]

    def _curvature(self, Z: FloatArray) -> FloatArray:
        raise NotImplementedError

    def _curv_apply(self, curv: FloatArray, U: FloatArray) -> FloatArray:
        return curv * U

    # ----- parameter layout -------------------------------------------------------------------
    def unpack(self, w: ArrayLike) -> tuple[FloatArray, FloatArray | float]:
        """Split the flat w into (W, b): W (d, c) for softmax, (d,) otherwise; b = 0 without
        intercept."""
        if not is_numpy(self.xp):
            M = self.xp.reshape(self._check_w(w), (self.n_rows, self.c))
            b = M[self.d, :] if self.fit_intercept else self.xp.zeros_like(M[0, :])
            return (M[: self.d, 0], float(b[0])) if self.c == 1 else (M[: self.d, :], b)
        M = self._check_w(w).reshape(self.n_rows, self.c)
        W, b = M[: self.d], (M[self.d] if self.fit_intercept else np.zeros(self.c, self.dtype))
        if self.c == 1:
            return W[:, 0].copy(), float(b[0])
        return W.copy(), b.copy()

    def pack(self, W: ArrayLike, b: ArrayLike | float = 0.0) -> FloatArray:
        """Inverse of unpack: the flat parameter vector of (W, b)."""
        if not is_numpy(self.xp):
            return _pack_xp(self, W, b)
        W = np.asarray(W, dtype=self.dtype).reshape(self.d, self.c)
        if not self.fit_intercept:
            return W.ravel().copy()
        b = np.broadcast_to(np.asarray(b, dtype=self.dtype), (self.c,))
        return np.vstack([W, b[None, :]]).ravel()

    def _coef(self, w: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        """(W restricted to the active features, b or None) as views into w."""
        if not is_numpy(self.xp):
            M = self.xp.reshape(w, (self.n_rows, self.c))
            W = M[: self.d, :] if self._all_active else self.xp.take(M, self._xactive, axis=0)
            return W, (M[self.d, :] if self.fit_intercept else None)
        M = w.reshape(self.n_rows, self.c)
        W = M[: self.d]
        if not self._all_active:
            W = W[self._active]
        return W, (M[self.d] if self.fit_intercept else None)

    # ----- products with X̃ -------------------------------------------------------------------
    def margins(self, w: ArrayLike) -> FloatArray:
        """The linear predictor Z = X W + 1 bᵀ, shape (n, c)."""
        return self._rows_margins(self._X, *self._coef(self._check_w(w)))

    @staticmethod
    def _rows_margins(X: FloatArray, W: FloatArray, b: FloatArray | None) -> FloatArray:
        """Z = X W + 1 bᵀ for rows X of the objective's matrix (W, b from ``_coef``)."""
        Z = X @ W
        if b is not None:
            Z += b
        return Z

    def _backward(self, R: FloatArray, scale: float, X: FloatArray | None = None) -> FloatArray:
        """The flat vector scale · X̃ᵀ R (zero rows for the inactive features)."""
        X = self._X if X is None else X
        if not is_numpy(self.xp):
            bias = self.xp.sum(R, axis=0, dtype=self.xp.float64) if self.fit_intercept else None
            return self._place(X.T @ R, bias, scale)
        return self._place(
            X.T @ R, R.sum(axis=0, dtype=np.float64) if self.fit_intercept else None, scale
        )

    def _place(self, G: FloatArray, bias: FloatArray | None, scale: float) -> FloatArray:
        """scale · [G; bias] as a flat parameter vector (zero rows for the inactive features)."""
        if not is_numpy(self.xp):
            return _place_xp(self, G, bias, scale)
        out = np.zeros((self.n_rows, self.c), dtype=G.dtype)
        G *= scale
        if self._all_active:
            out[: self.d] = G
        else:
            out[self._active] = G
        if bias is not None:
            out[self.d] = bias * scale
        return out.ravel()

    def _penalty_grad(self, w: FloatArray) -> FloatArray:
        """λ P W (λ W when P = I) as a (d, c) array."""
        if not is_numpy(self.xp):
            W = self.xp.reshape(w, (self.n_rows, self.c))[: self.d, :]
            return self.l2 * W if self.P is None else self.l2 * (self.P @ _cast(W, np.float64))
        W = np.asarray(w).reshape(self.n_rows, self.c)[: self.d]
        return self.l2 * W if self.P is None else self.l2 * (self.P @ W.astype(np.float64))

    def _add_penalty(self, g: FloatArray, w: FloatArray) -> FloatArray:
        """g + λ [P W; 0] (in place for numpy)."""
        if self.l2:
            return self._add_top(g, self._penalty_grad(w))
        return g

    def _add_top(self, g: FloatArray, top: FloatArray) -> FloatArray:
        """g + [top; 0] for a flat g and a (d, c) block ``top`` (in place for numpy)."""
        if is_numpy(self.xp):
            g.reshape(self.n_rows, self.c)[: self.d] += top
            return g
        xp = self.xp
        M = xp.reshape(g, (self.n_rows, self.c))
        head = xp.astype(M[: self.d, :] + top, M.dtype)
        return xp.reshape(xp.concat([head, M[self.d:, :]], axis=0), (-1,))

    def _penalty(self, w: FloatArray) -> float:
        if not self.l2:
            return 0.0
        if not is_numpy(self.xp):
            return _penalty_xp(self, w)
        W = w.reshape(self.n_rows, self.c)[: self.d]
        if self.P is None:
            return 0.5 * self.l2 * float(np.dot(W.ravel(), W.ravel()))
        W64 = W.astype(np.float64)
        return 0.5 * self.l2 * float(np.sum(W64 * (self.P @ W64)))

    def penalty_matrix(self) -> FloatArray:
        """The (d, d) matrix P of the penalty λ/2 tr(Wᵀ P W) (I when none was given)."""
        if not is_numpy(self.xp):
            eye = self.xp.eye(self.d, dtype=self.xp.float64, device=self.device)
            return eye if self.P is None else self.xp.asarray(self.P, copy=True)
        return np.eye(self.d) if self.P is None else self.P.copy()

    # ----- objective --------------------------------------------------------------------------
    def value_from_margins(self, w: FloatArray, Z: FloatArray) -> float:
        """f(w) given Z = margins(w) (no pass over X)."""
        return self._loss_sum(Z) / self.n + self._penalty(w)

    def value_grad_from_margins(self, w: FloatArray, Z: FloatArray) -> tuple[float, FloatArray]:
        """(f(w), ∇f(w)) given Z = margins(w): one pass over X for ∇f = (1/n) X̃ᵀ ∂ℓ/∂Z + λ[W;
        0]."""
        loss, dZ = self._loss_dz(Z)
        g = self._backward(dZ, 1.0 / self.n)
        g = self._add_penalty(g, w)
        return loss / self.n + self._penalty(w), g

    def batch_grad(self, w: FloatArray, rows: NDArray[np.intp]) -> FloatArray:
        """Minibatch gradient ∇f_B(w) = (1/|B|) X̃_Bᵀ ∂ℓ/∂Z_B + λ[W; 0] over the examples
        ``rows``."""
        W, b = self._coef(w)
        if is_numpy(self.xp):
            Xb, yb = self._X[rows], self.y[rows]
        else:
            idx = self.xp.asarray(rows, device=self.device)
            Xb, yb = self.xp.take(self._X, idx, axis=0), self.xp.take(self.y, idx, axis=0)
        _, dZ = self._loss_dz(self._rows_margins(Xb, W, b), yb)
        g = self._backward(dZ, 1.0 / rows.shape[0], X=Xb)
        return self._add_penalty(g, w)

    def value(self, w: ArrayLike) -> float:
        """f(w) = (1/n) Σ ℓ(y_i, z_i) + λ/2 ‖W‖²."""
        w = self._check_w(w)
        return self.value_from_margins(w, self.margins(w))

    def value_grad(self, w: ArrayLike) -> tuple[float, FloatArray]:
        """(f(w), ∇f(w)) with ∇f = (1/n) X̃ᵀ ∂ℓ/∂Z + λ [W; 0]."""
        w = self._check_w(w)
        if is_numpy(self.xp) and self.n > FUSED_ROW_BLOCK:
            return self._value_grad_fused(w)
        return self.value_grad_from_margins(w, self.margins(w))

    def _value_grad_fused(self, w: FloatArray) -> tuple[float, FloatArray]:
        """(f(w), ∇f(w)) in one pass over X̃: Z_B = X̃_B W, Σ_B ℓ and X̃_Bᵀ ∂ℓ/∂Z_B per block B of
        FUSED_ROW_BLOCK rows, summed over the blocks (numpy)."""
        W, b = self._coef(w)
        loss, G, bias = 0.0, np.zeros((self._X.shape[1], self.c), dtype=self._X.dtype), None
        for s, Xb in row_blocks(self._X, FUSED_ROW_BLOCK):
            part, dZ = self._loss_dz(self._rows_margins(Xb, W, b), self.y[s: s + FUSED_ROW_BLOCK])
            loss += part
            G += Xb.T @ dZ
            if self.fit_intercept:
                col = dZ.sum(axis=0, dtype=np.float64)
                bias = col if bias is None else bias + col
        g = self._add_penalty(self._place(G, bias, 1.0 / self.n), w)
        return loss / self.n + self._penalty(w), g

    def hess_operator(self, w: ArrayLike, Z: FloatArray | None = None,
                      precision: str | None = None) -> HessianOperator:
        """v ↦ ∇²f(w) v with the curvature at w cached (Z = margins(w) if given).

        ``precision='float32'`` does the two products with X̃ in single precision (a float32 copy
        of X made once) — about twice as fast, with ~1e-7 relative error, fine for inner CG solves.
        """
        w = self._check_w(w)
        Z = self.margins(w) if Z is None else Z
        low = precision == "float32" and self.dtype == np.float64
        curv = self._curvature(Z)
        if low:
            if self._X32 is None:
                self._X32 = _cast(self._X, np.float32)
            return HessianOperator(self, _cast(curv, np.float32), self._X32, np.float32)
        return HessianOperator(self, curv, self._X, self.dtype)

    def hvp(self, w: ArrayLike, v: ArrayLike) -> FloatArray:
        """∇²f(w) v = (1/n) X̃ᵀ (D · X̃ V) + λ [V; 0]."""
        return self.hess_operator(w).matvec(self._check_w(v, "v"))

    def hessian(self, w: ArrayLike) -> FloatArray:
        """Dense ∇²f(w) = (1/n) X̃ᵀ D X̃ + λ (P ⊗ I_c) on the weights, shape (p, p)."""
        w = self._check_w(w)
        if self.n_params > DENSE_HESSIAN_MAX_PARAMS:
            raise NumericalError(worded(
                "dense Hessian of {p} parameters needs {gb:.1f} GB; use {solver}=newton_cg "
                "(Hessian-vector products) instead of newton", p=self.n_params,
                gb=8 * self.n_params**2 / 1e9))
        curv = self._curvature(self.margins(w))
        H = self._dense_hessian(curv)
        if self.l2:
            k = self.d * self.c
            if not is_numpy(self.xp):
                H[:k, :k] += _penalty_block_xp(self)
            elif self.P is None:
                idx = np.arange(k)
                H[idx, idx] += self.l2
            else:
                H[:k, :k] += self.l2 * np.kron(self.P, np.eye(self.c)).astype(self.dtype)
        return H

    def _Xtilde_full(self) -> FloatArray:
        """[X_active, 1] in the storage dtype (for dense Hessians of small problems)."""
        if not is_numpy(self.xp):
            if not self.fit_intercept:
                return self._X
            ones = self.xp.ones((self.n, 1), dtype=self._X.dtype, device=self.device)
            return self.xp.concat([self._X, ones], axis=1)
        X = np.asarray(self._X) if isinstance(self._X, AffineRows) else self._X
        cols = [X] + ([np.ones((self.n, 1), self.dtype)] if self.fit_intercept else [])
        return np.hstack(cols) if len(cols) > 1 else X

    def _scatter_rows(self) -> NDArray[np.intp]:
        rows = self._active if not self._all_active else np.arange(self.d)
        if self.fit_intercept:
            rows = np.append(rows, self.d)
        return rows

    def _dense_hessian(self, curv: FloatArray) -> FloatArray:
        Xt = self._Xtilde_full()
        Hs = Xt.T @ (curv[:, :1] * Xt) / self.n
        if not is_numpy(self.xp):
            return self._scatter(Hs, (0, 1))
        H = np.zeros((self.n_rows, self.n_rows), dtype=self.dtype)
        r = self._scatter_rows()
        H[np.ix_(r, r)] = Hs
        return H

    def _scatter(self, A: FloatArray, axes: tuple[int, ...]) -> FloatArray:
        """Non-numpy: A's rows of [W_active; bᵀ] along ``axes`` placed at their rows of [W; bᵀ]
        (zeros at the inactive features), by a gather from A padded with one zero slice."""
        if self._all_active:
            return A
        for axis in axes:
            A = _scatter_axis(self.xp, A, self._gather, axis)
        return A

    def diag_hessian(self, curv: FloatArray, low_precision: bool = False) -> FloatArray:
        """diag ∇²f (the Jacobi preconditioner): (1/n) (X̃∘X̃)ᵀ diag-curvature + λ."""
        if low_precision and self.dtype == np.float64:
            if self._X32sq is None:
                X32 = self._X32 if self._X32 is not None else _cast(self._X, np.float32)
                self._X32sq = X32 * X32
            Xsq = self._X32sq
            dc = _cast(self._diag_curv(curv), np.float32)
        else:
            if self._Xsq is None:
                X = self._X
                self._Xsq = X.squares() if isinstance(X, AffineRows) else X * X
            Xsq, dc = self._Xsq, self._diag_curv(curv)
        dg = _cast(self._backward(dc, 1.0 / self.n, X=Xsq), np.float64)
        pdiag = 1.0 if self._P_diag is None else self._P_diag[:, None]
        if is_numpy(self.xp):
            dg.reshape(self.n_rows, self.c)[: self.d] += self.l2 * pdiag
            return dg
        top = self.xp.zeros((self.d, self.c), dtype=self.xp.float64, device=self.device)
        return self._add_top(dg, top + self.l2 * pdiag)

    def _diag_curv(self, curv: FloatArray) -> FloatArray:
        return curv

    # ----- initialization and prediction ------------------------------------------------------
    def init(self, kind: str = "zeros", scale: float = 1.0,
             rng: np.random.Generator | int | None = None) -> FloatArray:
        """Starting point: 'zeros'; 'random' (W ~ N(0, scale²/d), b = 0); 'saturated' — the
        lecture's bad start: a random direction scaled so the median |z| over the training
        examples is 10·scale (σ'(10) ≈ 4.5e-5: gradients attenuated)."""
        rng = np.random.default_rng(rng)
        if kind == "zeros":
            return self._from_host(np.zeros(self.n_params, dtype=self.dtype))
        if kind not in INITS:
            raise ConfigError(f"init={kind!r} is unknown; use zeros, random or saturated")
        if not (np.isfinite(scale) and scale > 0):
            raise ConfigError(f"init_scale={scale} must be a positive number")
        W = rng.standard_normal((self.d, self.c)) * (scale / np.sqrt(self.d))
        w = self.pack(W, 0.0)
        if kind == "saturated":
            med = float(np.median(np.abs(to_numpy(self.margins(w)))))
            if med <= 0:
                raise NumericalError("saturated init: all margins are zero (X is all zeros?); use "
                                     "init=random")
            w = w * (10.0 * scale / med)
        return _cast(w, self.dtype)

    def predict_margins(self, X: ArrayLike, w: ArrayLike) -> FloatArray:
        """Z = X W + 1 bᵀ for new inputs X (n', d)."""
        X = _check_X(X)
        if X.shape[1] != self.d:
            raise DataError(f"X has {X.shape[1]} features but the model has {self.d}; "
                            "apply the same preprocessing as for training")
        if not is_numpy(self.xp):
            xp = self.xp
            M = xp.reshape(self._check_w(w), (self.n_rows, self.c))
            X = xp.asarray(X, dtype=_xdtype(xp, self.dtype), device=self.device)
            Z = X @ M[: self.d, :]
            return Z + M[self.d, :] if self.fit_intercept else Z
        M = self._check_w(w).reshape(self.n_rows, self.c)
        Z = X.astype(self.dtype, copy=False) @ M[: self.d]
        if self.fit_intercept:
            Z += M[self.d]
        return Z

    def predict(self, X: ArrayLike, w: ArrayLike) -> NDArray[Any]:
        """Predictions: class indices (int64) for classifiers, real values for regression."""
        return self._predictions(self.predict_margins(X, w))

    def predict_train(self, w: ArrayLike) -> NDArray[Any]:
        """Predictions on the training examples, from the objective's own copy of them (X̃w)."""
        return self._predictions(self.margins(w))

    def _predictions(self, Z: FloatArray) -> NDArray[Any]:
        """Predictions from margins Z (n, c)."""
        raise NotImplementedError

    def predict_loss(self, X: ArrayLike, y: ArrayLike, w: ArrayLike) -> float:
        """Mean loss (1/n') Σ ℓ(y_i, z_i) on (X, y), without the penalty."""
        Z = self.predict_margins(X, w)
        other = type(self).__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.y = self._prepare_y(y, Z.shape[0])
        if other.y.shape[0] != Z.shape[0]:
            raise DataError(f"X has {Z.shape[0]} rows but y has {other.y.shape[0]}; pass matching "
                            "arrays")
        return other._loss_sum(Z) / Z.shape[0]


class HessianOperator:
    """v ↦ ∇²f(w) v with the per-example curvature D at w fixed (cheap repeated products)."""

    def __init__(self, obj: LinearModelObjective, curv: FloatArray, X: FloatArray,
                 dtype: Any) -> None:
        self.obj, self.curv, self.X, self.dtype = obj, curv, X, dtype
        self.shape = (obj.n_params, obj.n_params)

    def matvec(self, v: FloatArray) -> FloatArray:
        """∇²f(w) v = (1/n) X̃ᵀ (D · (X̃ V)) + λ [V; 0], in blocks of rows of X̃ (one read of X per
        product; one product per side on other backends)."""
        o = self.obj
        if not is_numpy(o.xp):
            return _matvec_xp(self, v)
        vv = np.asarray(v, dtype=self.dtype)
        V, b = o._coef(vv)
        G = np.zeros((V.shape[0], o.c), dtype=self.dtype)
        bias = np.zeros(o.c, dtype=np.float64) if b is not None else None
        # X̃_B V, then X̃_Bᵀ (D_B ·) while X̃_B is in cache
        for s, Xb in row_blocks(self.X, HVP_ROW_BLOCK):
            U = Xb @ V
            if b is not None:
                U += b
            R = o._curv_apply(self.curv[s: s + HVP_ROW_BLOCK], U)
            G += Xb.T @ R
            if bias is not None:
                bias += R.sum(axis=0, dtype=np.float64)
        out = o._place(G, bias, 1.0 / o.n).astype(o.dtype)
        if o.l2:
            out.reshape(o.n_rows, o.c)[: o.d] += o._penalty_grad(np.asarray(v, o.dtype))
        return out

    __call__ = matvec

    def diagonal(self) -> FloatArray:
        """diag ∇²f(w) (for a Jacobi preconditioner)."""
        return self.obj.diag_hessian(self.curv, low_precision=self.dtype == np.float32)

    def class_block_solver(self, rel_threshold: float = 1.0e-3,
                           max_rows: int | None = None) -> Callable[[FloatArray], FloatArray]:
        """r ↦ M⁻¹ r with M the class-diagonal blocks of ∇²f: M_k = (1/n) X̃ᵀ diag(d_k) X̃ + λ I_W,
        d_k = p_k(1 − p_k) (softmax) — the Hessian without the coupling between classes.

        Each block is a weighted Gram matrix (a syrk on √d_k·X̃) over the examples whose weight
        exceeds ``rel_threshold``·max d_k (the others add little), then Cholesky-factored."""
        o = self.obj
        if not is_numpy(o.xp):
            return _class_block_solver_xp(self, rel_threshold, max_rows)
        D = np.clip(o._diag_curv(self.curv), 0.0, None)
        X, scale, sel = self.X, 1.0 / o.n, None
        if max_rows is not None and max_rows < o.n:  # a fixed, evenly spread subsample of rows
            sel = np.linspace(0, o.n - 1, max_rows).astype(np.intp)
            D, scale = D[sel], 1.0 / max_rows
        k_act = X.shape[1]
        rows = o._scatter_rows()
        Minv = np.empty((o.c, rows.size, rows.size))  # (c, m, m)

        def build(classes: range) -> None:
            # the weighted rows √d_k·x̃_i gathered HVP_ROW_BLOCK at a time into one small buffer
            # per thread (a copy of every kept row per class: tens of MB of fresh memory)
            buf = np.empty((min(HVP_ROW_BLOCK, D.shape[0]), k_act), dtype=X.dtype)
            for k in classes:
                dk = D[:, k]
                keep = (
                    np.flatnonzero(dk > rel_threshold * float(dk.max()))
                    if dk.max() > 0
                    else np.arange(0)
                )
                sq = np.sqrt(dk[keep]).astype(X.dtype)
                idx = keep if sel is None else sel[keep]
                G = np.zeros((rows.size, rows.size), dtype=np.float64)
                for s in range(0, keep.size, HVP_ROW_BLOCK):
                    part = idx[s: s + HVP_ROW_BLOCK]  # valid rows: mode "clip" (no "raise" buffer)
                    Y = np.take(X, part, axis=0, out=buf[: part.size], mode="clip")
                    Y *= sq[s: s + HVP_ROW_BLOCK, None]
                    G[:k_act, :k_act] += Y.T @ Y
                    if o.fit_intercept:
                        G[:k_act, k_act] += Y.T @ sq[s: s + HVP_ROW_BLOCK]
                if o.fit_intercept:
                    G[k_act, :k_act] = G[:k_act, k_act]
                    G[k_act, k_act] = float(np.sum(dk[keep], dtype=np.float64))
                G *= scale
                if o.P is None:
                    G[np.arange(k_act), np.arange(k_act)] += o.l2
                else:
                    G[:k_act, :k_act] += o.l2 * o.P[np.ix_(rows[:k_act], rows[:k_act])]
                Minv[k] = _ridged_inverse(G)

        # one BLAS thread per class, the classes spread over the BLAS thread budget: a ~10³ syrk
        # and Cholesky inverse gain little from threads inside one call (and spin-waiting BLAS
        # threads on a busy machine make it far slower), while the c classes are independent —
        # so the build scales with threads, and its bits do not depend on their number
        workers = min(o.c, _blas_threads())
        with threadpool_limits(limits=1):
            if workers <= 1:
                build(range(o.c))
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(build, [range(t, o.c, workers) for t in range(workers)]))
        inactive = np.setdiff1d(np.arange(o.d), rows)
        lam_inv = _inverse_penalty(o, inactive, 1.0)[:, None]

        def solve(r: FloatArray) -> FloatArray:
            R = r.reshape(o.n_rows, o.c)
            out = np.empty_like(R)
            out[rows] = np.matmul(Minv, R[rows].T[:, :, None])[:, :, 0].T
            out[inactive] = R[inactive] * lam_inv
            return out.ravel()

        return class_shift_split(o, solve)


def _ridged_inverse(G: FloatArray) -> FloatArray:
    """(G + ρI)⁻¹ of a symmetric PSD G (in place) by Cholesky: a tiny ridge ρ = 1e-10·mean diag G
    keeps it positive definite without penalty (λ = 0) or for the bias; ×100 until it is. Call it
    under threadpool_limits(1) (class_block_solver does): LAPACK on a ~10³ matrix gains nothing
    from threads, and spin-waiting BLAS threads on a busy machine make it 100× slower."""
    ridge = 1e-10 * max(float(np.trace(G)) / G.shape[0], 1e-30)
    G[np.arange(G.shape[0]), np.arange(G.shape[0])] += ridge
    for _ in range(8):
        Lc, info = lapack.dpotrf(G, lower=1, clean=1)
        if info == 0:
            break
        ridge *= 100.0
        G[np.arange(G.shape[0]), np.arange(G.shape[0])] += ridge
    else:
        raise NumericalError("class-block preconditioner is singular; use preconditioner=none")
    Minv, info = lapack.dpotri(Lc, lower=1)  # G⁻¹ from the Cholesky factor
    Minv = np.tril(Minv)
    return Minv + np.tril(Minv, -1).T


def _blas_threads() -> int:
    """The BLAS library's current thread budget (threadpoolctl; 1 when it finds none)."""
    return max((int(i.get("num_threads") or 1) for i in threadpool_info()
                if i.get("user_api") == "blas"), default=1)


def _inverse_penalty(o: LinearModelObjective, rows: NDArray[np.intp], flat: float
                     ) -> NDArray[np.float64]:
    """1/(λ P_jj) on the rows ``rows`` of [W; bᵀ] (host float64), ``flat`` where λ P_jj = 0 (no
    penalty, or the bias rows)."""
    pdiag = np.zeros(o.n_rows)
    pdiag[: o.d] = 1.0 if o._P_diag is None else to_numpy(o._P_diag)
    pen = o.l2 * pdiag[rows]
    return np.where(pen > 0, 1.0 / np.where(pen > 0, pen, 1.0), flat)


def class_shift_split(o: LinearModelObjective, solve: Callable[[Any], Any]
                      ) -> Callable[[Any], Any]:
    """The class-block preconditioner split along softmax's shift directions: with Π r the rows of
    R (d + 1, c) less their mean over classes, M̃⁻¹ r = Π M⁻¹ Π r + (I − Π) r / (λ P_jj).

    The data term is flat along W + v1ᵀ (every class shifted alike), so on those directions ∇²f is
    the penalty λP alone and it maps them, and their complement, to themselves. The class blocks
    M_k see the data's curvature there, ~10⁴ × λ on MNIST: PCG with M⁻¹ itself spends most of its
    iterations on that mismatch. Split, CG meets λ P_jj (exact for P = I) on the shift directions
    and M⁻¹ on the complement (full-MNIST softmax to 1e-8: 46 CG iterations instead of 172).
    Unpenalized rows (the bias, flat there: the solver's gauge) get 0; other models: ``solve``."""
    if not o.class_shift_invariant or o.c < 2:
        return solve
    xp = o.xp
    gamma = _inverse_penalty(o, np.arange(o.n_rows), 0.0)[:, None]
    if not is_numpy(xp):
        gamma = xp.asarray(gamma, dtype=xp.float64, device=o.device)

    def split(r: Any) -> Any:
        R = xp.reshape(r, (o.n_rows, o.c))
        mean = xp.mean(R, axis=1, keepdims=True)
        Z = xp.reshape(solve(xp.reshape(R - mean, (-1,))), (o.n_rows, o.c))
        out = Z - xp.mean(Z, axis=1, keepdims=True) + xp.astype(mean * gamma, Z.dtype)
        return xp.reshape(out, (-1,))

    return split


class LinearRegression(LinearModelObjective):
    """f = 1/(2n) ‖X w + b − y‖² + λ/2 ‖w‖²."""

    model = "linear"
    curvature_bound = 1.0

    def _prepare_y(self, y: ArrayLike, n: int) -> FloatArray:
        y = self._as_input(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"y has shape {tuple(y.shape)}, expected ({n},) real targets; pass "
                            "one target per row of X")
        if not _is_numeric(y) or not _all_finite(y):
            raise DataError("y contains non-numeric or non-finite targets; clean the data before "
                            "fitting")
        return _cast(y, self.dtype)[:, None]

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        R = Z - (self.y if y is None else y)
        return 0.5 * _dot(self.xp, R[:, 0], R[:, 0]), R

    def _loss_sum(self, Z: FloatArray) -> float:
        r = Z[:, 0] - self.y[:, 0]
        return 0.5 * _dot(self.xp, r, r)

    def _curvature(self, Z: FloatArray) -> FloatArray:
        return self.xp.ones_like(Z)

    def _predictions(self, Z: FloatArray) -> FloatArray:
        return Z[:, 0]

    def lipschitz(self, w: ArrayLike | None = None, method: str = "bound") -> float:
        """L = λ_max((1/n) X̃ᵀX̃ + λ I_W), exact: the Hessian is the same everywhere."""
        if method not in ("bound", "lanczos"):
            raise ConfigError(f"lipschitz method={method!r} is unknown; use 'bound' or 'lanczos'")
        if self.n_params <= 2000 and method == "bound":
            H = self.hessian(self._from_host(np.zeros(self.n_params, self.dtype)))
            return largest_eigenvalue(_cast(H, np.float64))
        return super().lipschitz(w, method="lanczos")

    def closed_form(self) -> FloatArray:
        """argmin f: solve ((1/n) X̃ᵀX̃ + λ [P 0; 0 0]) w = (1/n) X̃ᵀ y by Cholesky (lstsq if
        singular)."""
        if not is_numpy(self.xp):
            return _closed_form_xp(self)
        Xt = self._Xtilde_full().astype(np.float64)
        A = Xt.T @ Xt / self.n
        k = self._X.shape[1]
        rhs = Xt.T @ self.y[:, 0].astype(np.float64) / self.n
        # the penalty couples the all-zero features in
        if self.P is not None and not self._all_active:
            rows = self._scatter_rows()
            A_full = np.zeros((self.n_rows, self.n_rows))
            A_full[np.ix_(rows, rows)] = A
            A_full[: self.d, : self.d] += self.l2 * self.P
            rhs_full = np.zeros(self.n_rows)
            rhs_full[rows] = rhs
            try:
                return sla.cho_solve(sla.cho_factor(A_full), rhs_full).astype(self.dtype)
            except sla.LinAlgError:
                return sla.lstsq(A_full, rhs_full)[0].astype(self.dtype)
        if self.P is None:
            A[np.arange(k), np.arange(k)] += self.l2
        else:
            A[:k, :k] += self.l2 * self.P
        try:
            sol = sla.cho_solve(sla.cho_factor(A), rhs)
        except sla.LinAlgError:
            sol = sla.lstsq(A, rhs)[0]  # min-norm solution when (1/n)X̃ᵀX̃ is singular and λ = 0
        w = np.zeros(self.n_rows, dtype=np.float64)
        w[self._scatter_rows()] = sol
        return w.astype(self.dtype)


class _BinaryMixin:
    def _prepare_y(self, y: ArrayLike, n: int) -> FloatArray:
        y = self._as_input(y)  # type: ignore[attr-defined]
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"y has shape {tuple(y.shape)}, expected ({n},) labels in {{0, 1}}")
        if not _all_true((y == 0) | (y == 1)):
            raise DataError(worded("binary models need labels in {{0, 1}}; map the two classes to "
                                   "0 and 1 ({dataset.classes})"))
        return _cast(y, self.dtype)[:, None]  # type: ignore[attr-defined]

    def _predictions(self, Z: FloatArray) -> NDArray[np.int64]:
        return _cast(Z[:, 0] > 0, np.int64)


class LogisticRegression(_BinaryMixin, LinearModelObjective):
    """Log-loss f = (1/n) Σ [log(1 + e^{z_i}) − y_i z_i] + λ/2 ‖w‖², z = x·w + b, y ∈ {0, 1}."""

    model = "logistic"
    curvature_bound = 0.25

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        if not is_numpy(self.xp):
            y = self.y if y is None else y
            return self._loss_sum(Z, y), _expit(Z) - y
        if y is not None:
            return float(np.sum(-log_expit(Z) + (1.0 - y) * Z, dtype=np.float64)), expit(Z) - y
        return self._loss_sum(Z), expit(Z) - self.y

    def _loss_sum(self, Z: FloatArray, y: FloatArray | None = None) -> float:
        # log(1 + e^z) − y z = −log σ(z) + (1 − y) z  (stable through log_expit)
        if not is_numpy(self.xp):
            xp, y = self.xp, self.y if y is None else y
            nls = xp.logaddexp(xp.zeros_like(Z), -Z)  # −log σ(z) = log(1 + e^{−z})
            return float(xp.sum(nls + (1.0 - y) * Z, dtype=xp.float64))
        return float(np.sum(-log_expit(Z) + (1.0 - self.y) * Z, dtype=np.float64))

    def _curvature(self, Z: FloatArray) -> FloatArray:
        s = _expit(Z)
        return s * (1.0 - s)

    def predict_proba(self, X: ArrayLike, w: ArrayLike) -> FloatArray:
        """P(y = 1 | x) = σ(x·w + b)."""
        return _expit(self.predict_margins(X, w)[:, 0])


class LogisticMSE(_BinaryMixin, LinearModelObjective):
    """Logistic model trained with squared error: f = 1/(2n) Σ (σ(z_i) − y_i)² + λ/2 ‖w‖².

    Not convex: ℓ'' = σ'² + (σ − y) σ'(1 − 2σ) is negative for confident wrong predictions, so the
    Hessian can be indefinite; ``hessian`` returns it as it is (Newton damps it, see optimizers).
    """

    model = "logistic_mse"
    curvature_bound = MSE_LOGISTIC_CURVATURE

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        s = _expit(Z)
        r = s - (self.y if y is None else y)
        return 0.5 * float(self.xp.sum(r * r, dtype=self.xp.float64)), r * s * (1.0 - s)

    def _curvature(self, Z: FloatArray) -> FloatArray:
        s = _expit(Z)
        ds = s * (1.0 - s)
        return ds * ds + (s - self.y) * ds * (1.0 - 2.0 * s)


class SoftmaxRegression(LinearModelObjective):
    """Cross-entropy f = (1/n) Σ [lse(z_i) − z_{i,y_i}] + λ/2 ‖W‖², Z = X W + 1 bᵀ, c classes.

    Per example the curvature is S_i = diag(p_i) − p_i p_iᵀ, so ∇²f = (1/n) Σ_i x̃_i x̃_iᵀ ⊗ S_i + λ
    I_W.
    """

    model = "softmax"
    curvature_bound = 0.5
    class_shift_invariant = True  # lse(z + t1) − (z + t1)_y = lse(z) − z_y

    def _n_outputs(self, n_classes: int | None) -> int:
        return -1 if n_classes is None else int(n_classes)  # resolved in _prepare_y

    def _prepare_y(self, y: ArrayLike, n: int) -> FloatArray:
        y = self._as_input(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"y has shape {tuple(y.shape)}, expected ({n},) class indices")
        if not _is_integer_valued(y):
            raise DataError("softmax needs integer class indices 0..c-1 as labels; encode the "
                            "classes first")
        yi = _cast(y, np.int64)
        lo, hi = (int(self.xp.min(yi)), int(self.xp.max(yi))) if yi.shape[0] else (0, -1)
        if self.c == -1:
            self.c = hi + 1 if yi.shape[0] else 0
        if self.c < 2:
            raise ConfigError(worded("softmax needs n_classes ≥ 2, got {c}; set n_classes or use "
                                     "{objective}=logistic", c=self.c))
        if yi.shape[0] and (lo < 0 or hi >= self.c):
            raise DataError(f"labels must lie in 0..{self.c - 1} (n_classes={self.c}); found "
                            f"{lo}..{hi}")
        return yi  # type: ignore[return-value]

    def _onehot(self, y: Any, dtype: Any) -> FloatArray:
        """Non-numpy: the (n, c) indicator of the labels y (Z[i, y_i] = Σ_k Z_ik · onehot_ik)."""
        classes = self.xp.arange(self.c, dtype=y.dtype, device=self.device)
        return self.xp.astype(y[:, None] == classes[None, :], dtype)

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        y = self.y if y is None else y
        if not is_numpy(self.xp):
            xp, Y = self.xp, self._onehot(y, Z.dtype)
            m = xp.max(Z, axis=1, keepdims=True)
            E = xp.exp(Z - m)
            s = xp.sum(E, axis=1, keepdims=True)
            lse = m[:, 0] + xp.log(s[:, 0])
            loss = float(xp.sum(lse - xp.sum(Z * Y, axis=1), dtype=xp.float64))
            return loss, E / s - Y
        m = Z.max(axis=1, keepdims=True)
        P = np.exp(Z - m)
        s = P.sum(axis=1, keepdims=True)
        P /= s
        lse = m[:, 0] + np.log(s[:, 0])
        loss = float(np.sum(lse - Z[np.arange(Z.shape[0]), y], dtype=np.float64))
        P[np.arange(Z.shape[0]), y] -= 1.0
        return loss, P

    def _loss_sum(self, Z: FloatArray) -> float:
        if not is_numpy(self.xp):
            zy = self.xp.sum(Z * self._onehot(self.y, Z.dtype), axis=1)
            return float(self.xp.sum(logsumexp_rows(Z) - zy, dtype=self.xp.float64))
        return float(np.sum(logsumexp_rows(Z) - Z[np.arange(Z.shape[0]), self.y], dtype=np.float64))

    def _curvature(self, Z: FloatArray) -> FloatArray:
        return softmax_rows(Z)

    def _curv_apply(self, P: FloatArray, U: FloatArray) -> FloatArray:
        PU = P * U
        if not is_numpy(self.xp):
            return PU - P * self.xp.sum(PU, axis=1, keepdims=True)
        PU -= P * PU.sum(axis=1, keepdims=True)
        return PU

    def _diag_curv(self, P: FloatArray) -> FloatArray:
        return P * (1.0 - P)

    def _dense_hessian(self, P: FloatArray) -> FloatArray:
        # class-pair blocks: H[(j,k),(j',l)] = (1/n) Σ_i x̃_ij x̃_ij' (δ_kl p_ik − p_ik p_il)
        Xt = self._Xtilde_full()
        k_rows = Xt.shape[1]
        c = self.c
        if not is_numpy(self.xp):
            Hs = self.xp.empty((k_rows, c, k_rows, c), dtype=Xt.dtype, device=self.device)
        else:
            Hs = np.empty((k_rows, c, k_rows, c), dtype=self.dtype)
        for k in range(c):
            for m in range(k, c):
                wts = (P[:, k] * (float(k == m) - P[:, m])) / self.n
                B = Xt.T @ (wts[:, None] * Xt)
                Hs[:, k, :, m] = B
                Hs[:, m, :, k] = B.T
        if not is_numpy(self.xp):
            return self.xp.reshape(self._scatter(Hs, (0, 2)), (self.n_params, self.n_params))
        H = np.zeros((self.n_rows, c, self.n_rows, c), dtype=self.dtype)
        r = self._scatter_rows()
        H[np.ix_(r, np.arange(c), r, np.arange(c))] = Hs
        return H.reshape(self.n_params, self.n_params)

    def gauge_directions(self) -> FloatArray:
        """Shifting every class's logit by the same amount changes nothing: with an intercept the
        direction b → b + t·1 (always), and W → W + u 1ᵀ for every u the penalty does not see
        (every u without penalty; P u = 0 with a penalty matrix, e.g. a bias absorbed into z)."""
        rows = []
        if self.fit_intercept:
            M = np.zeros((self.n_rows, self.c), self.dtype)
            M[self.d] = 1.0 / np.sqrt(self.c)
            rows.append(M.ravel())
        if self.l2 == 0:
            free = np.eye(self.d)
        else:
            free = self._penalty_null_space()
        for u in free:
            M = np.zeros((self.n_rows, self.c), self.dtype)
            M[: self.d] = u[:, None] / np.sqrt(self.c)
            rows.append(M.ravel())
        return self._from_host(np.array(rows, dtype=self.dtype).reshape(len(rows), self.n_params))

    def _penalty_null_space(self) -> FloatArray:
        """Orthonormal rows spanning {u : P u = 0} (empty when P = I)."""
        if self.P is None:
            return np.zeros((0, self.d))
        if self._P_null is None:
            ev, V = np.linalg.eigh(to_numpy(self.P))
            tol = max(float(ev[-1]), 0.0) * self.d * 1.0e-12
            self._P_null = np.ascontiguousarray(V[:, ev <= tol].T)
        return self._P_null

    def _predictions(self, Z: FloatArray) -> NDArray[np.int64]:
        return _cast(self.xp.argmax(Z, axis=1), np.int64)

    def predict_proba(self, X: ArrayLike, w: ArrayLike) -> FloatArray:
        """Class probabilities softmax(X W + b), shape (n', c)."""
        return softmax_rows(self.predict_margins(X, w))


MODELS: dict[str, type[LinearModelObjective]] = {  # the registry: model name → objective
    "linear": LinearRegression,
    "logistic": LogisticRegression,
    "logistic_mse": LogisticMSE,
    "softmax": SoftmaxRegression,
}


def _take_columns(X: NDArray[Any], cols: NDArray[np.intp], dtype: Any) -> NDArray[Any]:
    """C-contiguous X[:, cols] in ``dtype``, copied in row blocks (X[:, cols] on a large array
    comes out Fortran-ordered and is several times slower); one gather on other backends."""
    if not isinstance(X, np.ndarray):
        xp = namespace(X)
        idx = xp.asarray(np.asarray(cols, dtype=np.int64), device=array_api_compat.device(X))
        return xp.astype(xp.take(X, idx, axis=1), _xdtype(xp, dtype))
    out = np.empty((X.shape[0], cols.size), dtype=dtype)
    for i in range(0, X.shape[0], 2048):
        out[i:i + 2048] = X[i:i + 2048].take(cols, axis=1)
    return out


def _compactable(X: Any, dtype: Any, owned: bool = True) -> bool:
    """X can become the objective's own matrix as it is: a C-contiguous numpy array already in
    ``dtype`` (``owned``: and writeable, owning its buffer, to be compacted in place)."""
    return (isinstance(X, np.ndarray) and X.dtype == np.dtype(dtype) and X.flags.c_contiguous
            and (not owned or (X.flags.writeable and X.flags.owndata)))


def _check_X(X: ArrayLike) -> NDArray[Any]:
    """X as a 2-D numeric finite array: an array-API array stays in its namespace, anything
    else (lists, sparse matrices, data frames) becomes a numpy array."""
    if isinstance(X, AffineRows):
        return X  # stored pixels under an elementwise map: finite numbers by construction
    if sparse.issparse(X):
        X = X.toarray()  # type: ignore[union-attr]
    if isinstance(X, np.ndarray) or not array_api_compat.is_array_api_obj(X):
        X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X has shape {tuple(X.shape)}, expected a non-empty (n, d) matrix, one "
                        "example per row")
    if not _is_numeric(X):
        raise DataError(f"X has dtype {X.dtype}, expected numbers; convert the features to floats")
    if not _all_finite(X):
        raise DataError("X contains NaN or infinite values; clean or impute them before fitting")
    return X


def _check_l2(l2: float) -> float:
    try:
        lam = float(l2)
    except (TypeError, ValueError):
        raise OptionError("objective", "l2", l2, "must be a number ≥ 0") from None
    if not (np.isfinite(lam) and lam >= 0):
        raise OptionError("objective", "l2", l2, "must be a finite number ≥ 0", show=str)
    return lam


def _check_penalty(P: ArrayLike | None, d: int, xp: Any = NUMPY_XP,
                   device: Any = None) -> FloatArray | None:
    """The symmetrized (d, d) penalty matrix, float64, in the namespace ``xp`` on ``device``."""
    if P is None:
        return None
    if is_numpy(xp):
        P = np.asarray(P, dtype=np.float64)
    else:
        P = xp.asarray(P, dtype=xp.float64, device=device)
    if tuple(P.shape) != (d, d):
        raise DataError(f"penalty matrix has shape {tuple(P.shape)}, expected ({d}, {d}) = "
                        "features × features")
    if not _all_finite(P):
        raise DataError("penalty matrix contains NaN or inf; rebuild it from the transform")
    if not is_numpy(xp):
        return 0.5 * (P + P.T)
    return np.ascontiguousarray(0.5 * (P + P.T))


def make_objective(
    model: str,
    X: ArrayLike,
    y: ArrayLike,
    *,
    l2: float = 0.0,
    fit_intercept: bool = True,
    n_classes: int | None = None,
    dtype: Any = np.float64,
    penalty: ArrayLike | None = None,
    copy_X: bool = True,
) -> LinearModelObjective:
    """The objective of ``model`` ∈ {linear, logistic, logistic_mse, softmax} on (X, y), penalty λ/2
    tr(Wᵀ P W); ``copy_X=False``: a numpy X in the objective's dtype becomes the objective's own
    matrix in place (its all-zero columns squeezed out; the caller must not use X after)."""
    if model not in MODELS:
        raise ConfigError(worded("{objective}={model!r} is unknown; use one of {names}",
                                 model=model, names=", ".join(MODELS)))
    return MODELS[model](X, y, l2=l2, fit_intercept=fit_intercept, n_classes=n_classes, dtype=dtype,
                           penalty=penalty, copy_X=copy_X)


# ----- helpers shared by the numpy and the other backends' paths ---------------------------------
def _xdtype(xp: Any, dtype: Any) -> Any:
    """The dtype of namespace ``xp`` named like the numpy dtype ``dtype`` (float64 → xp.float64)."""
    return getattr(xp, np.dtype(dtype).name)


def _cast(a: Any, dtype: Any) -> Any:
    """A copy of ``a`` in the dtype named like the numpy dtype ``dtype`` (numpy: ndarray.astype)."""
    if isinstance(a, np.ndarray | AffineRows):
        return a.astype(dtype)
    xp = namespace(a)
    return xp.astype(a, _xdtype(xp, dtype))


def _float64(a: Any) -> Any:
    """``a`` in float64: itself when it already is (numpy: no copy of a large X), else a copy."""
    if isinstance(a, np.ndarray):
        return np.asarray(a, dtype=np.float64)
    if isinstance(a, AffineRows):
        return a  # float64 rows already
    return _cast(a, np.float64)


def _dot(xp: Any, a: Any, b: Any) -> float:
    """a · b of two vectors, as a float (numpy: np.dot)."""
    return float(np.dot(a, b)) if is_numpy(xp) else float(xp.vecdot(a, b))


def _expit(Z: Any) -> Any:
    """σ(z) = 1/(1 + e^{−z}) (numpy: scipy's expit; else through e^{−|z|}, which cannot
    overflow)."""
    if isinstance(Z, np.ndarray):
        return expit(Z)
    xp = namespace(Z)
    e = xp.exp(-xp.abs(Z))
    return xp.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _is_numeric(a: Any) -> bool:
    """True for integer, real or complex dtypes (not bool, strings or objects)."""
    if isinstance(a, np.ndarray):
        return bool(np.issubdtype(a.dtype, np.number))
    return bool(namespace(a).isdtype(a.dtype, "numeric"))


def _all_true(mask: Any) -> bool:
    """True when every element of the boolean array ``mask`` is."""
    return bool(np.all(mask)) if isinstance(mask, np.ndarray) else bool(namespace(mask).all(mask))


def _all_finite(a: Any) -> bool:
    """True when no element of ``a`` is NaN or ±inf."""
    if isinstance(a, np.ndarray):
        return bool(np.all(np.isfinite(a)))
    return _all_true(namespace(a).isfinite(a))


def _is_integer_valued(y: Any) -> bool:
    """True for an integer dtype, or a real one whose values are all whole numbers."""
    if isinstance(y, np.ndarray):
        if np.issubdtype(y.dtype, np.integer):
            return True
        return bool(np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))
    xp = namespace(y)
    if xp.isdtype(y.dtype, "integral"):
        return True
    return bool(xp.isdtype(y.dtype, "real floating")) and _all_true(y == xp.round(y))


def _diagonal(M: Any) -> Any:
    """The diagonal of a square matrix (numpy: a contiguous copy)."""
    if isinstance(M, np.ndarray):
        return np.ascontiguousarray(np.diag(M))
    return namespace(M).linalg.diagonal(M)


def _active_columns(X: Any) -> NDArray[np.intp]:
    """Host indices of the columns of X with a nonzero entry."""
    if isinstance(X, np.ndarray):
        return np.flatnonzero(X.any(axis=0))
    xp = namespace(X)
    return np.flatnonzero(to_numpy(xp.any(X != 0, axis=0)))


def _gather_index(rows: NDArray[np.intp], n_rows: int) -> NDArray[np.int64]:
    """For each of n_rows positions: its index in ``rows``, or len(rows) where it is absent."""
    idx = np.full(n_rows, rows.size, dtype=np.int64)
    idx[rows] = np.arange(rows.size)
    return idx


def _scatter_axis(xp: Any, A: Any, index: Any, axis: int) -> Any:
    """take(A padded with one zero slice along ``axis``, index): A's slices moved to the positions
    of a _gather_index, zeros elsewhere (a scatter written as a gather)."""
    shape = list(A.shape)
    shape[axis] = 1
    pad = xp.zeros(tuple(shape), dtype=A.dtype, device=array_api_compat.device(A))
    return xp.take(xp.concat([A, pad], axis=axis), index, axis=axis)


# ----- the array API paths of LinearModelObjective and HessianOperator (backends other than numpy)
def _pack_xp(o: LinearModelObjective, W: Any, b: Any) -> Any:
    """The flat parameter vector of (W, b): [W; bᵀ] raveled row-major."""
    xp, dt = o.xp, _xdtype(o.xp, o.dtype)
    W = xp.reshape(xp.asarray(W, dtype=dt, device=o.device, copy=True), (o.d, o.c))
    if not o.fit_intercept:
        return xp.reshape(W, (-1,))
    bb = xp.broadcast_to(xp.asarray(b, dtype=dt, device=o.device), (o.c,))
    return xp.reshape(xp.concat([W, bb[None, :]], axis=0), (-1,))


def _place_xp(o: LinearModelObjective, G: Any, bias: Any, scale: float) -> Any:
    """scale · [G; bias] as a flat parameter vector (zero rows for the inactive features)."""
    xp = o.xp
    M = G * scale
    if bias is not None:
        M = xp.concat([M, xp.astype(bias * scale, G.dtype)[None, :]], axis=0)
    return xp.reshape(o._scatter(M, (0,)), (-1,))


def _penalty_xp(o: LinearModelObjective, w: Any) -> float:
    """λ/2 tr(Wᵀ P W) (λ/2 ‖W‖² when P = I)."""
    xp = o.xp
    W = xp.reshape(w, (o.n_rows, o.c))[: o.d, :]
    if o.P is None:
        Wf = xp.reshape(W, (-1,))
        return 0.5 * o.l2 * float(xp.vecdot(Wf, Wf))
    W64 = _cast(W, np.float64)
    return 0.5 * o.l2 * float(xp.sum(W64 * (o.P @ W64)))


def _penalty_block_xp(o: LinearModelObjective) -> Any:
    """λ (P ⊗ I_c) (λ I when P = I), the penalty's block of the Hessian on the weights."""
    xp, k, dt = o.xp, o.d * o.c, _xdtype(o.xp, o.dtype)
    if o.P is None:
        return o.l2 * xp.eye(k, dtype=dt, device=o.device)
    eye = xp.eye(o.c, dtype=xp.float64, device=o.device)
    kron = xp.reshape(o.P[:, None, :, None] * eye[None, :, None, :], (k, k))
    return xp.astype(o.l2 * kron, dt)


def _second_moment_mv(o: LinearModelObjective) -> Callable[[Any], Any]:
    """v ↦ (1/n) X̃ᵀ X̃ v on [X_active, 1]."""
    X, n, k = o._X, o.n, o._X.shape[1]

    def mv(v: Any) -> Any:
        u = X @ v[:k]
        if o.fit_intercept:
            u = u + v[-1]
        out = X.T @ u
        if not o.fit_intercept:
            return out / n
        if is_numpy(o.xp):
            return np.append(out, u.sum()) / n
        return o.xp.concat([out, o.xp.reshape(o.xp.sum(u), (1,))]) / n

    return mv


def _bound_mv(o: LinearModelObjective) -> Callable[[Any], Any]:
    """v ↦ (b · (1/n) X̃ᵀX̃ + λ [P 0; 0 0]) v on the rows of [W; bᵀ], b = sup‖ℓ''‖."""
    k_act, rows = o._X.shape[1], o._scatter_rows()
    b, lam, P, xp = o.curvature_bound, o.l2, o.P, o.xp

    def mv(v: FloatArray) -> FloatArray:
        x = v[: o.d]
        u = o._X @ x[rows[:k_act]]
        if o.fit_intercept:
            u = u + v[o.d]
        out = np.zeros_like(v)
        out[rows[:k_act]] = b * (o._X.T @ u) / o.n
        if o.fit_intercept:
            out[o.d] = b * u.sum() / o.n
        out[: o.d] += lam * (P @ x)  # type: ignore[operator]
        return out

    def mv_xp(v: Any) -> Any:
        x = v[: o.d]
        u = o._X @ (x if o._all_active else xp.take(x, o._xactive, axis=0))
        if o.fit_intercept:
            u = u + v[o.d]
        parts = [b * (o._X.T @ u) / o.n]
        if o.fit_intercept:
            parts.append(xp.reshape(b * xp.sum(u) / o.n, (1,)))
        out = o._scatter(xp.concat(parts)[:, None], (0,))[:, 0]
        return xp.concat([out[: o.d] + lam * (P @ x), out[o.d:]])  # type: ignore[operator]

    return mv if is_numpy(xp) else mv_xp


def _matvec_xp(op: HessianOperator, v: Any) -> Any:
    """∇²f(w) v = (1/n) X̃ᵀ (D · (X̃ V)) + λ [P V; 0], one product with X̃ per side."""
    o, xp = op.obj, op.obj.xp
    V, b = o._coef(xp.asarray(v, dtype=_xdtype(xp, op.dtype), device=o.device))
    U = op.X @ V
    if b is not None:
        U = U + b
    R = o._curv_apply(op.curv, U)
    bias = xp.sum(R, axis=0, dtype=xp.float64) if b is not None else None
    out = xp.astype(o._place(op.X.T @ R, bias, 1.0 / o.n), _xdtype(xp, o.dtype))
    if o.l2:
        out = o._add_top(out, o._penalty_grad(o._check_w(v, "v")))
    return out


def _closed_form_xp(o: LinearRegression) -> Any:
    """argmin f of linear regression: the normal equations by Cholesky (the pseudo-inverse's
    min-norm solution when singular), on the active rows unless a penalty matrix couples the
    all-zero features in."""
    xp = o.xp
    Xt = _cast(o._Xtilde_full(), np.float64)
    A = Xt.T @ Xt / o.n
    rhs = (Xt.T @ _cast(o.y, np.float64)) / o.n  # (k, 1)
    full = o.P is not None and not o._all_active
    if full:
        A, rhs = o._scatter(A, (0, 1)), o._scatter(rhs, (0,))
    pen = xp.eye(o._X.shape[1], dtype=xp.float64, device=o.device) if o.P is None else o.P
    k = pen.shape[0]
    A[:k, :k] += o.l2 * pen
    try:
        L = cholesky_lower(A)
        sol = xp.linalg.solve(L.T, xp.linalg.solve(L, rhs))
    except SingularMatrixError:
        sol = xp.linalg.pinv(A) @ rhs
    if not full:
        sol = o._scatter(sol, (0,))
    return _cast(sol[:, 0], o.dtype)


def _class_block_solver_xp(op: HessianOperator, rel_threshold: float,
                           max_rows: int | None) -> Callable[[Any], Any]:
    """HessianOperator.class_block_solver on a non-numpy backend: the examples below the
    threshold get weight 0 (the same blocks as dropping them), factors by xp.linalg."""
    o, xp, dev = op.obj, op.obj.xp, op.obj.device
    D = xp.clip(o._diag_curv(op.curv), min=0.0)
    X, scale = op.X, 1.0 / o.n
    if max_rows is not None and max_rows < o.n:  # a fixed, evenly spread subsample of rows
        sel = xp.asarray(np.linspace(0, o.n - 1, max_rows).astype(np.int64), device=dev)
        X, D, scale = xp.take(X, sel, axis=0), xp.take(D, sel, axis=0), 1.0 / max_rows
    k_act, rows = X.shape[1], o._scatter_rows()
    if o.P is None:
        pen = xp.eye(k_act, dtype=xp.float64, device=dev)
    else:
        act = xp.asarray(rows[:k_act], device=dev)
        pen = xp.take(xp.take(o.P, act, axis=0), act, axis=1)
    facs = []
    for k in range(o.c):
        dk = D[:, k]
        dk = xp.where(dk > rel_threshold * xp.max(dk), dk, xp.zeros_like(dk))
        sq = xp.astype(xp.sqrt(dk), X.dtype)
        Y = X * sq[:, None]
        G = xp.zeros((rows.size, rows.size), dtype=xp.float64, device=dev)
        G[:k_act, :k_act] = xp.astype(Y.T @ Y, xp.float64)
        if o.fit_intercept:
            col = xp.astype(Y.T @ sq, xp.float64)
            G[:k_act, k_act] = col
            G[k_act, :k_act] = col
            G[k_act, k_act] = xp.sum(dk, dtype=xp.float64)
        G = G * scale
        G[:k_act, :k_act] += o.l2 * pen
        facs.append(_ridged_inverse_xp(G))
    return class_shift_split(o, _block_solve_xp(o, xp.stack(facs), rows))


def _block_solve_xp(o: LinearModelObjective, Minv: Any, rows: NDArray[np.intp]
                    ) -> Callable[[Any], Any]:
    """r ↦ M⁻¹ r: the class blocks' inverses Minv (c, m, m) on the rows of data, 1/(λ P_jj) on
    the inactive features."""
    xp, dev = o.xp, o.device
    inactive = np.setdiff1d(np.arange(o.d), rows)
    lam_inv = xp.asarray(_inverse_penalty(o, inactive, 1.0)[:, None], dtype=xp.float64,
                         device=dev)
    order = xp.asarray(np.argsort(np.concatenate([rows, inactive])), device=dev)
    ridx, iidx = xp.asarray(rows, device=dev), xp.asarray(inactive, device=dev)

    def solve(r: Any) -> Any:
        R = xp.reshape(r, (o.n_rows, o.c))
        Ra = xp.astype(xp.take(R, ridx, axis=0), xp.float64).T  # (c, m)
        parts = [(Minv @ Ra[:, :, None])[:, :, 0].T]
        if inactive.size:
            parts.append(xp.astype(xp.take(R, iidx, axis=0), xp.float64) * lam_inv)
        out = xp.take(xp.concat(parts, axis=0), order, axis=0)
        return xp.astype(xp.reshape(out, (-1,)), r.dtype)

    return solve


def _ridged_inverse_xp(G: Any) -> Any:
    """(G + ρI)⁻¹ of a symmetric PSD G by Cholesky, the ridge ladder of _ridged_inverse:
    ρ = 1e-10·mean diag G, ×100 until G + ρI is positive definite (8 tries)."""
    xp, m = namespace(G), G.shape[0]
    eye = xp.eye(m, dtype=G.dtype, device=array_api_compat.device(G))
    ridge = 1e-10 * max(float(xp.linalg.trace(G)) / m, 1e-30)
    G = G + ridge * eye
    for _ in range(8):
        try:
            L = cholesky_lower(G)
            break
        except SingularMatrixError:
            ridge *= 100.0
            G = G + ridge * eye
    else:
        raise NumericalError("class-block preconditioner is singular; use preconditioner=none")
    Linv = xp.linalg.solve(L, eye)
    return Linv.T @ Linv  # G⁻¹ = L⁻ᵀ L⁻¹
