"""MLflow as a place to compare runs: step metrics on each run's own clock with no extra points,
f − f* once the reference optimum exists (logged by train or by reference, whichever comes
second), one name per loss, no empty "Default" experiment beside the studies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.compose import compose_app
from support.project import SYNTH, ensure_prepared, make_cfg, paths

from pipeline.spec import RunSpec
from pipeline.store.rundir import read_history as read_run_history
from pipeline.store.rundir import run_dir
from pipeline.tracking.sweep import JobContext
from pipeline.train import train

RUN = ["preprocess=none", "optimizer=gd", "optimizer.max_iter=30", "optimizer.tol=0.0"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.config.schemas import register_configs

    register_configs()
    return tmp_path_factory.mktemp("compare")


def _client(work: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")


def _train(work: Path, *over: str) -> dict[str, Any]:
    cfg = make_cfg(work, [*SYNTH, *over, f"paths.reference_dir={work / 'ref'}"], mlflow=True)
    ensure_prepared(cfg)
    return train(cfg, JobContext(overrides=tuple(o for o in over if not o.startswith(
        ("preprocess=", "optimizer=")))))


def _reference(work: Path) -> dict[str, Any]:
    from pipeline.reference import reference

    cfg = compose_app("reference", [*SYNTH, "preprocess=none", "study=t",
                                    *paths(work, **{"paths.reference_dir": str(work / "ref")})])
    return reference(cfg)


def test_step_metrics_are_the_history_on_the_runs_own_clock(work: Path) -> None:
    metrics = _train(work, *RUN)
    client = _client(work)
    rid = metrics["mlflow_run_id"]
    run = client.get_run(rid)
    out = run_dir(RunSpec.from_config(make_cfg(work, [*SYNTH, *RUN]), RUN[2:]))
    hist = read_run_history(out / "history.csv")  # time_s joined back from timing.json
    clock = hist["time_s"].to_numpy()
    obj = sorted(client.get_metric_history(rid, "objective"), key=lambda m: m.step)
    assert [m.step for m in obj] == list(range(31))
    np.testing.assert_allclose([m.value for m in obj], hist["loss"].to_numpy())
    stamps = np.array([m.timestamp for m in obj])
    # run start + the run's own clock: the gaps are the optimizer's seconds (ms, rounded)
    assert np.all(np.abs(np.diff(stamps) - np.diff(np.round(1000 * clock))) <= 1)
    assert run.info.start_time <= stamps[0] <= run.info.end_time
    for key in ("grad_norm", "passes"):  # the final value is not logged again at step 0
        assert sorted(m.step for m in client.get_metric_history(rid, key)) == list(range(31))
    assert "train_loss" not in run.data.metrics and "loss" not in run.data.metrics
    assert run.data.metrics["objective"] == pytest.approx(metrics["train_loss"])
    assert run.data.metrics["train_time_s"] == pytest.approx(metrics["train_time_s"])
    assert "subopt" not in run.data.metrics  # no reference optimum yet
    p = run.data.params
    assert "optimizer.batch_size" not in p and "optimizer.cg_max_iter" not in p
    assert p["data.n_samples"] == "400" and "mlflow.tracking_uri" not in p
    exp = client.get_experiment_by_name("t")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # the store's empty "Default" experiment no longer shows beside the studies
    assert [e.name for e in client.search_experiments()] == ["t"]


def test_reference_then_train_both_log_subopt(work: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    first = _train(work, *RUN)  # finished before the reference exists
    record = _reference(work)
    assert "subopt logged on 2 MLflow run(s)" in capsys.readouterr().out  # this and the last test's
    f_star = record["f_star"]
    client = _client(work)

    def check(rid: str) -> None:
        obj = {m.step: m for m in client.get_metric_history(rid, "objective")}
        sub = sorted(client.get_metric_history(rid, "subopt"), key=lambda m: m.step)
        rel = {m.step: m.value for m in client.get_metric_history(rid, "rel_subopt")}
        assert [m.step for m in sub] == sorted(obj)
        for m in sub:
            assert m.value == pytest.approx(obj[m.step].value - f_star, abs=1e-12)
            assert m.timestamp == obj[m.step].timestamp
            assert rel[m.step] == pytest.approx(m.value / abs(f_star))
        assert client.get_run(rid).data.tags["curvlab.f_star"] == repr(f_star)

    check(first["mlflow_run_id"])
    later = _train(work, "preprocess=none", "optimizer=newton", "optimizer.max_iter=5")
    check(later["mlflow_run_id"])  # the reference existed: train logged it itself
    assert client.get_run(later["mlflow_run_id"]).data.metrics["subopt"] < 1e-9
    _reference(work)  # a second solve adds no duplicate points
    assert len(client.get_metric_history(first["mlflow_run_id"], "subopt")) == 31


def test_evaluate_logs_the_data_loss_under_its_own_name(work: Path) -> None:
    from pipeline.evaluate import evaluate

    metrics = _train(work, *RUN)
    cfg = compose_app("evaluate", [*SYNTH, *RUN, "study=t", *paths(work)])
    result = evaluate(cfg, JobContext(overrides=tuple(RUN[2:])))
    logged = _client(work).get_run(metrics["mlflow_run_id"]).data.metrics
    assert logged["data_loss"] == pytest.approx(result["train_loss"])
    assert logged["data_loss"] <= logged["objective"] + 1e-12  # f = data loss + penalty ≥ it
    assert not any(k.startswith("eval_") for k in logged)
    evaluation = json.loads((run_dir(RunSpec.from_config(cfg, RUN[2:])) / "evaluation.json")
                            .read_text())
    assert evaluation["train_loss"] == result["train_loss"]
