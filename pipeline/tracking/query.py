"""Reading MLflow for the report: the train runs of one experiment and their artifacts, and the
URL of a run's page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.tracking.mlflow import is_server, with_retry

LOCAL_UI = "http://127.0.0.1:5000"  # `mlflow ui`'s default address for a local store


def train_runs(experiment: str, uri: str | None = None) -> Any:
    """The train runs of ``experiment`` (a DataFrame of ``mlflow.search_runs``), newest first; a
    one-line ConfigError when the experiment does not exist."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    if with_retry(lambda: mlflow.get_experiment_by_name(experiment)) is None:
        raise ConfigError(f"MLflow experiment {experiment!r} not found at "
                          f"{mlflow.get_tracking_uri()}; set "
                          "report.experiment to an existing study name (see `mlflow ui`)")
    found = with_retry(lambda: mlflow.search_runs(experiment_names=[experiment],
                                                  output_format="pandas"))
    if len(found) and "tags.curvlab.kind" in found.columns:
        found = found[found["tags.curvlab.kind"].fillna("train") == "train"]
    if len(found) and "start_time" in found.columns:
        found = found.sort_values("start_time", ascending=False, kind="stable")
    return found


def download_run(run_id: str, dst: Path) -> Path:
    """Every artifact of one run under ``dst``; the local folder."""
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    return Path(with_retry(lambda: mlflow.artifacts.download_artifacts(run_id=run_id,
                                                                      dst_path=str(dst))))


def ui_base(uri: str) -> str:
    """Where a run's page lives: the tracking server itself, else a local `mlflow ui`."""
    return uri.rstrip("/") if is_server(uri) else LOCAL_UI


def run_page(uri: str, run_id: str) -> str:
    """The URL of a run's page in the MLflow UI for the store ``uri``."""
    return f"{ui_base(uri)}/#/runs/{run_id}"
