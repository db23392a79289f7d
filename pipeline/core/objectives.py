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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg as sla
from scipy import sparse
from scipy.linalg import lapack
from scipy.sparse import linalg as spla
from scipy.special import expit, log_expit
from threadpoolctl import threadpool_limits

from pipeline.core.errors import ConfigError, DataError, NumericalError, OptionError, worded

DTYPES = {"float64": np.float64, "float32": np.float32}
INITS = ("zeros", "random", "saturated")  # starting points of LinearModelObjective.init
# A dense Hessian of this many parameters takes 8·p² bytes (7850 = MNIST softmax: 493 MB).
DENSE_HESSIAN_MAX_PARAMS = 8000
# rows of X̃ per block of a Hessian-vector product: a block (≈ 6 MB of float32 MNIST) stays in cache
# between its forward and backward product, so each product reads X once from memory (≈ 1.6× faster
# on MNIST)
HVP_ROW_BLOCK = 2048
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
    m = Z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]


def softmax_rows(Z: FloatArray) -> FloatArray:
    """Row-wise softmax p_k = exp(z_k − lse(z)), stable for logits of any magnitude."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E


class Objective:
    """A smooth objective f: R^p → R (the interface the optimizers use).

    Subclasses implement ``value_grad`` and ``hessian`` (or ``hvp``); the rest has defaults.
    ``gauge_directions()`` lists exact flat directions (zero curvature, gradient orthogonal to
    them), which Newton's method must leave alone.
    """

    n_params: int
    dtype: type[np.floating[Any]] = np.float64

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
        return self.hessian(w) @ np.asarray(v, dtype=self.dtype)

    def hessian(self, w: ArrayLike) -> FloatArray:
        """The dense Hessian ∇²f(w), shape (p, p)."""
        raise NotImplementedError

    def gauge_directions(self) -> FloatArray:
        """Orthonormal rows spanning directions along which f is exactly constant (shape (k, p))."""
        return np.zeros((0, self.n_params), dtype=self.dtype)

    def lipschitz(self, w: ArrayLike | None = None, method: str = "lanczos") -> float:
        """Smoothness constant L ≥ λ_max(∇²f); default: Lanczos on HVPs at w (a local value)."""
        w = np.zeros(self.n_params, dtype=self.dtype) if w is None else w
        return top_eigenvalue(lambda v: self.hvp(w, v), self.n_params, self.dtype)

    def _check_w(self, w: ArrayLike, name: str = "w") -> FloatArray:
        arr = np.asarray(w, dtype=self.dtype)
        if arr.shape != (self.n_params,):
            raise ConfigError(
                f"{name} has shape {arr.shape}, expected ({self.n_params},) = the flat parameter "
                "vector; use objective.init(...) to build one"
            )
        return arr


def largest_eigenvalue(M: FloatArray) -> float:
    """λ_max of a dense symmetric matrix (LAPACK's subset solver, the full spectrum where it fails:
    some builds' dsyevr stops with an internal error on clustered spectra such as M ≈ I)."""
    k = M.shape[0]
    try:
        return float(sla.eigvalsh(M, subset_by_index=[k - 1, k - 1])[0])
    except np.linalg.LinAlgError:
        return float(np.linalg.eigvalsh(M)[-1])


def top_eigenvalue(matvec: Callable[[FloatArray], FloatArray], p: int, dtype: Any = np.float64,
                   tol: float = 1.0e-6) -> float:
    """Largest algebraic eigenvalue of a symmetric operator by Lanczos (scipy eigsh on a
    LinearOperator)."""
    dt = np.dtype(dtype)
    if p <= 2:
        M = np.column_stack([matvec(e) for e in np.eye(p, dtype=dt)])
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    op = spla.LinearOperator((p, p), matvec=lambda v: matvec(np.asarray(v, dtype=dt).ravel()),
                             dtype=dt)
    v0 = np.full(p, 1.0 / np.sqrt(p), dtype=dt)
    vals = spla.eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return float(vals[-1])


class LinearModelObjective(Objective):
    """Mean loss of a linear model on (X, y) plus λ/2 ‖W‖² (bias not penalized).

    Subclasses define the per-example loss on the linear predictor Z (n, c):
    ``_loss_dz(Z, y=None) -> (Σ_i ℓ_i, ∂ℓ/∂Z)`` (labels y of the rows of Z, default all),
    ``_curvature(Z)`` and ``_curv_apply(curv, U)`` (= D·U).
    """

    model: str = ""
    curvature_bound: float = 1.0  # sup ‖∂²ℓ/∂z²‖, so that L ≤ bound · λ_max((1/n) X̃ᵀX̃) + λ

    def __init__(self, X: ArrayLike, y: ArrayLike, *, l2: float = 0.0, fit_intercept: bool = True,
                 n_classes: int | None = None, dtype: Any = np.float64,
                 penalty: ArrayLike | None = None) -> None:
        self.dtype = _as_dtype(dtype)
        X = _check_X(X)
        self.n, self.d = X.shape
        self.l2 = _check_l2(l2)
        self.P = _check_penalty(penalty, self.d)  # (d, d) or None = identity
        self._P_null: FloatArray | None = None
        self._P_diag = None if self.P is None else np.ascontiguousarray(np.diag(self.P))
        self.fit_intercept = bool(fit_intercept)
        self.c = self._n_outputs(n_classes)
        self.y = self._prepare_y(y, self.n)
        active = np.flatnonzero(X.any(axis=0))
        self._all_active = active.size == self.d
        self._active = active
        self._X = (np.ascontiguousarray(X, dtype=self.dtype) if self._all_active
                   else _take_columns(X, active, self.dtype))
        self._X32: FloatArray | None = None
        self._X32sq: FloatArray | None = None
        self._Xsq: FloatArray | None = None
        self.n_rows = self.d + int(self.fit_intercept)  # rows of the coefficient matrix [W; bᵀ]
        self.n_params = self.n_rows * self.c
        self._lam_max_cov: float | None = None

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
        M = self._check_w(w).reshape(self.n_rows, self.c)
        W, b = M[: self.d], (M[self.d] if self.fit_intercept else np.zeros(self.c, self.dtype))
        if self.c == 1:
            return W[:, 0].copy(), float(b[0])
        return W.copy(), b.copy()

    def pack(self, W: ArrayLike, b: ArrayLike | float = 0.0) -> FloatArray:
        """Inverse of unpack: the flat parameter vector of (W, b)."""
        W = np.asarray(W, dtype=self.dtype).reshape(self.d, self.c)
        if not self.fit_intercept:
            return W.ravel().copy()
        b = np.broadcast_to(np.asarray(b, dtype=self.dtype), (self.c,))
        return np.vstack([W, b[None, :]]).ravel()

    def _coef(self, w: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        """(W restricted to the active features, b or None) as views into w."""
        M = w.reshape(self.n_rows, self.c)
        W = M[: self.d]
        if not self._all_active:
            W = W[self._active]
        return W, (M[self.d] if self.fit_intercept else None)

    # ----- products with X̃ -------------------------------------------------------------------
    def margins(self, w: ArrayLike) -> FloatArray:
        """The linear predictor Z = X W + 1 bᵀ, shape (n, c)."""
        W, b = self._coef(self._check_w(w))
        Z = self._X @ W
        if b is not None:
            Z += b
        return Z

    def _backward(self, R: FloatArray, scale: float, X: FloatArray | None = None) -> FloatArray:
        """The flat vector scale · X̃ᵀ R (zero rows for the inactive features)."""
        X = self._X if X is None else X
        return self._place(
            X.T @ R, R.sum(axis=0, dtype=np.float64) if self.fit_intercept else None, scale
        )

    def _place(self, G: FloatArray, bias: FloatArray | None, scale: float) -> FloatArray:
        """scale · [G; bias] as a flat parameter vector (zero rows for the inactive features)."""
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
        W = np.asarray(w).reshape(self.n_rows, self.c)[: self.d]
        return self.l2 * W if self.P is None else self.l2 * (self.P @ W.astype(np.float64))

    def _add_penalty(self, g: FloatArray, w: FloatArray) -> None:
        if self.l2:
            g.reshape(self.n_rows, self.c)[: self.d] += self._penalty_grad(w)

    def _penalty(self, w: FloatArray) -> float:
        if not self.l2:
            return 0.0
        W = w.reshape(self.n_rows, self.c)[: self.d]
        if self.P is None:
            return 0.5 * self.l2 * float(np.dot(W.ravel(), W.ravel()))
        W64 = W.astype(np.float64)
        return 0.5 * self.l2 * float(np.sum(W64 * (self.P @ W64)))

    def penalty_matrix(self) -> FloatArray:
        """The (d, d) matrix P of the penalty λ/2 tr(Wᵀ P W) (I when none was given)."""
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
        self._add_penalty(g, w)
        return loss / self.n + self._penalty(w), g

    def batch_grad(self, w: FloatArray, rows: NDArray[np.intp]) -> FloatArray:
        """Minibatch gradient ∇f_B(w) = (1/|B|) X̃_Bᵀ ∂ℓ/∂Z_B + λ[W; 0] over the examples
        ``rows``."""
        W, b = self._coef(w)
        Xb = self._X[rows]
        Z = Xb @ W
        if b is not None:
            Z += b
        _, dZ = self._loss_dz(Z, self.y[rows])
        g = self._backward(dZ, 1.0 / rows.shape[0], X=Xb)
        self._add_penalty(g, w)
        return g

    def lipschitz_max(self) -> float:
        """max_i L_i = sup‖ℓ''‖ · max_i ‖x̃_i‖² + λ, the worst smoothness of one example's loss."""
        sq = np.einsum("ij,ij->i", self._X, self._X, dtype=np.float64)
        return self.curvature_bound * (float(sq.max()) + float(self.fit_intercept)) + self.l2

    def value(self, w: ArrayLike) -> float:
        """f(w) = (1/n) Σ ℓ(y_i, z_i) + λ/2 ‖W‖²."""
        w = self._check_w(w)
        return self.value_from_margins(w, self.margins(w))

    def value_grad(self, w: ArrayLike) -> tuple[float, FloatArray]:
        """(f(w), ∇f(w)) with ∇f = (1/n) X̃ᵀ ∂ℓ/∂Z + λ [W; 0]."""
        w = self._check_w(w)
        return self.value_grad_from_margins(w, self.margins(w))

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
                self._X32 = self._X.astype(np.float32)
            return HessianOperator(self, curv.astype(np.float32), self._X32, np.float32)
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
            if self.P is None:
                idx = np.arange(k)
                H[idx, idx] += self.l2
            else:
                H[:k, :k] += self.l2 * np.kron(self.P, np.eye(self.c)).astype(self.dtype)
        return H

    def _Xtilde_full(self) -> FloatArray:
        """[X_active, 1] in the storage dtype (for dense Hessians of small problems)."""
        cols = [self._X] + ([np.ones((self.n, 1), self.dtype)] if self.fit_intercept else [])
        return np.hstack(cols) if len(cols) > 1 else self._X

    def _scatter_rows(self) -> NDArray[np.intp]:
        rows = self._active if not self._all_active else np.arange(self.d)
        if self.fit_intercept:
            rows = np.append(rows, self.d)
        return rows

    def _dense_hessian(self, curv: FloatArray) -> FloatArray:
        Xt = self._Xtilde_full()
        Hs = Xt.T @ (curv[:, :1] * Xt) / self.n
        H = np.zeros((self.n_rows, self.n_rows), dtype=self.dtype)
        r = self._scatter_rows()
        H[np.ix_(r, r)] = Hs
        return H

    def diag_hessian(self, curv: FloatArray, low_precision: bool = False) -> FloatArray:
        """diag ∇²f (the Jacobi preconditioner): (1/n) (X̃∘X̃)ᵀ diag-curvature + λ."""
        if low_precision and self.dtype == np.float64:
            if self._X32sq is None:
                X32 = self._X32 if self._X32 is not None else self._X.astype(np.float32)
                self._X32sq = X32 * X32
            Xsq = self._X32sq
            dc = self._diag_curv(curv).astype(np.float32)
        else:
            if self._Xsq is None:
                self._Xsq = self._X * self._X
            Xsq, dc = self._Xsq, self._diag_curv(curv)
        dg = self._backward(dc, 1.0 / self.n, X=Xsq).astype(np.float64)
        pdiag = 1.0 if self._P_diag is None else self._P_diag[:, None]
        dg.reshape(self.n_rows, self.c)[: self.d] += self.l2 * pdiag
        return dg

    def _diag_curv(self, curv: FloatArray) -> FloatArray:
        return curv

    # ----- smoothness -------------------------------------------------------------------------
    def input_second_moment_max(self) -> float:
        """λ_max((1/n) X̃ᵀX̃), the largest eigenvalue of the (augmented) input second-moment
        matrix."""
        if self._lam_max_cov is None:
            k = self._X.shape[1] + int(self.fit_intercept)
            if k <= 2000:
                Xt = self._Xtilde_full().astype(np.float64)
                C = Xt.T @ Xt / self.n
                self._lam_max_cov = largest_eigenvalue(C)
            else:
                def mv(v: FloatArray) -> FloatArray:
                    u = self._X @ v[: self._X.shape[1]]
                    if self.fit_intercept:
                        u = u + v[-1]
                    out = self._X.T @ u
                    return np.append(out, u.sum()) / self.n if self.fit_intercept else out / self.n
                self._lam_max_cov = top_eigenvalue(mv, k)
        return self._lam_max_cov

    def bound_matrix_max(self) -> float:
        """λ_max(b · (1/n) X̃ᵀX̃ + λ [P 0; 0 0]) with b = sup‖ℓ''‖: L for a penalty matrix P (exact
        for b = 1)."""
        k_act = self._X.shape[1]
        rows = self._scatter_rows()
        b, lam = self.curvature_bound, self.l2
        # dense: features without data (inactive, e.g. null directions kept by
        if self.n_rows <= 2000:
            # ridge whitening) have zero Gram rows, but λP still couples them to the others
            Xt = self._Xtilde_full().astype(np.float64)
            M = np.zeros((self.n_rows, self.n_rows))
            M[np.ix_(rows, rows)] = b * (Xt.T @ Xt) / self.n
            M[: self.d, : self.d] += lam * self.P  # type: ignore[operator]
            return largest_eigenvalue(M)
        P = self.P

        def mv(v: FloatArray) -> FloatArray:
            x = v[: self.d]
            u = self._X @ x[rows[:k_act]]
            if self.fit_intercept:
                u = u + v[self.d]
            out = np.zeros_like(v)
            out[rows[:k_act]] = b * (self._X.T @ u) / self.n
            if self.fit_intercept:
                out[self.d] = b * u.sum() / self.n
            out[: self.d] += lam * (P @ x)  # type: ignore[operator]
            return out

        return top_eigenvalue(mv, self.n_rows)

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
            w = np.zeros(self.n_params, dtype=self.dtype) if w is None else self._check_w(w)
            op = self.hess_operator(w)
            return top_eigenvalue(op.matvec, self.n_params, self.dtype)
        raise ConfigError(f"lipschitz method={method!r} is unknown; use 'bound' or 'lanczos'")

    # ----- initialization and prediction ------------------------------------------------------
    def init(self, kind: str = "zeros", scale: float = 1.0,
             rng: np.random.Generator | int | None = None) -> FloatArray:
        """Starting point: 'zeros'; 'random' (W ~ N(0, scale²/d), b = 0); 'saturated' — the
        lecture's bad start: a random direction scaled so the median |z| over the training
        examples is 10·scale (σ'(10) ≈ 4.5e-5: gradients attenuated)."""
        rng = np.random.default_rng(rng)
        if kind == "zeros":
            return np.zeros(self.n_params, dtype=self.dtype)
        if kind not in INITS:
            raise ConfigError(f"init={kind!r} is unknown; use zeros, random or saturated")
        if not (np.isfinite(scale) and scale > 0):
            raise ConfigError(f"init_scale={scale} must be a positive number")
        W = rng.standard_normal((self.d, self.c)) * (scale / np.sqrt(self.d))
        w = self.pack(W, 0.0)
        if kind == "saturated":
            med = float(np.median(np.abs(self.margins(w))))
            if med <= 0:
                raise NumericalError("saturated init: all margins are zero (X is all zeros?); use "
                                     "init=random")
            w = w * (10.0 * scale / med)
        return w.astype(self.dtype)

    def predict_margins(self, X: ArrayLike, w: ArrayLike) -> FloatArray:
        """Z = X W + 1 bᵀ for new inputs X (n', d)."""
        X = _check_X(X)
        if X.shape[1] != self.d:
            raise DataError(f"X has {X.shape[1]} features but the model has {self.d}; "
                            "apply the same preprocessing as for training")
        M = self._check_w(w).reshape(self.n_rows, self.c)
        Z = X.astype(self.dtype, copy=False) @ M[: self.d]
        if self.fit_intercept:
            Z += M[self.d]
        return Z

    def predict(self, X: ArrayLike, w: ArrayLike) -> NDArray[Any]:
        """Predictions: class indices (int64) for classifiers, real values for regression."""
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
        product)."""
        o = self.obj
        vv = np.asarray(v, dtype=self.dtype)
        V, b = o._coef(vv)
        G = np.zeros((V.shape[0], o.c), dtype=self.dtype)
        bias = np.zeros(o.c, dtype=np.float64) if b is not None else None
        # X̃_B V, then X̃_Bᵀ (D_B ·) while X̃_B is in cache
        for s in range(0, self.X.shape[0], HVP_ROW_BLOCK):
            Xb = self.X[s: s + HVP_ROW_BLOCK]
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
        D = np.clip(o._diag_curv(self.curv), 0.0, None)
        X, scale = self.X, 1.0 / o.n
        if max_rows is not None and max_rows < o.n:  # a fixed, evenly spread subsample of rows
            sel = np.linspace(0, o.n - 1, max_rows).astype(np.intp)
            X, D, scale = X[sel], D[sel], 1.0 / max_rows
        k_act = X.shape[1]
        rows = o._scatter_rows()
        facs = []
        for k in range(o.c):
            dk = D[:, k]
            keep = (
                np.flatnonzero(dk > rel_threshold * float(dk.max()))
                if dk.max() > 0
                else np.arange(0)
            )
            sq = np.sqrt(dk[keep]).astype(X.dtype)
            Y = X[keep] * sq[:, None]
            G = np.zeros((rows.size, rows.size), dtype=np.float64)
            G[:k_act, :k_act] = Y.T @ Y
            if o.fit_intercept:
                G[:k_act, k_act] = G[k_act, :k_act] = Y.T @ sq
                G[k_act, k_act] = float(np.sum(dk[keep], dtype=np.float64))
            G *= scale
            if o.P is None:
                G[np.arange(k_act), np.arange(k_act)] += o.l2
            else:
                G[:k_act, :k_act] += o.l2 * o.P[np.ix_(rows[:k_act], rows[:k_act])]
            facs.append(_ridged_inverse(G))
        Minv = np.stack(facs)  # (c, m, m)
        inactive = np.setdiff1d(np.arange(o.d), rows)
        pd_in = np.ones(inactive.size) if o._P_diag is None else o._P_diag[inactive]
        lam_inv = (1.0 / np.where(o.l2 * pd_in > 0, o.l2 * pd_in, 1.0))[:, None]

        def solve(r: FloatArray) -> FloatArray:
            R = r.reshape(o.n_rows, o.c)
            out = np.empty_like(R)
            out[rows] = np.matmul(Minv, R[rows].T[:, :, None])[:, :, 0].T
            out[inactive] = R[inactive] * lam_inv
            return out.ravel()

        return solve


def _ridged_inverse(G: FloatArray) -> FloatArray:
    """(G + ρI)⁻¹ of a symmetric PSD G (in place) by Cholesky: a tiny ridge ρ = 1e-10·mean diag G
    keeps it positive definite without penalty (λ = 0) or for the bias; ×100 until it is."""
    ridge = 1e-10 * max(float(np.trace(G)) / G.shape[0], 1e-30)
    G[np.arange(G.shape[0]), np.arange(G.shape[0])] += ridge
    # small LAPACK calls run single-threaded: multi-threaded potrf on a ~10³ matrix gains
    # nothing and, on a busy machine, spin-waiting BLAS threads make it 100× slower
    with threadpool_limits(limits=1):
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


class LinearRegression(LinearModelObjective):
    """f = 1/(2n) ‖X w + b − y‖² + λ/2 ‖w‖²."""

    model = "linear"
    curvature_bound = 1.0

    def _prepare_y(self, y: ArrayLike, n: int) -> FloatArray:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"y has shape {y.shape}, expected ({n},) real targets; pass one "
                            "target per row of X")
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
            raise DataError("y contains non-numeric or non-finite targets; clean the data before "
                            "fitting")
        return y.astype(self.dtype)[:, None]

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        R = Z - (self.y if y is None else y)
        return 0.5 * float(np.dot(R[:, 0], R[:, 0])), R

    def _loss_sum(self, Z: FloatArray) -> float:
        r = Z[:, 0] - self.y[:, 0]
        return 0.5 * float(np.dot(r, r))

    def _curvature(self, Z: FloatArray) -> FloatArray:
        return np.ones_like(Z)

    def predict(self, X: ArrayLike, w: ArrayLike) -> FloatArray:
        return self.predict_margins(X, w)[:, 0]

    def lipschitz(self, w: ArrayLike | None = None, method: str = "bound") -> float:
        """L = λ_max((1/n) X̃ᵀX̃ + λ I_W), exact: the Hessian is the same everywhere."""
        if method not in ("bound", "lanczos"):
            raise ConfigError(f"lipschitz method={method!r} is unknown; use 'bound' or 'lanczos'")
        if self.n_params <= 2000 and method == "bound":
            H = self.hessian(np.zeros(self.n_params, self.dtype)).astype(np.float64)
            return largest_eigenvalue(H)
        return super().lipschitz(w, method="lanczos")

    def closed_form(self) -> FloatArray:
        """argmin f: solve ((1/n) X̃ᵀX̃ + λ [P 0; 0 0]) w = (1/n) X̃ᵀ y by Cholesky (lstsq if
        singular)."""
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
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"y has shape {y.shape}, expected ({n},) labels in {{0, 1}}")
        if not np.all((y == 0) | (y == 1)):
            raise DataError(worded("binary models need labels in {{0, 1}}; map the two classes to "
                                   "0 and 1 ({dataset.classes})"))
        return y.astype(self.dtype)[:, None]  # type: ignore[attr-defined]

    def predict(self, X: ArrayLike, w: ArrayLike) -> NDArray[np.int64]:
        return (self.predict_margins(X, w)[:, 0] > 0).astype(np.int64)  # type: ignore[attr-defined]


class LogisticRegression(_BinaryMixin, LinearModelObjective):
    """Log-loss f = (1/n) Σ [log(1 + e^{z_i}) − y_i z_i] + λ/2 ‖w‖², z = x·w + b, y ∈ {0, 1}."""

    model = "logistic"
    curvature_bound = 0.25

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        if y is not None:
            return float(np.sum(-log_expit(Z) + (1.0 - y) * Z, dtype=np.float64)), expit(Z) - y
        return self._loss_sum(Z), expit(Z) - self.y

    def _loss_sum(self, Z: FloatArray) -> float:
        # log(1 + e^z) − y z = −log σ(z) + (1 − y) z  (stable through log_expit)
        return float(np.sum(-log_expit(Z) + (1.0 - self.y) * Z, dtype=np.float64))

    def _curvature(self, Z: FloatArray) -> FloatArray:
        s = expit(Z)
        return s * (1.0 - s)

    def predict_proba(self, X: ArrayLike, w: ArrayLike) -> FloatArray:
        """P(y = 1 | x) = σ(x·w + b)."""
        return expit(self.predict_margins(X, w)[:, 0])


class LogisticMSE(_BinaryMixin, LinearModelObjective):
    """Logistic model trained with squared error: f = 1/(2n) Σ (σ(z_i) − y_i)² + λ/2 ‖w‖².

    Not convex: ℓ'' = σ'² + (σ − y) σ'(1 − 2σ) is negative for confident wrong predictions, so the
    Hessian can be indefinite; ``hessian`` returns it as it is (Newton damps it, see optimizers).
    """

    model = "logistic_mse"
    curvature_bound = MSE_LOGISTIC_CURVATURE

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        s = expit(Z)
        r = s - (self.y if y is None else y)
        return 0.5 * float(np.sum(r * r, dtype=np.float64)), r * s * (1.0 - s)

    def _curvature(self, Z: FloatArray) -> FloatArray:
        s = expit(Z)
        ds = s * (1.0 - s)
        return ds * ds + (s - self.y) * ds * (1.0 - 2.0 * s)


class SoftmaxRegression(LinearModelObjective):
    """Cross-entropy f = (1/n) Σ [lse(z_i) − z_{i,y_i}] + λ/2 ‖W‖², Z = X W + 1 bᵀ, c classes.

    Per example the curvature is S_i = diag(p_i) − p_i p_iᵀ, so ∇²f = (1/n) Σ_i x̃_i x̃_iᵀ ⊗ S_i + λ
    I_W.
    """

    model = "softmax"
    curvature_bound = 0.5

    def _n_outputs(self, n_classes: int | None) -> int:
        return -1 if n_classes is None else int(n_classes)  # resolved in _prepare_y

    def _prepare_y(self, y: ArrayLike, n: int) -> FloatArray:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"y has shape {y.shape}, expected ({n},) class indices")
        if not np.issubdtype(y.dtype, np.integer):
            if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
                raise DataError("softmax needs integer class indices 0..c-1 as labels; encode the "
                                "classes first")
        yi = y.astype(np.int64)
        if self.c == -1:
            self.c = int(yi.max()) + 1 if yi.size else 0
        if self.c < 2:
            raise ConfigError(worded("softmax needs n_classes ≥ 2, got {c}; set n_classes or use "
                                     "{objective}=logistic", c=self.c))
        if yi.size and (yi.min() < 0 or yi.max() >= self.c):
            raise DataError(f"labels must lie in 0..{self.c - 1} (n_classes={self.c}); found "
                            f"{yi.min()}..{yi.max()}")
        return yi  # type: ignore[return-value]

    def _loss_dz(self, Z: FloatArray, y: FloatArray | None = None) -> tuple[float, FloatArray]:
        y = self.y if y is None else y
        m = Z.max(axis=1, keepdims=True)
        P = np.exp(Z - m)
        s = P.sum(axis=1, keepdims=True)
        P /= s
        lse = m[:, 0] + np.log(s[:, 0])
        loss = float(np.sum(lse - Z[np.arange(Z.shape[0]), y], dtype=np.float64))
        P[np.arange(Z.shape[0]), y] -= 1.0
        return loss, P

    def _loss_sum(self, Z: FloatArray) -> float:
        return float(np.sum(logsumexp_rows(Z) - Z[np.arange(Z.shape[0]), self.y], dtype=np.float64))

    def _curvature(self, Z: FloatArray) -> FloatArray:
        return softmax_rows(Z)

    def _curv_apply(self, P: FloatArray, U: FloatArray) -> FloatArray:
        PU = P * U
        PU -= P * PU.sum(axis=1, keepdims=True)
        return PU

    def _diag_curv(self, P: FloatArray) -> FloatArray:
        return P * (1.0 - P)

    def _dense_hessian(self, P: FloatArray) -> FloatArray:
        # class-pair blocks: H[(j,k),(j',l)] = (1/n) Σ_i x̃_ij x̃_ij' (δ_kl p_ik − p_ik p_il)
        Xt = self._Xtilde_full()
        k_rows = Xt.shape[1]
        c = self.c
        Hs = np.empty((k_rows, c, k_rows, c), dtype=self.dtype)
        for k in range(c):
            for m in range(k, c):
                wts = (P[:, k] * ((k == m) - P[:, m])) / self.n
                B = Xt.T @ (wts[:, None] * Xt)
                Hs[:, k, :, m] = B
                Hs[:, m, :, k] = B.T
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
        return np.array(rows, dtype=self.dtype).reshape(len(rows), self.n_params)

    def _penalty_null_space(self) -> FloatArray:
        """Orthonormal rows spanning {u : P u = 0} (empty when P = I)."""
        if self.P is None:
            return np.zeros((0, self.d))
        if self._P_null is None:
            ev, V = np.linalg.eigh(self.P)
            tol = max(float(ev[-1]), 0.0) * self.d * 1.0e-12
            self._P_null = np.ascontiguousarray(V[:, ev <= tol].T)
        return self._P_null

    def predict(self, X: ArrayLike, w: ArrayLike) -> NDArray[np.int64]:
        return np.argmax(self.predict_margins(X, w), axis=1).astype(np.int64)

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
    comes out Fortran-ordered and is several times slower)."""
    out = np.empty((X.shape[0], cols.size), dtype=dtype)
    for i in range(0, X.shape[0], 2048):
        out[i:i + 2048] = X[i:i + 2048].take(cols, axis=1)
    return out


def _check_X(X: ArrayLike) -> NDArray[Any]:
    if sparse.issparse(X):
        X = X.toarray()  # type: ignore[union-attr]
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X has shape {X.shape}, expected a non-empty (n, d) matrix, one example "
                        "per row")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"X has dtype {X.dtype}, expected numbers; convert the features to floats")
    if not np.all(np.isfinite(X)):
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


def _check_penalty(P: ArrayLike | None, d: int) -> FloatArray | None:
    if P is None:
        return None
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (d, d):
        raise DataError(f"penalty matrix has shape {P.shape}, expected ({d}, {d}) = features × "
                        "features")
    if not np.all(np.isfinite(P)):
        raise DataError("penalty matrix contains NaN or inf; rebuild it from the transform")
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
) -> LinearModelObjective:
    """The objective of ``model`` ∈ {linear, logistic, logistic_mse, softmax} on (X, y), penalty λ/2
    tr(Wᵀ P W)."""
    if model not in MODELS:
        raise ConfigError(worded("{objective}={model!r} is unknown; use one of {names}",
                                 model=model, names=", ".join(MODELS)))
    return MODELS[model](X, y, l2=l2, fit_intercept=fit_intercept, n_classes=n_classes, dtype=dtype,
                           penalty=penalty)
