"""The sweep-job environment protocol: Hydra job context, the parent MLflow run, trial and failure records."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.paths import project_path
from pipeline.store.writer import write_json


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
    found = os.environ.get("CURVLAB_MLFLOW_PARENT_RUN_ID")
    if found:
        return found
    path = Path(sweep_dir) / "mlflow_parent_run_id"
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def record_trial(ctx: JobContext, metrics: Mapping[str, Any]) -> None:
    """Leave ``<sweep dir>/trials/<job num>.json`` (overrides + metrics) for the tuning summary."""
    sweep = os.environ.get("CURVLAB_SWEEP_DIR")
    if not sweep or ctx.job_num is None:
        return
    write_json(Path(sweep) / "trials" / f"{ctx.job_num}.json",
               {"job": ctx.job_num, "overrides": list(ctx.overrides), "metrics": dict(metrics)})


def record_sweep_failure(ctx: JobContext, msg: str) -> None:
    """Leave ``<sweep dir>/failed/<job num>.json`` for the end-of-sweep summary."""
    sweep = os.environ.get("CURVLAB_SWEEP_DIR") or ctx.sweep_dir
    if not sweep:
        return
    write_json(Path(sweep) / "failed" / f"{ctx.job_num}.json",
               {"job": ctx.job_num, "overrides": list(ctx.overrides), "message": msg})
