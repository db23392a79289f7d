"""The tiny project of the stage tests: a work folder holding prepared/, experiments/ and an MLflow
store, configs composed with their paths pointed into it, the tiny data sets prepared in-process."""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.config.schemas import as_kwargs
from pipeline.prepare import prepare
from pipeline.spec import RunSpec
from pipeline.store.prepared import prepared_file
from support.compose import CONF, compose_app

# a synthetic least-squares problem small enough for a subprocess sweep of six jobs
TINY = ["data=synthetic_regression", "data.n_samples=300", "data.n_features=5", "model=linear"]
SYNTH = ["data=synthetic_regression", "data.n_samples=400", "data.n_features=5", "model=linear"]
# the run folder of TINY trained with GD from the command line (its overrides name the run)
TINY_RUN = "synth-kappa100-none-linear-gd,data.n_features=5,data.n_samples=300"
# TINY as an experiment preset (conf/experiment/tiny.yaml in a repo copy), for DVC pipelines
# the dvc.yaml stage that prepares the tiny preset's data (the system tests' tiny pipelines)
TINY_PREPARE_STAGE = """  prepare:
    cmd: python -m pipeline.prepare data=synthetic_regression data.id=tiny data.n_samples=300
      data.n_features=5 preprocess=none
    deps: [pipeline/prepare.py]
    outs: [data/prepared/tiny-none.npz, data/prepared/tiny-none.json]
"""

TINY_PRESET = """# @package _global_
defaults:
  - override /data: synthetic_regression
  - override /model: linear
study: tiny
data:
  id: tiny
  n_samples: 300
  n_features: 5
"""


def paths(work: Path, **over: str) -> list[str]:
    """Overrides that point every folder and the MLflow store of a run into ``work``."""
    base = {"paths.prepared_dir": str(work / "prepared"),
            "paths.experiments_dir": str(work / "experiments"),
            "paths.reports_dir": str(work / "reports"),
            "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "mlflow.artifact_root": str(work / "art")}
    base.update(over)
    return [f"{k}={v}" for k, v in base.items()]


def make_cfg(work: Path, overrides: list[str], mlflow: bool = False) -> DictConfig:
    """The train config of a run in ``work`` (study ``t``, no progress bar, MLflow off unless
    asked)."""
    base = [
        f"paths.prepared_dir={work / 'prepared'}",
        f"paths.experiments_dir={work / 'experiments'}",
        f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"mlflow.artifact_root={work / 'art'}",
        f"mlflow.enabled={str(mlflow).lower()}",
        "progress=false",
        "study=t",
    ]
    return compose_app("train", base + overrides)


def ensure_prepared(cfg: DictConfig) -> Path:
    """The prepared file a run config reads, made in-process when absent."""
    path = prepared_file(RunSpec.from_config(cfg))
    if not path.exists():
        prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), int(cfg.seed), path.parent)
    return path


def prepare_tiny(prepared_dir: Path, preprocesses: Sequence[str], data: Sequence[str] = TINY,
                 conf: Path = CONF) -> None:
    """``data`` prepared in-process (fast) into ``prepared_dir``, once per preprocessing."""
    for pre in preprocesses:
        # model=linear too: ridge whitening reads model.l2 (preprocess.ridge: ${model.l2})
        cfg = compose_app("prepare", [*data, f"preprocess={pre}"], conf=conf)
        prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), 0, prepared_dir)


def read_history(path: Path) -> tuple[list[str], np.ndarray]:
    """A CSV file with a header (history.csv, confusion.csv): header and float rows."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=np.float64)


Cli = Callable[..., tuple[int, str, str]]


def quiet(stage_cli: Cli) -> Cli:
    """``cli(prog, *args)``: ``python -m pipeline.<prog> args`` in-process (train/evaluate
    without progress bars)."""
    def cli(prog: str, *args: str) -> tuple[int, str, str]:
        return stage_cli(
            prog, *args, *(["progress=false"] if prog in ("train", "evaluate") else [])
        )

    return cli


def trained_tiny(work: Path, cli: Cli) -> Path:
    """TINY trained and evaluated in ``work`` by ``cli`` (made once): the earlier result that
    faults must not touch."""
    out = work / "experiments" / "t" / TINY_RUN
    if not (out / "evaluation.json").exists():
        code, _, err = cli("train", *TINY, "study=t", *paths(work))
        assert code == 0, err
        code, _, err = cli("evaluate", *TINY, "study=t", *paths(work))
        assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"weights.npz", "metrics.json", "evaluation.json"}
    return out


def mlflow_runs(db: Path) -> list[tuple[str, str, str]]:
    """(run name, status, parent run id or '') of every run in an MLflow SQLite store."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        rows = con.execute("select r.name, r.status, coalesce(t.value, '') from runs r "
                           "left join tags t on t.run_uuid = r.run_uuid "
                           "and t.key = 'mlflow.parentRunId'").fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def sweep_runs(root: Path, study: str) -> tuple[Any, list[Any]]:
    """The one sweep parent of ``study`` in ``root/mlflow.db`` and its train runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("curvlab.kind") == "sweep"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("curvlab.kind") == "train"]


def wait_running(db: Path, n: int = 1, timeout: float = 180.0) -> None:
    """Wait until ``n`` MLflow runs in the SQLite store ``db`` are RUNNING (a job has started)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if sum(s == "RUNNING" for _, s, _ in mlflow_runs(db)) >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no {n} RUNNING MLflow run(s) in {db} after {timeout} s")
