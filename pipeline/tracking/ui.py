"""How a study's experiment opens in the MLflow UI: its kind, a saved runs-table view with the key
metrics as columns, and the address that opens that view.

MLflow ≥ 3 shows an experiment as GenAI ("Overview", traces) or model training (runs table,
charts). The 3.17 UI picks the mode from a browser-wide switch (GenAI | Model training in the
sidebar, remembered by the browser, GenAI by default) or the address's ``workflowType`` parameter;
older 3.x UIs read the experiment tag ``mlflow.experimentKind``. The runs table's columns are the
browser's choice too, except in a shared view: the experiment tag ``mlflow.sharedViewState.<key>``
holds a view state (JSON) that ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens.
"""

from __future__ import annotations

import json

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the model-training view: runs table, charts
VIEW_KEY = "curvlab"  # the shared view every study's experiment carries
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
# the runs table's columns in the shared view, in this order
VIEW_COLUMNS = (("params", "optimizer.id"), ("params", "preprocess.id"), ("metrics", "objective"),
                ("metrics", "subopt"), ("metrics", "grad_norm"), ("metrics", "passes"),
                ("metrics", "iterations"), ("metrics", "train_time_s"),
                ("metrics", "test_accuracy"), ("metrics", "data_loss"), ("attributes", "Dataset"))


def column_id(kind: str, key: str) -> str:
    """The UI's id of a runs-table column: ``metrics.`objective```, ``params.`optimizer.id```."""
    return f"{kind}.`{key}`"


def view_state() -> str:
    """The shared view (JSON): the key metrics and the optimizer/preprocessing as columns, runs
    sorted by creation, step on the charts' x axis."""
    cols = [column_id(k, c) for k, c in VIEW_COLUMNS]
    return json.dumps({"selectedColumns": cols, "columnOrder": cols,
                       "orderByKey": "attributes.start_time", "orderByAsc": False})


def experiment_tags() -> dict[str, str]:
    """The tags every study's experiment carries: its kind and the shared runs-table view."""
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: view_state()}


def study_address(server: str, experiment_id: str) -> str:
    """The address that opens a study on its runs table with the key metrics as columns, in any
    browser: ``<server>/#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=…``
    (checked in headless Chromium against MLflow 3.17's UI: tests/system/test_mlflow_ui.py)."""
    return (f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")
