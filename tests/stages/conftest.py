"""Fixtures of the stage tests: the tiny project's work folder, a stage's command line run
in-process, one BLAS thread."""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's tiny project: one work folder for its runs (tests/support/project.py)."""
    return tmp_path_factory.mktemp("work")


# the schema each stage's ``__main__`` hands to run_cli (it names config keys in error lines)
_STAGE_SCHEMAS = {"train": ("pipeline.config.schemas", "TrainConfig"), "evaluate": ("pipeline.config.schemas", "EvaluateConfig"),
                  "prepare": ("pipeline.config.schemas", "PrepareConfig"), "reference": ("pipeline.config.schemas", "ReferenceConfig"),
                  "analytic": ("pipeline.analytic", "AnalyticConfig"), "report": ("pipeline.report", "ReportConfig")}


@pytest.fixture
def stage_cli(monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """``stage_cli(prog, *args) -> (exit status, stdout, stderr)``: ``python -m pipeline.<prog> args`` in-process."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from pipeline.cli.entry import run_cli

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # conf/ found from the file, as with python -m

    def call(prog: str, *args: str) -> tuple[int, str, str]:
        mod = importlib.import_module(f"pipeline.{prog}")
        home, name = _STAGE_SCHEMAS[prog]
        monkeypatch.setattr(sys, "argv", [f"pipeline/{prog}.py", *args])
        capsys.readouterr()
        try:
            with pytest.raises(SystemExit) as ex:
                run_cli(prog, mod.main, getattr(importlib.import_module(home), name))
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
