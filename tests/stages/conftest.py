"""Fixtures of the stage tests: one BLAS thread, the tiny project prepared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.project import TINY, prepare_tiny


@pytest.fixture(scope="module")
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread for a module's dense ~785 × 785 factorizations: on two shared, busy cores
    OpenBLAS's two spinning threads make Cholesky and eigvalsh 10–60× slower (same results)."""
    # scipy's own OpenBLAS: loaded now, so that the limit covers it too
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def tiny_work(work: Path) -> Path:
    """The module's work folder with the tiny data set prepared (preprocess none, in-process)."""
    prepare_tiny(work / "prepared", ["none"], data=TINY[:3])
    return work
