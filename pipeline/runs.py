"""Run directories: names derived from the config (files are written by ``pipeline.writer``).

A run lives in ``experiments/<study>/<data.id>-<preprocess.id>-<model.id>-<optimizer.id>[,key=value...]``
(docs/architecture.md). The ids are the conf/ file names (``optimizer=gd_armijo`` gives
``gd_armijo``; a null id falls back to ``name``); every non-group override that changes the result
(``optimizer.lr=0.1``, ``model.l2=0``, ``seed=3`` ...) is appended as ``,key=value`` in key order,
so the runs of a sweep never overwrite each other. Relative paths are relative to the current
directory (Hydra does not change it), as in ``pipeline.prepare``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import CurvlabError, report_and_exit

# The write_* helpers moved to pipeline.writer (their one home); these names stay importable from
# here for code written before the move.
from pipeline.writer import write_csv, write_json, write_npz, write_text  # noqa: F401

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("data", "preprocess", "model", "optimizer")
# Overrides that change where or how a run is recorded, not what it computes: no name suffix.
_NOT_IN_NAME = ("study", "progress", "fail_on_diverged", "run_dir", "paths.", "mlflow.", "hydra.",
                "data.root", "experiment")
_SAFE = re.compile(r"[^A-Za-z0-9_.+=-]")


def project_path(p: str | os.PathLike[str]) -> Path:
    """A configured path made absolute (relative ones against the current directory)."""
    return Path(p).expanduser().absolute()


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


def name_suffix(overrides: Sequence[str]) -> str:
    """``,key=value`` for each non-group override that changes the result, sorted by key."""
    parts: dict[str, str] = {}
    for ov in overrides:
        key, sep, value = str(ov).partition("=")
        key = key.lstrip("+~")
        if not sep or "/" in key or key in GROUPS or key.startswith(_NOT_IN_NAME):
            continue
        parts[key] = _SAFE.sub("_", value.strip().strip("'\""))
    return "".join(f",{k}={parts[k]}" for k in sorted(parts))


def group_id(node: Any) -> str:
    """A group's short name: its ``id``, else its ``name``."""
    return str(node.get("id") or node.get("name"))


def run_name(cfg: Any, overrides: Sequence[str] = ()) -> str:
    """``<data.id>-<preprocess.id>-<model.id>-<optimizer.id>`` + the override suffix."""
    parts = (cfg.data.id, group_id(cfg.preprocess), group_id(cfg.model), group_id(cfg.optimizer))
    return "-".join(str(p) for p in parts) + name_suffix(overrides)


def run_dir(cfg: Any, overrides: Sequence[str] = ()) -> Path:
    """``<experiments_dir>/<study>/<run name>`` (absolute)."""
    return project_path(cfg.paths.experiments_dir) / str(cfg.study) / run_name(cfg, overrides)


def prepared_path(cfg: Any) -> Path:
    """``<prepared_dir>/<data.id>-<preprocess.id>.npz`` as written by ``python -m pipeline.prepare``."""
    return project_path(cfg.paths.prepared_dir) / f"{cfg.data.id}-{group_id(cfg.preprocess)}.npz"


# ---------------------------------------------------------------- files (written by pipeline.writer)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk."""
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- entry points


def run_entry(prog: str, fn: Callable[[], Any], ctx: JobContext) -> int:
    """Run a job body: a CurvlabError is one stderr line and exit 2 (a single run) or a failed
    sweep job recorded for ``SweepCallback`` (a multirun: the other jobs keep going)."""
    try:
        fn()
    except CurvlabError as err:
        if not ctx.multirun:
            report_and_exit(err, prog)
        msg = " ".join(str(err).split())
        print(f"{prog}: error: job {ctx.job_num} ({' '.join(ctx.overrides)}): {msg}", file=sys.stderr)
        record_sweep_failure(ctx, msg)
        return 2
    return 0


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
