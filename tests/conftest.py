"""Shared fixtures. Tests read MNIST / Fashion-MNIST from $CURVLAB_DATA_DIR (CI: ../shared/data, one
sub-folder per data set; a folder holding MNIST's files directly works too) and never download."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir(folder: str) -> Path | None:
    """A data set's IDX folder: $CURVLAB_DATA_DIR itself (MNIST only, as before), its <folder>/,
    else ../shared/data/<folder>."""
    env = os.environ.get("CURVLAB_DATA_DIR")
    cands = ([env] if env and folder == "mnist" else []) + (
        [str(Path(env) / folder)] if env else []
    )
    for cand in [*cands, str(REPO_ROOT.parent / "shared" / "data" / folder)]:
        if (Path(cand) / "train-images-idx3-ubyte.gz").exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Directory holding the four verified MNIST IDX files (skips when absent)."""
    d = data_dir("mnist")
    if d is None:
        pytest.skip("MNIST not found: set CURVLAB_DATA_DIR to a directory with the four IDX .gz "
                    "files")
    return d


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Directory holding the four verified Fashion-MNIST IDX files (skips when absent)."""
    d = data_dir("fashion-mnist")
    if d is None:
        pytest.skip("Fashion-MNIST not found: set CURVLAB_DATA_DIR to a folder holding "
                    "fashion-mnist/")
    return d


@pytest.fixture(autouse=True)
def _no_network_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: the loader refuses the network when this variable is set."""
    monkeypatch.setenv("CURVLAB_OFFLINE", "1")


def _blas_threads_per_worker() -> None:
    """Under pytest-xdist (``make test``: 2 workers) each worker gets cores // workers BLAS and
    OpenMP threads, it and the processes it starts (they inherit the variables): OpenBLAS threads
    that outnumber the cores spin, and a BLAS-heavy test then takes 2-3x as long. Results do not
    depend on the thread count (tests/unit/test_optimizer_loop.py). A value already set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 1:
        return
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(max(1, cores // workers)))
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))  # in case numpy is loaded already


_blas_threads_per_worker()

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's tiny project: one work folder for its runs (tests/support/project.py)."""
    return tmp_path_factory.mktemp("work")


@pytest.fixture
def stage_cli(monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """``stage_cli(prog, *args) -> (exit status, stdout, stderr)``: ``python -m pipeline.<prog>
    args`` in-process."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from pipeline.cli.entry import ALWAYS_HANDLED, HANDLED_IF_DEFAULT

    names = ALWAYS_HANDLED + HANDLED_IF_DEFAULT
    handled = [getattr(signal, n) for n in names if hasattr(signal, n)]
    saved = {s: h for s in handled if (h := signal.getsignal(s)) is not None}
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    # conf/ found from the file, as with python -m
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")

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


# Test kinds, one folder each, in the order ``make test`` hands their files to the xdist workers
# (--dist loadfile --no-loadscope-reorder gives out whole files in collection order): the system
# tests (subprocesses, repo copies) take longest and go first, so that no long file is handed
# out last and runs alone at the end; the in-memory unit tests fill the gaps. Each test is also
# marked with its kind (``-m unit``, ``-m "not system"``). A new file needs no entry anywhere.
KINDS = ("system", "stages", "unit")
TESTS = Path(__file__).resolve().parent


def kind_of(path: Path) -> str:
    """The kind of a test file: the folder under tests/ it lives in."""
    parts = path.resolve().relative_to(TESTS).parts
    if len(parts) < 2 or parts[0] not in KINDS:
        raise pytest.UsageError(f"{path}: a test file lives in tests/{{{','.join(KINDS)}}}/")
    return parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {kind: i for i, kind in enumerate(KINDS)}
    kinds = {item.nodeid: kind_of(item.path) for item in items
             if item.path.resolve().is_relative_to(TESTS)}
    for item in items:
        if item.nodeid in kinds:
            item.add_marker(getattr(pytest.mark, kinds[item.nodeid]))
    # a stable sort: each file stays whole and in its order
    items.sort(key=lambda item: rank.get(kinds.get(item.nodeid, ""), len(rank)))
