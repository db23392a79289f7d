"""The homework study (experiment=hw3_sgd) end to end on a small MNIST subset: Optuna trials as
MLflow
children of one parent, the chosen configuration written, retrained on train + validation, and
only that model scored on the test set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from support.repo_copy import copy_repo, run_cmd

from pipeline.prepare import prepare
from pipeline.store.rundir import read_run_record

SMALL = {"name": "mnist", "scale": 3.92156862745098e-3, "n_train": 2000, "n_test": 500}


@pytest.mark.slow
def test_hw3_sgd_study_tunes_on_validation_and_scores_the_retrained_model_once(
    tmp_path: Path, mnist_dir: Path
) -> None:
    from mlflow.tracking import MlflowClient

    root = copy_repo(tmp_path / "repo")
    prepared = root / "data" / "prepared"
    for data_id, frac in (("mnist-tv", 0.1), ("mnist-t", 0.0)):
        prepare(
            {**SMALL, "id": data_id, "root": None, "val_fraction": frac},
            {"name": "none", "id": "none"},
            seed=0,
            prepared_dir=prepared,
        )
    res = run_cmd(
        [
            "python",
            "-m",
            "pipeline.train",
            "-m",
            "experiment=hw3_sgd",
            "hydra.sweeper.n_trials=3",
            "data.id=mnist-tv",
            "data.n_train=2000",
            "data.n_test=500",
            "hydra.callbacks.retrain_best.data_id=mnist-t",
        ],
        cwd=root,
        extra_env={"CURVLAB_DATA_DIR": str(mnist_dir)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    study = root / "experiments" / "hw3_sgd"
    with open(study / "trials.csv", newline="") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == 3
    assert not {"train_time_s", "mlflow_run_id"} & set(trials[0])  # the same on a rerun (DVC)
    chosen = json.loads((study / "chosen.json").read_text())
    assert "sweep_dir" not in chosen  # a timestamped folder: the MLflow parent run's tag
    best = max(trials, key=lambda t: float(t["val_accuracy"]))
    assert chosen["best_value"] == pytest.approx(float(best["val_accuracy"]))
    assert chosen["n_trials"] == 3 and set(chosen["best_params"]) == {
        "optimizer.lr", "optimizer.batch_size", "optimizer.epochs", "model.l2"}
    assert float(best["optimizer.lr"]) == pytest.approx(chosen["best_params"]["optimizer.lr"])
    final = read_run_record(study / "final" / "metrics.json")
    assert final["test_accuracy"] > 0.75 and final["val_accuracy"] is None  # trained on train + val
    assert final["lr"] == pytest.approx(chosen["best_params"]["optimizer.lr"])
    assert chosen["config"]["data"]["id"] == "mnist-t" and chosen["config"]["score_test"] is True

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hw3_sgd")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("curvlab.kind") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4  # 3 trials + the retrained model
    scored = [r for r in children if "test_accuracy" in r.data.metrics]
    assert len(scored) == 1 and scored[0].info.run_name == "final"  # the test set is touched once
    assert all("val_accuracy" in r.data.metrics for r in children if r is not scored[0])
