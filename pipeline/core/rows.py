"""Inputs kept compact: stored values P and an elementwise affine map, float64 rows made on demand.

``AffineRows`` stands for the float64 matrix Z = (s·P) Aᵀ + 1cᵀ with A diagonal (the ``none`` and
``zscore`` transforms) without holding it: it keeps P as stored (uint8 pixels: 1 byte an entry
instead of 8) and computes a block of rows when a product asks for it, with the same float64
operations in the same order as ``scaled`` then ``Transform.apply`` on the whole matrix — so every
row it makes is bit for bit that row of Z. Products with it (Z W, Zᵀ R, ZᵀZ, column sums) run over
blocks of ``STREAM_ROWS`` rows: their peak is one block, whatever n; their sums over rows are taken
block by block (rounding differs from one product over all rows at the last bits).

The loaders hand a stage an AffineRows only when Z would exceed ``DENSE_MAX_BYTES`` as float64
(``streams``: stored pixels only); below it they build Z itself, the arrays and bits of a float64
copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

STREAM_ROWS = 1024  # rows made float64 at a time by a product (5.9 MB at 717 columns: in cache)
DENSE_MAX_BYTES = 512 << 20  # a float64 matrix up to this size is built whole (MNIST: 344 MB)


def scaled(P: NDArray[Any], scale: float | None,
           out: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """X = s·P in float64 (P: stored values, e.g. uint8 pixels); ``scale`` None: P is X already.
    ``out``: written there (a float64 array of P's shape)."""
    if out is not None:
        if scale is None:
            np.copyto(out, P)
            return out
        return np.multiply(P, scale, out=out)
    if scale is None:
        return np.asarray(P, dtype=np.float64)
    return np.multiply(P, scale, dtype=np.float64)


def streams(n_rows: int, n_cols: int, scale: float | None) -> bool:
    """Stored pixels (``scale`` s of x = s·p given) whose float64 n × k form exceeds
    DENSE_MAX_BYTES: kept as AffineRows rather than built whole (the one rule of the loaders and
    prepare)."""
    return scale is not None and 8 * int(n_rows) * int(n_cols) > DENSE_MAX_BYTES


def compact_columns(X: NDArray[Any], cols: NDArray[np.intp]) -> NDArray[Any]:
    """X[:, cols] written over X's own buffer (C order, row blocks: a block's new rows end before
    the next block's old rows begin, k ≤ d); X itself is garbage after. No second copy of X."""
    n, k = X.shape[0], cols.size
    flat = X.reshape(-1)
    for i in range(0, n, 2048):
        block = X[i:i + 2048].take(cols, axis=1)
        flat[i * k:(i + block.shape[0]) * k] = block.reshape(-1)
    return flat[: n * k].reshape(n, k)


def row_blocks(X: Any, size: int) -> Iterator[tuple[int, NDArray[Any]]]:
    """(start, X[start:start+size]) over the rows of X: views of a numpy array, or AffineRows'
    blocks made in one reused buffer (use each block before taking the next)."""
    if isinstance(X, AffineRows):
        yield from X.blocks(size)
        return
    for s in range(0, X.shape[0], size):
        yield s, X[s: s + size]


@dataclass(frozen=True, eq=False)
class AffineRows:
    """Z = (s·P) diag(a) + 1cᵀ for stored P (n, k), float64 rows made block by block."""

    P: NDArray[Any]  # (n, k) stored values, C-contiguous
    input_scale: float | None  # s of x = s·p (None: P holds x)
    # a core.transforms.Transform, elementwise (matrix None: none or zscore) over P's k columns
    transform: Any

    def __post_init__(self) -> None:
        if self.transform.matrix is not None:
            raise ValueError("AffineRows needs an elementwise transform (none, zscore)")
        if self.P.ndim != 2 or self.transform.n_features_in != self.P.shape[1]:
            raise ValueError(f"stored values of shape {self.P.shape} do not match a transform of "
                             f"{self.transform.n_features_in} features")

    # ----- what code written for an ndarray reads -------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.P.shape[0]), int(self.P.shape[1]))

    ndim = 2
    dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> NDArray[np.float64]:
        """Z[start:stop] in float64."""
        return self._make(self.P[start:stop])

    def _make(self, P: NDArray[Any], out: NDArray[np.float64] | None = None
              ) -> NDArray[np.float64]:
        """The rows of Z of the stored rows P: s·P, then the map, both into ``out`` if given."""
        if out is None:
            out = np.empty(P.shape, dtype=np.float64)
        return self.transform.apply(scaled(P, self.input_scale, out=out), out=out)

    def blocks(self, size: int | None = None) -> Iterator[tuple[int, NDArray[np.float64]]]:
        """(start, Z[start:start+size]) over all rows (``size``: STREAM_ROWS), each block made in
        one buffer reused for the next: use a block before asking for the next one."""
        size = STREAM_ROWS if size is None else size
        buf = np.empty((min(size, self.shape[0]), self.shape[1]), dtype=np.float64)
        for s in range(0, self.shape[0], size):
            P = self.P[s: s + size]
            yield s, self._make(P, buf[: P.shape[0]])

    def __getitem__(self, key: Any) -> NDArray[np.float64]:
        """Z[key] for a slice or an index array of rows (a copy)."""
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self.rows(start, stop)
        return self._make(self.P[key])

    def take(self, indices: Any, axis: int = 0, out: NDArray[Any] | None = None,
             mode: str = "raise") -> NDArray[np.float64]:
        """Rows ``indices`` of Z (``np.take(rows, idx, axis=0, out=…)`` lands here)."""
        if axis != 0:
            raise ValueError("AffineRows.take gathers rows only (axis=0)")
        Z = self._make(np.take(self.P, indices, axis=0, mode=mode))
        if out is None:
            return Z
        out[...] = Z
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        """All of Z (the float64 matrix this stands for: 8 bytes an entry)."""
        return self.astype(np.float64 if dtype is None else dtype)

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        """Z in ``dtype``: itself for float64 without ``copy``, else built block by block."""
        dt = np.dtype(dtype)
        if dt == self.dtype and not copy:
            return self
        out = np.empty(self.shape, dtype=dt)
        for s, Zb in self.blocks():
            out[s: s + Zb.shape[0]] = Zb
        return out

    def __matmul__(self, W: NDArray[Any]) -> NDArray[np.float64]:
        """Z W, block by block of rows (each row of the result is that row of Z times W)."""
        W = np.asarray(W)
        out = np.empty((self.shape[0],) + W.shape[1:], dtype=np.result_type(W, np.float64))
        for s, Zb in self.blocks():
            out[s: s + Zb.shape[0]] = Zb @ W
        return out

    @property
    def T(self) -> _Transposed:
        return _Transposed(self)

    def sum(self, axis: int | None = None, dtype: Any = np.float64) -> Any:
        """Column sums 1ᵀZ (axis 0), summed block by block; the total for axis None."""
        if axis not in (0, None):
            raise ValueError("AffineRows.sum sums over rows (axis 0) or all entries")
        total = np.zeros(self.shape[1], dtype=dtype)
        for _, Zb in self.blocks():
            total += Zb.sum(axis=0, dtype=dtype)
        return total if axis == 0 else total.sum(dtype=dtype)

    # ----- the compact form --------------------------------------------------------------------
    def active_columns(self) -> NDArray[np.intp]:
        """Indices of the columns of Z with a nonzero entry."""
        seen = np.zeros(self.shape[1], dtype=bool)
        for _, Zb in self.blocks():
            seen |= Zb.any(axis=0)
        return np.flatnonzero(seen)

    def columns(self, cols: NDArray[np.intp], in_place: bool = False) -> AffineRows:
        """Z[:, cols] as AffineRows: P's columns copied compactly (C order), the map restricted;
        ``in_place``: written over P's buffer when it is writeable (P is garbage after; the
        caller gives it up, as a stage does with the stored rows it loaded)."""
        t, P = self.transform, self.P
        if in_place and P.flags.writeable and P.flags.c_contiguous:
            out = compact_columns(P, cols)
        else:
            out = np.empty((self.shape[0], cols.size), dtype=P.dtype)
            for i in range(0, self.shape[0], STREAM_ROWS):
                out[i: i + STREAM_ROWS] = P[i: i + STREAM_ROWS].take(cols, axis=1)
        sub = replace(t, offset=np.asarray(t.offset)[cols],
                      scale=None if t.scale is None else np.asarray(t.scale)[cols])
        return AffineRows(out, self.input_scale, sub)

    def column_stats(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """(mean μ_j, standard deviation σ_j = √((1/n) Σ_i (z_ij − μ_j)²), constant column?) over
        blocks of rows (two passes)."""
        n, k = self.shape
        total, lo, hi = np.zeros(k), np.full(k, np.inf), np.full(k, -np.inf)
        for _, Zb in self.blocks():
            total += Zb.sum(axis=0, dtype=np.float64)
            np.minimum(lo, Zb.min(axis=0), out=lo)
            np.maximum(hi, Zb.max(axis=0), out=hi)
        mu = total / n
        sq = np.zeros(k)
        for _, Zb in self.blocks():
            Zb -= mu
            sq += np.einsum("ij,ij->j", Zb, Zb, dtype=np.float64)
        return mu, np.sqrt(sq / n), lo == hi

    def abs_max(self) -> float:
        """max |z_ij|."""
        return max((float(np.max(np.abs(Zb))) for _, Zb in self.blocks()), default=0.0)

    def square_rows_max(self) -> float:
        """max_i ‖z_i‖²."""
        return max((float(np.einsum("ij,ij->i", Zb, Zb, dtype=np.float64).max())
                    for _, Zb in self.blocks()), default=0.0)

    def squares(self) -> NDArray[np.float64]:
        """Z ∘ Z as a float64 matrix (built block by block)."""
        out = np.empty(self.shape, dtype=np.float64)
        for s, Zb in self.blocks():
            np.multiply(Zb, Zb, out=out[s: s + Zb.shape[0]])
        return out


@dataclass(frozen=True, eq=False)
class _Transposed:
    """Zᵀ of an AffineRows, for Zᵀ R = Σ_B Z_Bᵀ R_B."""

    Z: AffineRows

    @property
    def shape(self) -> tuple[int, int]:
        return self.Z.shape[::-1]

    def __matmul__(self, R: Any) -> NDArray[np.float64]:
        """Zᵀ R summed over blocks of rows (R an array with Z's rows, or Z itself: ZᵀZ)."""
        k = self.Z.shape[1]
        if isinstance(R, AffineRows):
            if R is not self.Z:
                raise ValueError("AffineRows: Zᵀ times another AffineRows is not supported")
            G = np.zeros((k, k), dtype=np.float64)
            for _, Zb in self.Z.blocks():
                G += Zb.T @ Zb
            return G
        R = np.asarray(R)
        G = np.zeros((k,) + R.shape[1:], dtype=np.result_type(R, np.float64))
        for s, Zb in self.Z.blocks():
            G += Zb.T @ R[s: s + Zb.shape[0]]
        return G
