"""The sweep-job environment protocol: Hydra job context, the parent MLflow run, trial and failure
records.

A multirun's ``SweepCallback`` (``pipeline.tracking.mlflow``) sets ``$CURVLAB_SWEEP_DIR`` and, for a
train sweep, ``$CURVLAB_MLFLOW_PARENT_RUN_ID`` (plus ``<sweep dir>/mlflow_parent_run_id`` for jobs
started without that environment); each job leaves ``<sweep dir>/trials/<job>.json`` (overrides and
metrics, tuning studies) or ``<sweep dir>/failed/<job>.json`` (overrides and the error line).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.paths import project_path
from pipeline.store.rundir import read_json
from pipeline.store.writer import write_json

PARENT_ENV = "CURVLAB_MLFLOW_PARENT_RUN_ID"
SWEEP_ENV = "CURVLAB_SWEEP_DIR"
SWEPT_ENV = "CURVLAB_SWEEP_KEYS"
PARENT_FILE = "mlflow_parent_run_id"


@dataclass(frozen=True)
class JobContext:
    """What the Hydra runtime knows about this job (empty outside a Hydra app, e.g. compose API)."""

    overrides: tuple[str, ...] = ()
    multirun: bool = False
    job_num: int | None = None
    parent_run_id: str | None = None
    sweep_dir: str | None = None


def job_context() -> JobContext:
    """Read the group choices, task overrides and sweep state from HydraConfig (inside an app)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return JobContext()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep = str(project_path(str(hc.sweep.dir))) if multirun else None
    return JobContext(
        overrides=tuple(str(o) for o in hc.overrides.task),
        multirun=multirun,
        job_num=int(hc.job.num) if multirun else None,
        parent_run_id=sweep_parent_run_id(sweep) if sweep else None,
        sweep_dir=sweep,
    )


def sweep_parent_run_id(sweep_dir: str) -> str | None:
    """The sweep's MLflow parent run: ``$CURVLAB_MLFLOW_PARENT_RUN_ID`` (joblib/submitit-local jobs
    inherit it), else ``<sweep dir>/mlflow_parent_run_id`` (cluster jobs started without the
    submitting environment, e.g. SLURM ``--export=NONE``, on the shared file system)."""
    found = parent_run_id_from_env()
    if found:
        return found
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def parent_run_id_from_env() -> str | None:
    """The running sweep's MLflow parent run, as its jobs and callbacks inherit it."""
    return os.environ.get(PARENT_ENV) or None


def begin_sweep(sweep_dir: Path) -> None:
    """Announce the sweep folder to the jobs (joblib/loky workers inherit the environment)."""
    os.environ[SWEEP_ENV] = str(sweep_dir)


def announce_parent(sweep_dir: Path, run_id: str) -> None:
    """Announce the parent MLflow run: environment for local jobs, a file for cluster jobs."""
    os.environ[PARENT_ENV] = run_id
    (Path(sweep_dir) / PARENT_FILE).write_text(run_id + "\n", encoding="utf-8")


def end_sweep() -> str | None:
    """Withdraw the sweep's environment; returns the sweep folder it named (None outside a
    sweep)."""
    os.environ.pop(PARENT_ENV, None)
    os.environ.pop(SWEPT_ENV, None)
    return os.environ.pop(SWEEP_ENV, None)


def record_trial(ctx: JobContext, metrics: Mapping[str, Any]) -> None:
    """Leave ``<sweep dir>/trials/<job num>.json`` (overrides + metrics) for the tuning summary."""
    sweep = os.environ.get(SWEEP_ENV)
    if not sweep or ctx.job_num is None:
        return
    write_json(
        Path(sweep) / "trials" / f"{ctx.job_num}.json",
        {"job": ctx.job_num, "overrides": list(ctx.overrides), "metrics": dict(metrics)},
    )


def record_sweep_failure(ctx: JobContext, msg: str) -> None:
    """Leave ``<sweep dir>/failed/<job num>.json`` for the end-of-sweep summary."""
    sweep = os.environ.get(SWEEP_ENV) or ctx.sweep_dir
    if not sweep:
        return
    write_json(
        Path(sweep) / "failed" / f"{ctx.job_num}.json",
        {"job": ctx.job_num, "overrides": list(ctx.overrides), "message": msg},
    )


def read_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """The trial records of a sweep (``trials/<job>.json``), by job number."""
    return sorted(
        (read_json(p) for p in (Path(sweep_dir) / "trials").glob("*.json")), key=lambda t: t["job"]
    )


def any_failed(sweep_dir: str | Path) -> bool:
    """Some job of the sweep left a failure record."""
    return any((Path(sweep_dir) / "failed").glob("*.json"))


def failed_jobs(sweep_dir: str | Path | None) -> list[dict[str, Any]]:
    """The failure records of a sweep (``failed/<job>.json``), by job number ([] without a
    folder)."""
    if not sweep_dir:
        return []
    jobs = [read_json(p) for p in sorted(Path(sweep_dir).glob("failed/*.json"))]
    return sorted(jobs, key=lambda j: j["job"])


def announce_swept(keys: Sequence[str]) -> None:
    """Announce the swept keys to the jobs (their MLflow run names lead with these values)."""
    os.environ[SWEPT_ENV] = ",".join(keys)


def swept_keys_from_env() -> tuple[str, ...]:
    """The keys the running sweep varies (empty outside a sweep or when not announced)."""
    return tuple(k for k in os.environ.get(SWEPT_ENV, "").split(",") if k)


def trial_name(folder: str, swept_keys: Sequence[str] = ()) -> str:
    """A sweep job's MLflow run name: the swept values its folder name appends first, keys without
    their group where that stays unique, then the folder name without them
    (``lr=0.1 batch_size=50 · mnist-val-none-softmax-sgd``), so names the UI cuts short still
    differ; the folder name itself when it appends no swept value (or none is known)."""
    base, _, rest = folder.partition(",")
    pairs = [p.partition("=") for p in rest.split(",")] if rest else []
    lead = [p for p in pairs if p[0] in swept_keys]
    if not lead:
        return folder
    short = [k.rsplit(".", 1)[-1] for k, _, _ in lead]
    keys = [s if short.count(s) == 1 else k for s, (k, _, _) in zip(short, lead, strict=True)]
    tail = "".join(f",{''.join(p)}" for p in pairs if p not in lead)
    head = " ".join(f"{k}={v}" for k, (_, _, v) in zip(keys, lead, strict=True))
    return f"{head} · {base}{tail}"
