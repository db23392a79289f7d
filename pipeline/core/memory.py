"""The memory budget (``limits.memory_gb``): allocation estimates, from shapes, checked before work.

Every estimate counts float64 arrays (8 bytes an entry) that are alive at the same time at the
peak of a step; they are upper estimates of the arrays a step holds, not of the interpreter.
"""

from __future__ import annotations

import math

from pipeline.core.errors import ConfigError

MEMORY_GB = 4.0  # the default of limits.memory_gb
GIB = 1 << 30
FLOAT = 8  # bytes of a float64


def budget_bytes(memory_gb: float) -> int:
    """``memory_gb`` GiB in bytes: ⌊memory_gb · 2³⁰⌋."""
    return int(memory_gb * GIB)


def check_memory_gb(value: object) -> float:
    """limits.memory_gb as a float > 0, or a one-line ConfigError."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and value > 0):  # type: ignore[operator]
        raise ConfigError(f"limits.memory_gb={value!r} must be a finite number of GiB > 0, "
                          f"e.g. {MEMORY_GB}")
    return float(value)  # type: ignore[arg-type]


def table_bytes(n_rows: int, n_cols: int) -> int:
    """A float64 table of n_rows × n_cols: 8·n·d bytes."""
    return FLOAT * int(n_rows) * int(n_cols)


def synthetic_bytes(n_samples: int, n_features: int) -> int:
    """Synthetic least squares: V and its QR (3 d²); G, Q, X_train, X_test and a product (4 n d)."""
    n, d = int(n_samples), int(n_features)
    return FLOAT * (3 * d * d + 4 * n * d)


def prepare_bytes(n_rows: int, n_features: int, stored_bytes: int = FLOAT,
                  block_rows: int | None = None) -> int:
    """Preprocessing n × d rows: the stored inputs (``stored_bytes`` an entry), the float64 inputs
    the transform is fitted on and one temporary of their size (2 n d) — or, streamed
    (``block_rows``: core.rows.AffineRows), a copy of the stored training rows and two float64
    blocks — and the (d+1)² second moment, its eigendecomposition, the transform and the
    transformed Hessian (6 (d+1)²)."""
    n, d = int(n_rows), int(n_features)
    fit = FLOAT * 2 * n * d if block_rows is None else stored_bytes * n * d + FLOAT * 2 * min(
        n, int(block_rows)) * d
    return stored_bytes * n * d + fit + FLOAT * 6 * (d + 1) ** 2


def hessian_bytes(n_params: int) -> int:
    """A dense p × p Hessian, the copy its eigenvalues are computed on, LAPACK's work (3 p²)."""
    p = int(n_params)
    return FLOAT * 3 * p * p


def check_memory(need: int, what: str, memory_gb: float, fix: str) -> None:
    """need ≤ memory_gb · 2³⁰ bytes, else one ConfigError line naming ``limits.memory_gb``."""
    if need > budget_bytes(memory_gb):
        raise ConfigError(f"{what} needs about {need / GIB:.3g} GiB of memory, more than "
                          f"limits.memory_gb={memory_gb:g}; {fix}, or raise limits.memory_gb")
