"""Linear algebra the array API standard lacks or does differently, one small function each, per
backend: numpy keeps its LAPACK/ARPACK calls (SciPy), the others use their ``xp.linalg`` or run
Lanczos on the host with the matrix-vector product on the device.

Every function takes arrays of one namespace (``pipeline.core.backend.namespace``) and returns the
same namespace's arrays (or a Python float).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import linalg as sla
from scipy.sparse import linalg as spla

from pipeline.core.backend import is_numpy, namespace, to_numpy


class SingularMatrixError(ArithmeticError):
    """A factorization met a matrix that is not positive definite (the caller says what to do)."""


def largest_eigenvalue(M: Any) -> float:
    """λ_max of a dense symmetric matrix (numpy: LAPACK's subset solver, the full spectrum where it
    fails: some builds' dsyevr stops with an internal error on clustered spectra such as M ≈ I)."""
    xp = namespace(M)
    if not is_numpy(xp):
        return float(xp.linalg.eigvalsh(M)[-1])
    k = M.shape[0]
    try:
        return float(sla.eigvalsh(M, subset_by_index=[k - 1, k - 1])[0])
    except np.linalg.LinAlgError:
        return float(np.linalg.eigvalsh(M)[-1])


def eigvalsh(M: Any) -> Any:
    """Eigenvalues of a symmetric matrix, ascending."""
    return namespace(M).linalg.eigvalsh(M)


def eigh(M: Any) -> tuple[Any, Any]:
    """(eigenvalues ascending, eigenvectors as columns) of a symmetric matrix."""
    res = namespace(M).linalg.eigh(M)
    return res[0], res[1]


def top_eigenvalue(matvec: Callable[[Any], Any], p: int, dtype: Any = np.float64,
                   tol: float = 1.0e-6, like: Any = None) -> float:
    """Largest algebraic eigenvalue of a symmetric operator on R^p by Lanczos (SciPy's eigsh on the
    host; ``like``: an array of the backend ``matvec`` computes on, None = numpy)."""
    dt = np.dtype(dtype)
    if like is None or isinstance(like, np.ndarray):
        def host(v: np.ndarray) -> np.ndarray:
            return matvec(np.asarray(v, dtype=dt).ravel())
    else:
        xp = namespace(like)
        xdt = getattr(xp, dt.name)
        dev = getattr(like, "device", None)

        def host(v: np.ndarray) -> np.ndarray:
            arr = xp.asarray(np.asarray(v, dtype=dt).ravel(), dtype=xdt, device=dev)
            return to_numpy(matvec(arr))
    if p <= 2:
        M = np.column_stack([host(e) for e in np.eye(p, dtype=dt)])
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    op = spla.LinearOperator((p, p), matvec=host, dtype=dt)
    v0 = np.full(p, 1.0 / np.sqrt(p), dtype=dt)
    vals = spla.eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return float(vals[-1])


def cholesky_solve(H: Any, g: Any) -> Any:
    """H⁻¹ g for a symmetric positive definite H by Cholesky; SingularMatrixError if it is not."""
    xp = namespace(H, g)
    if is_numpy(xp):
        try:
            c = sla.cho_factor(H, check_finite=False)
        except sla.LinAlgError as exc:
            raise SingularMatrixError(str(exc)) from None
        return sla.cho_solve(c, g, check_finite=False)
    L = cholesky_lower(H)
    y = xp.linalg.solve(L, g)
    return xp.linalg.solve(L.mT if hasattr(L, "mT") else xp.matrix_transpose(L), y)


def cholesky_lower(M: Any) -> Any:
    """The lower Cholesky factor L (M = L Lᵀ) of a symmetric positive definite M;
    SingularMatrixError if it is not, on every backend (numpy raises LinAlgError, torch a
    RuntimeError, cupy gives NaN)."""
    xp = namespace(M)
    try:
        L = xp.linalg.cholesky(M)
    except (ValueError, RuntimeError) as exc:  # numpy's LinAlgError is a ValueError
        raise SingularMatrixError(str(exc)) from None
    if not bool(xp.all(xp.isfinite(L))):
        raise SingularMatrixError("matrix is not positive definite")
    return L


def lstsq(A: Any, B: Any) -> Any:
    """The minimum-norm least-squares solution X of A X ≈ B (numpy: LAPACK's gelsd via
    ``numpy.linalg.lstsq``; others: the pseudo-inverse, same cutoff max(m, n)·ε·σ_max)."""
    xp = namespace(A, B)
    if is_numpy(xp):
        return np.linalg.lstsq(A, B, rcond=None)[0]
    return xp.linalg.pinv(A) @ B
