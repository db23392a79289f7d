"""The train / evaluate stages end to end on the real numerical core, checked against independent
solvers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from support.project import SYNTH, ensure_prepared, make_cfg, read_history

from pipeline.cli.progress import IterationBar, show_progress
from pipeline.core.errors import ConfigError, DataError, NumericalError
from pipeline.evaluate import evaluate
from pipeline.spec import RunSpec
from pipeline.store.prepared import load_prepared
from pipeline.store.rundir import DVC_METRICS, HISTORY_FILE_COLUMNS, read_run_record, run_dir
from pipeline.tracking.sweep import JobContext
from pipeline.train import train

METRIC_KEYS = {
    "study",
    "data",
    "preprocess",
    "model",
    "optimizer",
    "objective",
    "l2",
    "lr",
    "n_params",
    "status",
    "converged",
    "message",
    "iterations",
    "passes",
    "cg_iterations",
    "train_loss",
    "grad_norm",
    "train_time_s",
    "train_accuracy",
    "test_accuracy",
    "test_loss",
    "mlflow_run_id",
}


def test_whitened_least_squares_gd_hits_the_normal_equations(work: Path) -> None:
    cfg = make_cfg(work, [*SYNTH, "preprocess=whiten", "optimizer=gd"])
    prep = ensure_prepared(cfg)
    metrics = train(cfg)
    out = run_dir(RunSpec.from_config(cfg))
    assert out.name == "synth-kappa100-whiten-linear-gd"
    assert set(metrics) >= METRIC_KEYS
    assert metrics["status"] == "converged" and metrics["converged"] is True
    assert metrics["iterations"] <= 3  # whitened MSE Hessian = I: GD with ε = 1/L is Newton
    assert metrics["fit_intercept"] is False  # augmented whitening absorbs the bias
    # the raw objective: the bias is absorbed, not gone
    assert metrics["objective"] == "synth-kappa100-linear-l2=0"
    assert metrics["cg_iterations"] is None  # GD has no inner solves
    assert metrics["train_accuracy"] is None and metrics["test_accuracy"] is None
    # the record, joined
    assert read_run_record(out / "metrics.json") == json.loads(json.dumps(metrics))
    numbers = json.loads((out / "metrics.json").read_text())  # what `dvc metrics show` lists
    assert set(numbers) == {"train_loss", "iterations", "passes", "log10_grad_norm"}
    assert numbers["log10_grad_norm"] == pytest.approx(np.log10(metrics["grad_norm"]))
    timing = json.loads((out / "timing.json").read_text())
    assert timing["train_time_s"] == metrics["train_time_s"] > 0 and timing["mlflow_run_id"] is None
    assert "train_time_s" not in (out / "run.json").read_text()
    ds, _, _ = load_prepared(prep)
    w_ls = np.linalg.lstsq(ds.X_train, ds.y_train, rcond=None)[0]  # independent solver
    with np.load(out / "weights.npz", allow_pickle=False) as z:
        assert set(z.files) == {"w", "coef", "intercept"}
        np.testing.assert_allclose(z["w"], w_ls, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(z["coef"], w_ls, rtol=1e-6, atol=1e-8)
    header, hist = read_history(out / "history.csv")
    assert header == list(HISTORY_FILE_COLUMNS) and "time_s" not in header  # seconds: timing.json
    assert hist[0, 0] == 0 and hist[-1, 0] == metrics["iterations"]
    assert hist[-1, header.index("loss")] == pytest.approx(metrics["train_loss"])
    resid = ds.X_test @ w_ls - ds.y_test
    assert metrics["test_loss"] == pytest.approx(0.5 * np.mean(resid**2), rel=1e-6)
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.optimizer.name == "gd" and saved.data.n_samples == 400 and "hydra" not in saved


def test_raw_least_squares_newton_fits_the_intercept(work: Path) -> None:
    cfg = make_cfg(work, [*SYNTH, "preprocess=none", "optimizer=newton"])
    prep = ensure_prepared(cfg)
    metrics = train(cfg, JobContext(overrides=("optimizer=newton",)))
    assert metrics["status"] == "converged" and metrics["fit_intercept"] is True
    ds, _, _ = load_prepared(prep)
    A = np.hstack([ds.X_train, np.ones((ds.X_train.shape[0], 1))])
    sol = np.linalg.lstsq(A, ds.y_train, rcond=None)[0]
    with np.load(run_dir(RunSpec.from_config(cfg)) / "weights.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["coef"], sol[:-1], rtol=1e-6, atol=1e-8)
        assert float(z["intercept"]) == pytest.approx(sol[-1], rel=1e-6, abs=1e-8)


@pytest.mark.slow
def test_evaluate_reuses_a_prepared_set_until_its_file_changes(work: Path) -> None:
    from pipeline.evaluate import scoring_inputs

    runs = [RunSpec.from_config(make_cfg(work, [*SYNTH, "preprocess=whiten", f"optimizer={o}"]))
            for o in ("gd", "newton")]
    prep = Path(ensure_prepared(make_cfg(work, [*SYNTH, "preprocess=whiten", "optimizer=gd"])))
    first = scoring_inputs(runs[0])
    assert scoring_inputs(runs[1])[2] is first[2]  # same files and model: one load, one objective
    copy = prep.with_name("copy.npz")
    copy.write_bytes(prep.read_bytes())
    copy.replace(prep)  # the same bytes in a new file: loaded again
    again = scoring_inputs(runs[0])
    assert again[2] is not first[2]
    np.testing.assert_array_equal(again[0].X_train, first[0].X_train)


def test_softmax_newton_cg_matches_sklearn_and_evaluate_agrees(work: Path, mnist_dir: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix

    from pipeline.core.objectives import make_objective

    l2 = 5.0e-2
    cfg = make_cfg(
        work,
        [
            f"data.root={mnist_dir}",
            "data=mnist",
            "data.n_train=1000",
            "data.n_test=500",
            "preprocess=zscore_transformed",
            "model=softmax",
            f"model.l2={l2}",
            "optimizer=newton_cg",
            "optimizer.tol=1.0e-7",
        ],
    )
    prep = ensure_prepared(cfg)
    metrics = train(cfg)
    assert metrics["status"] == "converged", metrics["message"]
    # λ on W_z: its own objective
    assert metrics["objective"] == "mnist-zscore_transformed-softmax-l2=0.05"
    hist = read_history(run_dir(RunSpec.from_config(cfg)) / "history.csv")[1]
    assert metrics["cg_iterations"] >= 1
    assert metrics["passes"] == hist[-1, HISTORY_FILE_COLUMNS.index("passes")]
    ds, _, _ = load_prepared(prep)
    n = ds.X_train.shape[0]
    # sklearn: C Σ loss + ½‖W‖² (bias free)  ⇔  mean loss + (λ/2)‖W‖² with C = 1/(nλ)
    sk = LogisticRegression(C=1.0 / (n * l2), tol=1e-8, max_iter=3000, solver="newton-cg").fit(
        ds.X_train, ds.y_train
    )
    obj = make_objective("softmax", ds.X_train, ds.y_train, l2=l2, fit_intercept=True, n_classes=10,
                         dtype=np.float64)
    with np.load(run_dir(RunSpec.from_config(cfg)) / "weights.npz", allow_pickle=False) as z:
        w, W = z["w"], z["coef"]
    f_ours, f_sk = obj.value(w), obj.value(obj.pack(sk.coef_.T, sk.intercept_))
    assert f_ours <= f_sk + 1e-9 and f_ours == pytest.approx(f_sk, rel=1e-6)
    np.testing.assert_allclose(W, sk.coef_.T, atol=2e-3)
    pred = obj.predict(ds.X_test, w)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(pred == ds.y_test))

    ev = evaluate(cfg)
    out = run_dir(RunSpec.from_config(cfg))
    assert json.loads((out / "evaluation.json").read_text()) == json.loads(json.dumps(ev))
    assert ev["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert ev["train_accuracy"] == pytest.approx(metrics["train_accuracy"])
    assert ev["n_train"] == 1000 and ev["n_test"] == 500
    header, conf = read_history(out / "confusion.csv")
    assert header == [str(i) for i in range(10)]
    np.testing.assert_array_equal(conf, confusion_matrix(ds.y_test, pred, labels=range(10)))
    np.testing.assert_allclose(ev["per_class_accuracy"], np.diag(conf) / conf.sum(axis=1))

    train(cfg)  # retraining makes the old evaluation stale: it is removed, not left behind
    assert not (out / "evaluation.json").exists() and not (out / "confusion.csv").exists()


def test_lbfgs_run_writes_its_run_folder_at_the_least_squares_solution(work: Path) -> None:
    cfg = make_cfg(work, [*SYNTH, "preprocess=none", "optimizer=lbfgs"])
    prep = ensure_prepared(cfg)
    metrics = train(cfg)
    out = run_dir(RunSpec.from_config(cfg))
    assert out.name == "synth-kappa100-none-linear-lbfgs"
    assert metrics["status"] == "converged", metrics["message"]
    assert metrics["optimizer"] == "lbfgs" and metrics["grad_norm"] <= 1e-8
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "weights.npz", "history.csv",
                                                "config.yaml"}
    assert read_run_record(out / "metrics.json") == json.loads(json.dumps(metrics))
    assert set(json.loads((out / "metrics.json").read_text())) <= {*DVC_METRICS, "log10_grad_norm"}
    header, hist = read_history(out / "history.csv")
    assert header == list(HISTORY_FILE_COLUMNS) and hist[-1, 0] == metrics["iterations"]
    assert metrics["passes"] == hist[-1, header.index("passes")]
    ds, _, _ = load_prepared(prep)
    A = np.hstack([ds.X_train, np.ones((ds.X_train.shape[0], 1))])
    sol = np.linalg.lstsq(A, ds.y_train, rcond=None)[0]
    with np.load(out / "weights.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["coef"], sol[:-1], rtol=1e-6, atol=1e-6)
        assert float(z["intercept"]) == pytest.approx(sol[-1], rel=1e-6, abs=1e-6)


def test_diverged_run_is_saved_with_finite_weights_and_refused(work: Path) -> None:
    cfg = make_cfg(work, [*SYNTH, "preprocess=none", "optimizer=gd", "optimizer.lr=50.0"])
    ensure_prepared(cfg)
    with pytest.raises(NumericalError, match="diverged"):
        train(cfg)
    out = run_dir(RunSpec.from_config(cfg))
    metrics = read_run_record(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["converged"] is False
    with np.load(out / "weights.npz", allow_pickle=False) as z:
        assert np.all(np.isfinite(z["w"]))
    cfg.fail_on_diverged = False
    assert train(cfg)["status"] == "diverged"


def test_bad_inputs_are_refused_before_anything_is_written(work: Path) -> None:
    cfg = make_cfg(
        work, [*SYNTH, "preprocess=zscore", "optimizer=gd", "study=refused"], mlflow=True
    )
    with pytest.raises(DataError, match="python -m pipeline.prepare data=synthetic_regression "
                                        "preprocess=zscore"):
        train(cfg)
    ensure_prepared(cfg)
    cfg2 = make_cfg(
        work, [*SYNTH, "preprocess=zscore", "optimizer=gd", "study=refused", "data.noise=0.5"]
    )
    with pytest.raises(DataError, match="data.noise"):
        train(cfg2)  # the prepared file was made with another value
    cfg3 = make_cfg(work, [*SYNTH, "preprocess=zscore", "model=softmax", "study=refused"])
    with pytest.raises(ConfigError, match="model=softmax needs a multiclass"):
        train(cfg3)
    assert not (work / "experiments" / "refused").exists()
    assert not (work / "mlflow.db").exists()


def test_progress_bar_only_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert show_progress(None) is False  # pytest's stderr is not a TTY
    assert show_progress(True) is True and show_progress(False) is False
    with IterationBar(5, "quiet", enabled=False) as cb:
        for i in range(1, 6):
            cb(i, {"loss": 1.0 / i, "grad_norm": 0.1})
    assert capsys.readouterr().err == ""
    with IterationBar(5, "shown", enabled=True) as cb:
        for i in range(1, 6):
            cb(i, {"loss": 1.0 / i, "grad_norm": 0.1})
    assert "shown" in capsys.readouterr().err


def test_streamed_rows_train_and_evaluate_like_the_whole_matrix(
    work: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past core.rows.DENSE_MAX_BYTES the stages read uint8 pixels made float64 block by block:
    the same fit (to rounding: sums over blocks), the same evaluation."""
    import pipeline.core.rows as rows_mod
    import pipeline.evaluate as evaluate_mod

    cfg = make_cfg(work, [f"data.root={mnist_dir}", "data=mnist", "data.n_train=3000",
                          "data.n_test=500", "data.val_fraction=0.1", "preprocess=zscore",
                          "model=softmax", "model.l2=1.0e-3", "optimizer=newton_cg",
                          "optimizer.tol=1.0e-9"])
    prep = ensure_prepared(cfg)
    whole = train(cfg), evaluate(cfg)
    monkeypatch.setattr(rows_mod, "DENSE_MAX_BYTES", 1 << 20)  # 2 700 × 784 float64: 17 MB
    monkeypatch.setattr(rows_mod, "STREAM_ROWS", 500)
    monkeypatch.setattr(evaluate_mod, "_LAST_SCORING", {})  # no objective kept from the first
    assert isinstance(load_prepared(prep)[0].X_train, rows_mod.AffineRows)
    streamed = train(cfg), evaluate(cfg)
    for a, b in zip(whole, streamed, strict=True):
        assert a["status" if "status" in a else "run"] == b["status" if "status" in b else "run"]
        for key in ("train_loss", "test_loss", "val_loss", "train_accuracy", "test_accuracy",
                    "val_accuracy"):
            if a.get(key) is not None:
                assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    assert streamed[0]["status"] == "converged"
    assert streamed[0]["iterations"] == whole[0]["iterations"]
