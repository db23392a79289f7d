"""The run as a value (``pipeline.spec.RunSpec``) and a write → read round trip per store format."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.compose import compose_app

from pipeline.config.schemas import OptimizerConfig, PreprocessConfig
from pipeline.core.errors import DataError
from pipeline.spec import ModelSpec, RunSpec, SolverOptions, objective_id


def spec_of(overrides: list[str]) -> RunSpec:
    """The spec of ``train`` composed with ``overrides`` (preset budgets composed by Hydra)."""
    return RunSpec.from_config(compose_app("train", overrides), overrides)


def test_the_spec_of_a_composed_config() -> None:
    ovs = ["experiment=claim5_newton_vs_gd", "preprocess=whiten", "optimizer=gd", "seed=2"]
    spec = spec_of(ovs)
    assert (spec.study, spec.data_id, spec.preprocess_id, spec.model_id, spec.optimizer_id) == (
        "claim5_newton_vs_gd",
        "mnist-5k",
        "whiten",
        "softmax",
        "gd",
    )
    assert spec.run_name == "mnist-5k-whiten-softmax-gd,seed=2"
    assert spec.prepared_stem == "mnist-5k-whiten"
    assert spec.solver.max_iter == 150  # the study's budget for gd, not gd.yaml's 500
    assert spec.model == ModelSpec("softmax", "softmax", 1.0e-4, True, "float64")
    assert spec.fit_intercept is False  # augmented whitening absorbs the bias
    assert spec.prepared_dir == Path("data/prepared").absolute()
    assert spec_of(["experiment=claim5_newton_vs_gd", "optimizer.max_iter=7"]).solver.max_iter == 7
    newton = spec_of(["experiment=claim5_newton_vs_gd", "optimizer=newton_cg"]).solver
    assert (newton.max_iter, newton.tol, newton.line_search) == (50, 1.0e-8, True)
    assert (newton.preconditioner, newton.hvp_precision) == ("auto", "auto")
    tr = type("T", (), {"kind": "whiten", "penalty_space": "input", "absorbs_bias": True})()
    assert objective_id(spec, tr) == "mnist-5k-softmax-l2=0.0001"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]


def test_solver_options_hold_every_optimizer_key_and_reach_minimize() -> None:
    keys = {f.name for f in dataclasses.fields(OptimizerConfig)} - {"name", "id"}
    assert {f.name for f in dataclasses.fields(SolverOptions)} - {"method"} == keys
    for name in ("gd", "gd_armijo", "newton", "newton_cg", "closed_form", "sgd"):
        spec = spec_of([f"optimizer={name}"])
        kwargs = spec.solver.minimize_kwargs(spec.seed)
        assert {"preconditioner", "hvp_precision"} <= set(kwargs)
        assert ("seed" in kwargs) == (spec.solver.method == "sgd")
    spec = spec_of(
        [
            "optimizer=newton_cg",
            "optimizer.preconditioner=jacobi",
            "optimizer.hvp_precision=float64",
        ]
    )
    assert spec.solver.minimize_kwargs(0)["preconditioner"] == "jacobi"
    assert spec.solver.minimize_kwargs(0)["hvp_precision"] == "float64"


def test_an_old_run_config_without_newer_keys_gets_the_schema_defaults() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "data": {"id": "d", "name": "mnist"},
            "preprocess": {"name": "zscore"},
            "model": {"name": "logistic"},
            "optimizer": {"name": "gd", "lr": 0.5},
        }
    )
    spec = RunSpec.from_config(cfg)
    assert spec.solver.lr == 0.5 and spec.solver.max_iter == OptimizerConfig.max_iter
    assert spec.solver.preconditioner == OptimizerConfig.preconditioner
    assert spec.model.l2 == 1.0e-4 and spec.preprocess_id == "zscore"
    assert spec.run_name == "d-zscore-logistic-gd"
    assert PreprocessConfig.penalty_space == "input"


# ------------------------------------------------------------------ store round trips


def test_run_folder_round_trip(tmp_path: Path) -> None:
    from pipeline.store.rundir import (
        HISTORY_COLUMNS,
        class_names,
        load_confusion,
        load_weights,
        read_config_dict,
        read_history,
        read_json,
        read_run_config,
        read_run_record,
        read_weights,
        write_evaluation,
        write_run,
    )

    spec = spec_of(["data=synthetic_regression", "model=linear"])
    out = tmp_path / "run"
    hist = {k: np.arange(3, dtype=np.float64) + i for i, k in enumerate(HISTORY_COLUMNS)}
    w = np.array([1.0, -2.0, 0.5])
    write_run(
        out,
        spec.config_yaml,
        hist,
        {"w": w, "coef": w[:2], "intercept": w[2:]},
        {"status": "converged"},
    )
    assert read_run_record(out / "metrics.json") == {"status": "converged"}
    assert read_run_config(out / "config.yaml").data.id == spec.data_id
    assert read_config_dict(out / "config.yaml")["optimizer"]["id"] == spec.optimizer_id
    assert np.array_equal(read_weights(out / "weights.npz"), w)
    assert np.array_equal(load_weights(out)["coef"], w[:2])  # type: ignore[index]
    assert np.array_equal(read_history(out / "history.csv")["loss"].to_numpy(), hist["loss"])
    conf = np.array([[3, 1], [0, 4]])
    write_evaluation(out, {"class_names": ["a", "b"], "test_accuracy": 0.875}, conf)
    assert np.array_equal(load_confusion(out), conf) and class_names(out, 2) == ["a", "b"]
    write_evaluation(out, {"class_names": None}, None)  # a regression run: no stale confusion.csv
    assert load_confusion(out) is None
    (out / "metrics.json").write_bytes(b"\xff")
    with pytest.raises(DataError, match="metrics.json: not a valid UTF-8 JSON file"):
        read_run_record(out / "metrics.json")
    with pytest.raises(DataError, match="not found"):
        read_json(out / "nothing.json")


def test_a_run_record_is_three_files_read_back_as_one(tmp_path: Path) -> None:
    """metrics.json holds a few numbers (DVC's metrics), timing.json the seconds and the MLflow
    run id (not hashed by DVC), run.json the rest; the readers join them, and the history gets its
    time_s column back from timing.json."""
    from pipeline.store.rundir import (
        HISTORY_COLUMNS,
        HISTORY_FILE_COLUMNS,
        read_history,
        read_run_record,
        write_run,
    )

    record = {"study": "s", "status": "converged", "message": "‖∇f‖ ≤ tol", "iterations": 2,
              "passes": 2.0, "train_loss": 0.25, "grad_norm": 4.7e-9, "train_time_s": 1.5,
              "test_accuracy": None, "converged": True, "mlflow_run_id": "abc"}
    hist = {k: np.arange(3, dtype=np.float64) + i for i, k in enumerate(HISTORY_COLUMNS)}
    out = tmp_path / "run"
    write_run(out, "a: 1\n", hist, {"w": np.zeros(2)}, record)
    numbers = json.loads((out / "metrics.json").read_text())
    assert numbers == {"train_loss": 0.25, "iterations": 2, "passes": 2.0,
                       "log10_grad_norm": pytest.approx(np.log10(4.7e-9))}
    assert json.loads((out / "timing.json").read_text()) == {
        "train_time_s": 1.5, "mlflow_run_id": "abc", "time_s": hist["time_s"].tolist()}
    assert "1.5" not in (out / "run.json").read_text() and "time_s" not in (
        out / "history.csv").read_text()
    assert read_run_record(out / "metrics.json") == record
    df = read_history(out / "history.csv")
    assert list(df.columns) == list(HISTORY_COLUMNS) and list(HISTORY_FILE_COLUMNS) == [
        c for c in HISTORY_COLUMNS if c != "time_s"]
    for k in HISTORY_COLUMNS:
        assert np.array_equal(df[k].to_numpy(), hist[k]), k
    (out / "timing.json").write_text('{"time_s": [1.0]}')  # another run's: not one per row
    assert read_history(out / "history.csv")["time_s"].isna().all()
    (out / "timing.json").unlink()  # e.g. pulled from a DVC remote: no seconds, no run id
    assert read_run_record(out / "metrics.json") == {**record, "train_time_s": None,
                                               "mlflow_run_id": None}
    assert read_history(out / "history.csv")["time_s"].isna().all()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_the_read_error_ladder(tmp_path: Path) -> None:
    from pipeline.store.reading import read_file

    path = tmp_path / "f.txt"
    with pytest.raises(DataError, match="f.txt not found; fix it"):
        read_file(path, lambda p: p.read_text(), "bad", "fix it")
    path.write_text("x")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="cannot read it"):
            read_file(path, lambda p: p.read_text(), "bad", "fix it")
    finally:
        path.chmod(0o644)
    with pytest.raises(DataError, match=r"f.txt: bad \(boom\); fix it"):
        read_file(path, lambda p: (_ for _ in ()).throw(ValueError("boom")), "bad", "fix it")


def test_prepared_pair_round_trip(tmp_path: Path) -> None:
    from pipeline.core.transforms import fit_preprocess
    from pipeline.data.datasets import Dataset
    from pipeline.spec import prepared_stem
    from pipeline.store.prepared import (
        load_prepared,
        load_spectra,
        load_transform,
        prepared_path,
        read_facts,
        save_prepared,
    )

    rng = np.random.default_rng(0)
    X, Xt = rng.normal(size=(20, 3)), rng.normal(size=(5, 3))
    ds = Dataset(X, rng.normal(size=20), Xt, rng.normal(size=5), "regression", None, "toy")
    tr = fit_preprocess({"name": "zscore"}, X)
    path = prepared_path(tmp_path, prepared_stem("toy", "zscore"))
    assert path.name == "toy-zscore.npz"
    save_prepared(path, ds, tr, np.ones(4), np.ones(4), {"task": "regression", "n_classes": None})
    back, tr2, facts = load_prepared(path)
    # the inputs are stored, the transform applied on loading
    assert np.array_equal(back.X_train, tr.apply(X)) and np.array_equal(tr2.offset, tr.offset)
    assert np.array_equal(back.X_test, tr.apply(Xt)) and not np.array_equal(back.X_train, X)
    assert read_facts(path)["task"] == "regression" and facts["task"] == "regression"
    assert set(load_spectra(path)) == {"spectrum_before", "spectrum_after"}
    assert load_transform(path).kind == "zscore"


def test_reference_round_trip(tmp_path: Path) -> None:
    from pipeline.store.references import load_references, write_reference

    record = {
        "objective": "d-linear-l2=0",
        "f_star": 1.5,
        "status": "converged",
        "method": "newton",
        "grad_norm": 1e-12,
        "solved_in": "none",
        "iterations": 3,
        "seconds": 0.1,
        "coordinates": {"none": {"kappa": 2.0}},
    }
    out = write_reference(tmp_path, record)
    assert out.name == "d-linear-l2=0.json"
    (tmp_path / "broken.json").write_text("[1]")
    refs, notes = load_references(tmp_path)
    assert refs["d-linear-l2=0"].f_star == 1.5 and refs["d-linear-l2=0"].curvature("none") == {
        "kappa": 2.0
    }
    assert len(notes) == 1 and "broken.json: unreadable reference optimum" in notes[0]
    # the solve's seconds beside it (.dvcignore'd timing/), the prepared file's path relative
    assert refs["d-linear-l2=0"].seconds == 0.1 and "seconds" not in out.read_text()
    assert json.loads((tmp_path / "timing" / out.name).read_text()) == {"seconds": 0.1}


def test_a_reference_names_its_prepared_file_relative_to_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.store.references import portable_path

    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "data" / "p.npz")) == "data/p.npz"
    assert portable_path("data/p.npz") == "data/p.npz"
    assert portable_path("/elsewhere/p.npz") == "/elsewhere/p.npz"


def test_analytic_study_round_trip(tmp_path: Path) -> None:
    from pipeline.store.studies import read_study, write_study

    table = pd.DataFrame({"a": [1, 2], "seconds": [0.5, 0.25], "b": [0.5, 0.25]})
    dest = write_study(
        tmp_path, "s1", table, {"x": np.arange(3.0)},
        {"name": "s1", "metrics": {"m": 1.0}, "seconds": 2.5}
    )
    meta, back, arrays = read_study(dest)
    assert (
        meta["metrics"] == {"m": 1.0}
        and meta["seconds"] == 2.5
        and back.equals(table)
        and np.array_equal(arrays["x"], np.arange(3.0))
    )
    # the seconds live in timing.json (.dvcignore'd): the hashed files are the same on a rerun
    assert "seconds" not in (dest / "table.csv").read_text() + (dest / "study.json").read_text()
    (dest / "timing.json").unlink()
    meta, back, _ = read_study(dest)
    assert meta["seconds"] is None and list(back.columns) == ["a", "b"]
    with pytest.raises(DataError, match="not found"):
        read_study(tmp_path / "missing")


def test_sweep_records_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tracking import sweep

    monkeypatch.delenv(sweep.PARENT_ENV, raising=False)
    sweep.begin_sweep(tmp_path)
    sweep.announce_parent(tmp_path, "parent123")
    try:
        assert sweep.sweep_parent_run_id(str(tmp_path)) == "parent123"
        ctx = sweep.JobContext(
            overrides=("optimizer.lr=0.1",), multirun=True, job_num=1, sweep_dir=str(tmp_path)
        )
        sweep.record_trial(ctx, {"val_accuracy": 0.9})
        sweep.record_sweep_failure(dataclasses.replace(ctx, job_num=2), "boom")
        assert sweep.read_trials(tmp_path) == [
            {"job": 1, "overrides": ["optimizer.lr=0.1"], "metrics": {"val_accuracy": 0.9}}
        ]
        assert sweep.any_failed(tmp_path) and sweep.failed_jobs(tmp_path)[0]["message"] == "boom"
    finally:
        assert sweep.end_sweep() == str(tmp_path)
    assert sweep.parent_run_id_from_env() is None
    monkeypatch.delenv(sweep.PARENT_ENV, raising=False)
    assert sweep.sweep_parent_run_id(str(tmp_path)) == "parent123"  # from the file
    assert json.loads((tmp_path / "trials" / "1.json").read_text())["job"] == 1
