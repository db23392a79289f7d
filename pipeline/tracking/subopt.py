"""Suboptimality f − f* on the MLflow runs of an objective, logged by whichever of ``train`` (the
reference optimum already exists) and ``reference`` (the runs already finished) comes second."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import CurvlabError
from pipeline.store.references import read_reference, reference_path
from pipeline.tracking.metrics import SUBOPT, subopt_points

F_STAR_TAG = "curvlab.f_star"  # the f* the run's subopt metric is measured against
OBJECTIVE_TAG = "curvlab.objective"


def certified_f_star(reference_dir: str | Path, objective: str) -> float | None:
    """f* of ``<reference_dir>/<objective>.json`` when its solve converged, else None (no file,
    not converged, damaged: the runs then get no subopt)."""
    path = reference_path(reference_dir, objective)
    if not path.is_file():
        return None
    try:
        ref = read_reference(path)
    except CurvlabError:
        return None
    return ref.f_star if ref.certified else None


def log_subopt(tracker: Any, run_id: str, f_star: float) -> int:
    """``subopt`` = f − f* and ``rel_subopt`` at every step of the run's ``objective`` metric, at
    the same steps and timestamps, and the tag ``curvlab.f_star``; a run that has them already is
    left as it is. Returns the number of points logged."""
    from pipeline.tracking.mlflow import with_retry

    run = with_retry(lambda: tracker.client.get_run(run_id))
    if SUBOPT in run.data.metrics:
        return 0
    points = subopt_points(tracker.metric_points(run_id, "objective"), float(f_star))
    n = tracker.log_points(run_id, points)
    tracker.log_tags(run_id, {F_STAR_TAG: repr(float(f_star))})
    return n


def subopt_of_finished_runs(mlflow_cfg: Mapping[str, Any], objective: str, f_star: float,
                            prog: str) -> int:
    """Log ``subopt`` onto every ended MLflow run of ``objective`` that lacks it; a store that does
    not exist yet is left alone, a store error is one warning line. Returns how many runs."""
    from pipeline.tracking.mlflow import Tracker, store_exists

    if not mlflow_cfg.get("enabled", True) or not store_exists(mlflow_cfg):
        return 0
    try:
        tracker = Tracker(mlflow_cfg)
        runs = [r for r in tracker.runs_with_tag(OBJECTIVE_TAG, objective)
                if r.info.status != "RUNNING" and SUBOPT not in r.data.metrics]
        for r in runs:
            log_subopt(tracker, r.info.run_id, f_star)
    except Exception as err:  # noqa: BLE001 - the reference file is written; MLflow is extra
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        print(f"{prog}: warning: MLflow runs of {objective} not given subopt ({first})",
              file=sys.stderr)
        return 0
    return len(runs)
