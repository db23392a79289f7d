"""MLflow tracking: store location, one run per train job with params/tags/step
metrics/artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.project import SYNTH, ensure_prepared, make_cfg, read_history

from pipeline.core.errors import NumericalError
from pipeline.spec import RunSpec
from pipeline.store.rundir import read_run_record, run_dir
from pipeline.tracking import mlflow as tracking
from pipeline.tracking.mlflow import Tracker, artifact_root, flatten, tracking_uri
from pipeline.tracking.sweep import JobContext
from pipeline.train import train


def test_store_defaults_to_an_absolute_sqlite_file_in_the_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = Path(tracking.__file__).resolve().parents[2]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri({"tracking_uri": None}) == f"sqlite:///{root}/mlflow.db"
    assert tracking_uri(None).startswith("sqlite:////")  # sqlite:/// + an absolute path
    assert artifact_root({"artifact_root": None}) == (root / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri({"tracking_uri": None}) == "http://tracking.example:5000"
    assert tracking_uri({"tracking_uri": "sqlite:////x/y.db"}) == "sqlite:////x/y.db"  # config wins
    assert artifact_root({"artifact_root": "s3://bucket/a"}) == "s3://bucket/a"


def test_flatten_gives_dotted_string_params() -> None:
    assert flatten({"a": {"b": 1, "c": None}, "d": [1, 2]}) == {
        "a.b": "1",
        "a.c": "null",
        "d": "[1, 2]",
    }


def test_retry_only_on_a_locked_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.with_retry(flaky) == "ok" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("no such table: runs")

    calls.clear()  # any other store failure: no retry, one-line TrackingError (cause kept)
    with pytest.raises(tracking.TrackingError, match=r"MLflow store failed \(no such "
                                                     r"table: runs\)") as ex:
        tracking.with_retry(broken)
    assert len(calls) == 1 and isinstance(ex.value.__cause__, RuntimeError)


def test_a_data_set_added_by_a_parallel_job_is_linked_not_an_error(tmp_path: Path) -> None:
    """Parallel sweep jobs log the same prepared file: when another job inserts the data set row
    between MLflow's look-up and its insert (UNIQUE constraint failed), the run is linked to it."""
    t = Tracker.__new__(Tracker)
    calls: list[str] = []

    class Racing:
        def log_inputs(self, run_id: str, datasets: Any) -> None:
            calls.append(run_id)
            if len(calls) == 1:
                raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                   "datasets.experiment_id, "
                                   "datasets.name, datasets.digest")

    t.client = Racing()  # type: ignore[assignment]
    t.log_dataset("r", "synth-none", "ab" * 32, tmp_path / "synth-none.npz", "training")
    assert calls == ["r", "r"]

    class Broken:
        def log_inputs(self, run_id: str, datasets: Any) -> None:
            calls.append(run_id)
            raise RuntimeError("no such table: datasets")

    calls.clear()
    t.client = Broken()  # type: ignore[assignment]
    with pytest.raises(tracking.TrackingError, match="no such table: datasets"):
        t.log_dataset("r", "synth-none", "ab" * 32, tmp_path / "synth-none.npz", "training")
    assert calls == ["r"]  # any other failure: no retry


class _FakeClient:
    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        self.batches.append({"metrics": len(metrics), "params": len(params), "tags": len(tags)})


def test_history_and_params_go_in_batches_within_mlflow_limits() -> None:
    t = Tracker.__new__(Tracker)
    t.client = _FakeClient()  # type: ignore[assignment]
    n = 2600
    hist = {"iteration": np.arange(n), "loss": np.linspace(1, 0, n), "grad_norm": np.ones(n),
            "step_size": np.full(n, 0.5), "time_s": np.arange(n) * 1e-3}
    assert t.log_history("r", hist, start_ms=0) == 4 * n
    t.log_params("r", {f"p{i}": str(i) for i in range(250)})
    sizes = t.client.batches  # type: ignore[attr-defined]
    assert sum(b["metrics"] for b in sizes) == 4 * n and max(b["metrics"] for b in sizes) <= 1000
    assert sum(b["params"] for b in sizes) == 250 and max(b["params"] for b in sizes) <= 100


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.config.schemas import register_configs

    register_configs()
    return tmp_path_factory.mktemp("tracking")


