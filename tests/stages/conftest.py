"""Fixtures of the stage tests: one BLAS thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread for a module's dense ~785 × 785 factorizations: on two shared, busy cores
    OpenBLAS's two spinning threads make Cholesky and eigvalsh 10–60× slower (same results)."""
    # scipy's own OpenBLAS: loaded now, so that the limit covers it too
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
