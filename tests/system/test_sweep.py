"""Parallel Hydra sweeps (joblib, 2 workers) in a copy of the repo: every job lands in a fresh
mlflow.db as a child of one parent run; a failing job fails the sweep with one line, not a
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.project import TINY, sweep_runs
from support.repo_copy import run_cmd

from pipeline.store.rundir import read_run_record


@pytest.mark.slow
def test_parallel_sweep_records_every_job_under_one_parent(repo: Path) -> None:
    assert not (repo / "mlflow.db").exists()  # a fresh store: schema creation races are in play
    res = run_cmd(
        [
            "python",
            "-m",
            "pipeline.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *TINY,
            "preprocess=none,whiten",
            "optimizer=gd,newton,closed_form",
            "study=sweep",
            "optimizer.max_iter=200",
        ],
        cwd=repo,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "n_jobs=2" in res.stdout + res.stderr and "launching 6 jobs" in res.stdout + res.stderr
    parent, children = sweep_runs(repo, "sweep")
    assert len(children) == 6
    assert parent.info.status == "FINISHED"
    # the parent says what was swept; the swept keys are its params
    assert parent.info.run_name == "sweep: preprocess=none,whiten × optimizer=gd,newton,closed_form"
    assert parent.data.params == {"preprocess": "none,whiten", "optimizer": "gd,newton,closed_form"}
    assert len({c.info.run_name for c in children}) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    dirs = sorted((repo / "experiments" / "sweep").iterdir())
    assert [d.name for d in dirs] == sorted(
        f"synth-kappa100-{p}-linear-{o},data.n_features=5,data.n_samples=300,optimizer.max_iter=200"
        for p in ("none", "whiten") for o in ("gd", "newton", "closed_form"))
    ids = {read_run_record(d / "metrics.json")["mlflow_run_id"] for d in dirs}
    assert ids == {c.info.run_id for c in children}
    sweep_dirs = list((repo / "experiments" / ".hydra" / "multirun").iterdir())
    assert len(sweep_dirs) == 1
    assert (sweep_dirs[0] / "mlflow_parent_run_id").read_text().strip() == parent.info.run_id
    assert not (repo / "multirun").exists() and not (repo / "outputs").exists()


@pytest.mark.slow
def test_a_failing_job_fails_the_sweep_but_not_the_others(repo: Path) -> None:
    res = run_cmd(["python", "-m", "pipeline.train", "-m", *TINY, "preprocess=none", "optimizer=gd",
                   "optimizer.lr=auto,50.0", "study=failing"], cwd=repo)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "train: error: 1 sweep job(s) failed (job 1)" in res.stderr
    assert "diverged" in res.stderr
    parent, children = sweep_runs(repo, "failing")
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