@pytest.mark.slow
def test_a_train_job_is_one_complete_mlflow_run(work: Path) -> None:
    from mlflow.tracking import MlflowClient

    cfg = make_cfg(work, [*SYNTH, "preprocess=none", "optimizer=gd", "optimizer.max_iter=40",
                          "optimizer.tol=0.0"], mlflow=True)
    prep = ensure_prepared(cfg)
    metrics = train(cfg, JobContext(overrides=("optimizer.max_iter=40", "optimizer.tol=0.0")))
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    run = client.get_run(metrics["mlflow_run_id"])
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "t" and exp.artifact_location == f"{(work / 'art').as_uri()}/t"
    # UI: runs table, not traces
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (
        p["optimizer.name"] == "gd"
        and p["optimizer.lr"] == "auto"
        and p["optimizer.max_iter"] == "40"
    )
    assert p["model.l2"] == "0.0" and p["data.n_samples"] == "400" and p["seed"] == "0"
    tags = run.data.tags
    assert tags["curvlab.overrides"] == "optimizer.max_iter=40 optimizer.tol=0.0"
    assert len(tags["mlflow.source.git.commit"]) >= 7
    assert tags["curvlab.prepared_sha256"] == hashlib.sha256(prep.read_bytes()).hexdigest()
    assert tags["curvlab.status"] == "max_iter" and "mlflow.parentRunId" not in tags
    (inp,) = run.inputs.dataset_inputs  # the prepared file as the run's dataset (metadata only)
    digest = hashlib.sha256(prep.read_bytes()).hexdigest()
    assert inp.dataset.name == prep.stem and inp.dataset.digest == digest[:36]
    assert (
        json.loads(inp.dataset.source) == {"uri": str(prep)} and inp.dataset.source_type == "local"
    )
    assert {t.key: t.value for t in inp.tags} == {
        "mlflow.data.context": "train",
        "curvlab.sha256": digest,
    }
    assert json.loads(inp.dataset.profile)["n_train"] == 320
    out = run_dir(RunSpec.from_config(cfg, ["optimizer.max_iter=40", "optimizer.tol=0.0"]))
    header, hist = read_history(out / "history.csv")
    steps = client.get_metric_history(run.info.run_id, "objective")
    assert [m.step for m in sorted(steps, key=lambda m: m.step)] == list(range(41))
    np.testing.assert_allclose([m.value for m in sorted(steps, key=lambda m: m.step)],
                               hist[:, header.index("loss")])
    assert run.data.metrics["test_loss"] == pytest.approx(metrics["test_loss"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "run.json", "timing.json", "config.yaml", "history.csv"} <= names
    logged = read_run_record(Path(client.download_artifacts(run.info.run_id, "", str(work / "dl")))
                       / "metrics.json")  # the record, joined from the logged files
    assert logged["mlflow_run_id"] == run.info.run_id and logged["status"] == metrics["status"]


def test_a_diverged_run_is_failed_in_mlflow(work: Path) -> None:
    from mlflow.tracking import MlflowClient

    cfg = make_cfg(
        work, [*SYNTH, "preprocess=none", "optimizer=gd", "optimizer.lr=50.0"], mlflow=True
    )
    ensure_prepared(cfg)
    with pytest.raises(NumericalError):
        train(cfg)
    metrics = read_run_record(run_dir(RunSpec.from_config(cfg)) / "metrics.json")
    run = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}").get_run(
        metrics["mlflow_run_id"]
    )
    assert run.info.status == "FAILED" and run.data.tags["curvlab.status"] == "diverged"


def test_only_a_store_without_mlflow_tables_takes_the_schema_lock(tmp_path: Path) -> None:
    """Parallel jobs on an existing store open it without queueing behind the schema lock."""
    import sqlite3
    from contextlib import nullcontext

    from pipeline.tracking.mlflow import _schema_ready

    db = tmp_path / "m.db"
    assert not _schema_ready(f"sqlite:///{db}")  # missing: the first job creates it under the lock
    sqlite3.connect(db).close()
    assert not _schema_ready(f"sqlite:///{db}")  # empty file: still to be created
    Tracker({"tracking_uri": f"sqlite:///{db}", "artifact_root": str(tmp_path / "a")})
    assert _schema_ready(f"sqlite:///{db}")
    assert not _schema_ready("http://127.0.0.1:5000")  # a server needs no lock at all
    assert isinstance(tracking._store_lock("http://127.0.0.1:5000"), nullcontext)
