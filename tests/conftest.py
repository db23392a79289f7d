"""Shared fixtures. Tests read MNIST / Fashion-MNIST from $CURVLAB_DATA_DIR (CI: ../shared/data, one
sub-folder per data set; a folder holding MNIST's files directly works too) and never download."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir(folder: str) -> Path | None:
    """A data set's IDX folder: $CURVLAB_DATA_DIR itself (MNIST only, as before), its <folder>/, else ../shared/data/<folder>."""
    env = os.environ.get("CURVLAB_DATA_DIR")
    cands = ([env] if env and folder == "mnist" else []) + ([str(Path(env) / folder)] if env else [])
    for cand in [*cands, str(REPO_ROOT.parent / "shared" / "data" / folder)]:
        if (Path(cand) / "train-images-idx3-ubyte.gz").exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Directory holding the four verified MNIST IDX files (skips when absent)."""
    d = data_dir("mnist")
    if d is None:
        pytest.skip("MNIST not found: set CURVLAB_DATA_DIR to a directory with the four IDX .gz files")
    return d


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Directory holding the four verified Fashion-MNIST IDX files (skips when absent)."""
    d = data_dir("fashion-mnist")
    if d is None:
        pytest.skip("Fashion-MNIST not found: set CURVLAB_DATA_DIR to a folder holding fashion-mnist/")
    return d


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get (root) when absent, else the test is skipped."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("headless Chromium unavailable: `apt-get install -y chromium` failed or not root")
    return exe


@pytest.fixture(autouse=True)
def _no_network_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: the loader refuses the network when this variable is set."""
    monkeypatch.setenv("CURVLAB_OFFLINE", "1")


def _blas_threads_per_worker() -> None:
    """Under pytest-xdist (``make test``: 2 workers) each worker gets cores // workers BLAS and
    OpenMP threads, it and the processes it starts (they inherit the variables): OpenBLAS threads
    that outnumber the cores spin, and a BLAS-heavy test then takes 2-3x as long. Results do not
    depend on the thread count (tests/test_optimizer_loop.py). A value already set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(max(1, cores // workers)))
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))  # in case numpy is loaded already


_blas_threads_per_worker()

# The longest files (measured, slowest first), sent to the xdist workers first: ``make test``
# hands out whole files in collection order (--dist loadfile --no-loadscope-reorder), and a long
# file handed out last would run alone at the end. A serial run keeps the usual order.
LONGEST_FIRST = ("test_scaling.py", "test_report_e2e.py", "test_bad_inputs.py", "test_penalty_space.py",
                 "test_dvc.py", "test_prepare.py", "test_tuning.py", "test_report.py", "test_idx_datasets.py",
                 "test_sweep.py", "test_tracking.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0) > 0:
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept


@pytest.fixture
def stage_cli(monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """``stage_cli(prog, *args) -> (exit status, stdout, stderr)``: ``python -m pipeline.<prog> args`` in-process."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from pipeline.cli.entry import ALWAYS_HANDLED, HANDLED_IF_DEFAULT

    names = ALWAYS_HANDLED + HANDLED_IF_DEFAULT
    handled = [getattr(signal, n) for n in names if hasattr(signal, n)]
    saved = {s: h for s in handled if (h := signal.getsignal(s)) is not None}
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # conf/ found from the file, as with python -m

    def call(prog: str, *args: str) -> tuple[int, str, str]:
        mod = importlib.import_module(f"pipeline.{prog}")
        monkeypatch.setattr(sys, "argv", [f"pipeline/{prog}.py", *args])
        capsys.readouterr()
        try:
            with pytest.raises(SystemExit) as ex:
                mod.main()
        finally:
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None  # type: ignore[assignment]
        out, err = capsys.readouterr()
        return int(ex.value.code or 0), out, err

    yield call
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.fixture(scope="module")
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread for a module's dense ~785 × 785 factorizations: on two shared, busy cores
    OpenBLAS's two spinning threads make Cholesky and eigvalsh 10–60× slower (same results)."""
    import scipy.linalg  # noqa: F401 - scipy's own OpenBLAS: loaded now, so that the limit covers it too
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
