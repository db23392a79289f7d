"""Faults that need a process of their own (8 and the end of 12): a signal ends a run, or a
parallel sweep, killed with one ``prog: error:`` line, and the ``python -m`` path prints one line;
every earlier result byte-identical afterwards (the other faults in-process:
tests/stages/test_bad_inputs.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.project import (
    TINY,
    mlflow_runs,
    paths,
    prepare_tiny,
    quiet,
    trained_tiny,
    wait_running,
)
from support.repo_copy import REPO_ROOT, env_for
from support.snapshots import one_error_line, snapshot


@pytest.fixture(scope="module")
def work(work: Path) -> Path:
    """The module's work folder with the tiny data set prepared (in-process)."""
    prepare_tiny(work / "prepared", ["none"], data=TINY[:3])
    return work


@pytest.fixture
def trained(work: Path, stage_cli: Any) -> Path:
    """A trained and evaluated run (the earlier result the faults must not touch)."""
    return trained_tiny(work, quiet(stage_cli))


def _popen(args: list[str], work: Path) -> subprocess.Popen[str]:
    env = env_for(REPO_ROOT)
    return subprocess.Popen([sys.executable, "-m", *args], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)



@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_8_a_signal_ends_a_run_killed_with_one_line(work: Path, trained: Path, tmp_path: Path,
                                                    sig: int, code: int) -> None:
    db = tmp_path / "mlflow.db"
    before = snapshot(work / "experiments")
    proc = _popen(
        [
            "pipeline.train",
            *TINY,
            "study=t",
            "optimizer.max_iter=100000000",
            "optimizer.tol=0",
            "progress=false",
            *paths(work, **{"mlflow.tracking_uri": f"sqlite:///{db}"}),
        ],
        work,
    )
    try:
        wait_running(db)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(sig).name}" in one_error_line(err, "train")
    assert [s for _, s, _ in mlflow_runs(db)] == ["KILLED"]
    assert snapshot(work / "experiments") == before  # the earlier run of this name is untouched
    assert not [p for p in (work / "experiments" / "t").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_8_ctrl_c_on_a_parallel_sweep_marks_parent_and_children_killed(
    work: Path, tmp_path: Path
) -> None:
    db = tmp_path / "mlflow.db"
    exp = tmp_path / "experiments"
    proc = _popen(
        [
            "pipeline.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *TINY,
            "study=sw8",
            "optimizer.max_iter=100000000",
            "optimizer.tol=0",
            "optimizer.lr=0.1,0.2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *paths(
                work,
                **{"mlflow.tracking_uri": f"sqlite:///{db}", "paths.experiments_dir": str(exp)},
            ),
        ],
        work,
    )
    try:
        wait_running(db, 3, timeout=240)  # the parent and both jobs
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        _, err = proc.communicate(timeout=90)
    finally:
        with_suppress_kill(proc)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    runs = mlflow_runs(db)
    assert len(runs) == 3 and {s for _, s, _ in runs} == {"KILLED"}, runs
    assert not exp.exists() or not [p for p in exp.rglob("*") if p.is_file()]


def with_suppress_kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.mark.slow
def test_12_the_python_m_path_prints_one_line(work: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", "optimizer=rmsprop"], cwd=work,
                          env=env_for(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert ("choose one of adagrad, adam, closed_form, diag_newton, gd, gd_armijo, heavy_ball, "
            "lbfgs, nesterov, newton, newton_cg") in one_error_line(proc.stderr, "train")
