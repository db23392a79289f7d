"""Whitening from the uncentered auto-covariance: T = Λ^-1/2 Φᵀ where (1/n) X̃ᵀX̃ = Φ Λ Φᵀ.

Rows of ``X`` are examples, so the lecture's auto-covariance XXᵀ (columns = examples) is
``X.T @ X`` here. With ``augment=True`` the constant bias feature is appended before the
eigendecomposition (X̃ = [X, 1]); the transformed inputs z = T x̃ then carry the bias, the model
is fitted without a separate intercept, and its MSE Hessian (1/n) ZᵀZ = T C Tᵀ is exactly I.

Inputs of any array API library (torch, cupy, ...) are whitened with that library on their device
(eigendecomposition by ``pipeline.core.linalg.eigh``) and give arrays of that library; numpy inputs
take numpy's own calls. Which directions to keep is decided on a host copy of the spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core import linalg
from pipeline.core.backend import foreign_namespace, namespace, to_namespace, to_numpy
from pipeline.core.errors import NumericalError, OptionError, worded
from pipeline.core.rows import AffineRows


def second_moment(X: Any, augment: bool = False) -> Any:
    """C = (1/n) X̃ᵀX̃ with X̃ = [X, 1] when ``augment`` (the MSE Hessian of a linear model)."""
    xp = foreign_namespace(X)
    if xp is not None:
        return _second_moment_xp(xp, X, augment)
    streamed = isinstance(X, AffineRows)  # rows made on demand: sums over blocks of rows
    X = X if streamed else np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if not augment:
        return (X.T @ X) / n
    C = np.empty((d + 1, d + 1), dtype=np.float64)
    C[:d, :d] = (X.T @ X) / n
    mean = X.sum(axis=0) / n if streamed else X.mean(axis=0)
    C[:d, d] = mean
    C[d, :d] = mean
    C[d, d] = 1.0
    return C


def _second_moment_xp(xp: Any, X: Any, augment: bool) -> Any:
    """``second_moment`` with the array API namespace ``xp`` (on X's device)."""
    X = xp.asarray(X, dtype=xp.float64)
    n = X.shape[0]
    G = (X.T @ X) / n
    if not augment:
        return G
    mean = xp.mean(X, axis=0)
    one = xp.ones((1, 1), dtype=xp.float64, device=X.device)
    top = xp.concat([G, mean[:, None]], axis=1)
    return xp.concat([top, xp.concat([mean[None, :], one], axis=1)], axis=0)


def spectrum(C: Any) -> Any:
    """Eigenvalues of the symmetric matrix ``C``, descending, round-off negatives clipped to 0."""
    xp = foreign_namespace(C)
    if xp is not None:
        return xp.clip(xp.flip(linalg.eigvalsh(C)), min=0.0)
    lam = np.linalg.eigvalsh(C)[::-1]
    return np.clip(lam, 0.0, None)


def numerical_rank(lam: Any) -> int:
    """Number of eigenvalues above λ_max · dim · machine-ε (as ``numpy.linalg.matrix_rank``)."""
    lam = to_numpy(lam)
    if lam.size == 0 or lam[0] <= 0:
        return 0
    tol = lam[0] * lam.size * np.finfo(np.float64).eps
    return int(np.count_nonzero(lam > tol))


def condition_number(lam: Any) -> float:
    """κ = λ_max / λ_min of a descending spectrum; ``inf`` when it is numerically singular."""
    lam = to_numpy(lam)
    if numerical_rank(lam) < lam.size:
        return float("inf")
    return float(lam[0] / lam[-1])


def condition_number_nonzero(lam: Any) -> float:
    """λ_max / (smallest numerically nonzero λ): the conditioning on the column space of X̃.

    For least squares, GD started in that space never leaves it, so this κ sets its rate even
    when the Hessian is singular (then ``condition_number`` is ``inf``).
    """
    lam = to_numpy(lam)
    r = numerical_rank(lam)
    return float(lam[0] / lam[r - 1]) if r > 0 else float("inf")


@dataclass(frozen=True, eq=False)
class Whitening:
    """A fitted whitening map z = T x̃ and the spectrum it came from."""

    T: Any  # (k, d̃): rows are Λ_k^-1/2 Φ_kᵀ (or Φ_k Λ_k^-1/2 Φ_kᵀ for ZCA, k = d̃)
    eigenvalues: Any  # all eigenvalues of C, descending (the namespace of the data)
    n_kept: int  # eigen-directions kept
    augment: bool


def n_keep(
    lam: Any,
    *,
    rel_threshold: float | None = None,
    n_components: int | None = None,
    explained_variance: float | None = None,
) -> int:
    """How many leading eigen-directions to keep (the strictest of the three rules; all when none
    set)."""
    lam = to_numpy(lam)
    k = lam.size
    if rel_threshold is not None:
        k = min(k, int(np.count_nonzero(lam >= rel_threshold * lam[0])))
    if n_components is not None:
        if n_components > lam.size:
            raise OptionError("transform", "n_components", n_components,
                              "exceeds the {d} input dimensions; lower it", show=str, d=lam.size)
        k = min(k, int(n_components))
    if explained_variance is not None:
        share = np.cumsum(lam) / lam.sum()
        k = min(k, int(np.searchsorted(share, explained_variance * (1 - 1e-12))) + 1)
    return k


def fit_whitening(
    X: Any,
    *,
    eps: float = 0.0,
    ridge: float = 0.0,
    drop_null_only: bool = False,
    rel_threshold: float | None = None,
    n_components: int | None = None,
    explained_variance: float | None = None,
    zca: bool = False,
    augment: bool = True,
    C: Any = None,
) -> Whitening:
    """Fit T = (Λ_k + ε)^-1/2 Φ_kᵀ from C + ridge·I_W = Φ Λ Φᵀ, C = (1/n) X̃ᵀX̃ (ZCA: Φ_k (Λ_k +
    ε)^-1/2 Φ_kᵀ).

    ``ridge`` (ridge whitening, = the model's λ) is added on the weight coordinates only (I_W: not
    on the bias column of an augmented C), so the regularized least-squares Hessian in z is I.
    Directions are dropped by ``rel_threshold`` (λ_i < rel_threshold · λ_max), ``n_components``
    or ``explained_variance``; ``drop_null_only`` drops exactly the numerically null directions
    (no data at all) instead. ``eps`` is added to the kept eigenvalues. A kept direction whose
    λ_i + ε is numerically zero (a singular C with nothing dropped and no ε) is a NumericalError.
    ``C`` may pass a precomputed ``second_moment(X, augment)`` to save the O(n d²) product;
    ``eigenvalues`` of the result are those of C + ridge·I_W. T and the eigenvalues are arrays of
    the namespace of ``X`` (or ``C``).
    """
    if C is None:
        C = second_moment(X, augment=augment)
    like = next((a for a in (X, C) if foreign_namespace(a) is not None), None)
    if like is not None:
        return _fit_whitening_xp(to_namespace(C, like), eps=eps, ridge=ridge,
                                 drop_null_only=drop_null_only, rel_threshold=rel_threshold,
                                 n_components=n_components,
                                 explained_variance=explained_variance, zca=zca, augment=augment)
    if ridge:
        C = np.array(C, dtype=np.float64, copy=True)
        m = C.shape[0] - 1 if augment else C.shape[0]
        C[np.arange(m), np.arange(m)] += ridge
    lam_asc, Phi_asc = np.linalg.eigh(C)
    lam, Phi = lam_asc[::-1], Phi_asc[:, ::-1]
    k = _n_kept(lam, eps, drop_null_only, rel_threshold, n_components, explained_variance)
    lam_k = lam[:k] + eps
    T = Phi[:, :k].T / np.sqrt(lam_k)[:, None]  # Λ_k^-1/2 Φ_kᵀ
    if zca:
        T = Phi[:, :k] @ T  # Φ_k Λ_k^-1/2 Φ_kᵀ: back in pixel coordinates
    return Whitening(T=T, eigenvalues=np.clip(lam, 0.0, None), n_kept=k, augment=augment)


def _n_kept(lam: np.ndarray, eps: float, drop_null_only: bool, rel_threshold: float | None,
            n_components: int | None, explained_variance: float | None) -> int:
    """The number k of leading directions of the descending host spectrum ``lam`` to keep; a
    NumericalError when C is zero or a kept λ_i + ε is numerically zero."""
    k = n_keep(
        lam,
        rel_threshold=rel_threshold,
        n_components=n_components,
        explained_variance=explained_variance,
    )
    tol = max(lam[0], 0.0) * lam.size * np.finfo(np.float64).eps
    if drop_null_only:
        k = max(1, int(np.count_nonzero(lam > tol)))
    lam_k = lam[:k] + eps
    if k == 0 or lam[0] <= 0:
        raise NumericalError(
            worded("training inputs are all zero; whitening is undefined, use {transform}=none")
        )
    if lam_k[-1] <= tol:
        rank = numerical_rank(np.clip(lam, 0, None))
        raise NumericalError(worded(
            "the training second-moment matrix is singular (rank {rank} of {d}, smallest kept "
            "eigenvalue {lam:.3g}); set {transform.rel_threshold} (e.g. 1.0e-6), "
            "{transform.eps} > 0, {transform.n_components} or {transform.explained_variance}",
            rank=rank, d=lam.size, lam=lam_k[-1]))
    return k


def _fit_whitening_xp(C: Any, *, eps: float, ridge: float, drop_null_only: bool,
                      rel_threshold: float | None, n_components: int | None,
                      explained_variance: float | None, zca: bool, augment: bool) -> Whitening:
    """``fit_whitening`` with the array API namespace ``xp``: on C's device, k decided on the
    host from a copy of the spectrum."""
    xp = namespace(C)
    if ridge:
        m = C.shape[0]
        on_weights = xp.arange(m, device=C.device) < (m - 1 if augment else m)
        I_W = xp.eye(m, dtype=xp.float64, device=C.device) * xp.astype(on_weights, xp.float64)
        C = C + ridge * I_W
    lam_asc, Phi_asc = linalg.eigh(C)
    lam, Phi = xp.flip(lam_asc), xp.flip(Phi_asc, axis=1)
    k = _n_kept(to_numpy(lam), eps, drop_null_only, rel_threshold, n_components,
                explained_variance)
    lam_k = lam[:k] + eps
    T = Phi[:, :k].T / xp.sqrt(lam_k)[:, None]  # Λ_k^-1/2 Φ_kᵀ
    if zca:
        T = Phi[:, :k] @ T  # Φ_k Λ_k^-1/2 Φ_kᵀ: back in pixel coordinates
    return Whitening(T=T, eigenvalues=xp.clip(lam, min=0.0), n_kept=k, augment=augment)
