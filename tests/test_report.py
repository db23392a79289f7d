"""The report stage: tables and figures from run directories in the documented format.

The run directories are made here with the real numerics (B's ``minimize``) on a small MNIST
subsample, written in the format of docs/architecture.md, so f* and the speed table are real.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.reporting import analysis, studies
from pipeline.reporting.reference import Reference
from pipeline.reporting.runs import gather_dirs, load_confusion

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def compose_report_cfg(tmp: Path, *overrides: str) -> dict[str, Any]:
    """conf/report.yaml composed with Hydra (the real defaults), paths pointed into ``tmp``."""
    from hydra import compose, initialize_config_dir

    import pipeline.report  # noqa: F401  (registers report_schema)
    from pipeline.config import as_kwargs

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("report", overrides=[
            f"paths.reports_dir={tmp / 'reports'}", f"paths.experiments_dir={tmp / 'experiments'}",
            f"paths.prepared_dir={tmp / 'prepared'}", "mlflow.enabled=false", *overrides])
    return as_kwargs(cfg)


def assert_png(path: Path) -> None:
    """A real PNG: signature, IHDR size > 0, and matplotlib can decode it."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    w, h = struct.unpack(">II", data[16:24])
    assert w > 50 and h > 50, (path, w, h)
    img = mpimg.imread(path)
    assert img.shape[0] == h and img.shape[1] == w
    assert float(np.std(img)) > 0.01, f"{path} is blank"


# ---------------------------------------------------------------------------- fixture runs


def _write_run(root: Path, study: str, name: str, metrics: dict[str, Any], history: dict[str, np.ndarray],
               config: dict[str, Any], weights: dict[str, np.ndarray], evaluation: dict[str, Any] | None,
               confusion: np.ndarray | None) -> Path:
    import yaml

    d = root / study / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame(history).to_csv(d / "history.csv", index=False)
    np.savez(d / "weights.npz", **weights)
    if evaluation is not None:
        (d / "evaluation.json").write_text(json.dumps(evaluation))
    if confusion is not None:
        c = confusion.shape[0]
        pd.DataFrame(confusion, columns=[str(j) for j in range(c)]).to_csv(d / "confusion.csv", index=False)
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """prepared/ (MNIST 400-image subsample, none + zscore) and experiments/study_t/ with 4 runs."""
    import os

    from pipeline.data.datasets import load_dataset
    from pipeline.losses import make_objective
    from pipeline.optimizers import minimize
    from pipeline.prepared import save_prepared
    from pipeline.preprocessing import fit_preprocess

    os.environ["CURVLAB_DATA_DIR"] = str(mnist_dir)
    tmp = tmp_path_factory.mktemp("proj")
    data_cfg = {"name": "mnist", "id": "mnist-t", "n_train": 400, "n_test": 200, "seed": 0}
    ds = load_dataset(data_cfg)
    for pre in ("none", "zscore"):
        tr = fit_preprocess({"name": pre}, ds.X_train)
        Z, Zt = tr.apply(ds.X_train), tr.apply(ds.X_test)
        out = type(ds)(Z, ds.y_train, Zt, ds.y_test, ds.task, ds.n_classes, ds.name, ds.meta)
        Xa = np.hstack([Z, np.ones((Z.shape[0], 1))])
        spec = np.sort(np.linalg.eigvalsh(Xa.T @ Xa / Z.shape[0]))[::-1]
        facts = {"data": "mnist-t", "preprocess": pre, "task": ds.task, "n_classes": 10,
                 "n_train": 400, "n_test": 200, "n_features_in": 784, "n_features_out": Z.shape[1],
                 "n_kept": Z.shape[1], "absorbs_bias": False, "cond_before": None, "cond_after": None}
        save_prepared(tmp / "prepared" / f"mnist-t-{pre}.npz", out, tr, spec, spec, facts)
        for opt, opts in (("gd", {"lr": "auto", "max_iter": 40, "tol": 1e-6}),
                          ("newton_cg", {"max_iter": 30, "tol": 1e-9, "line_search": True})):
            obj = make_objective("softmax", Z, ds.y_train, l2=1e-3, fit_intercept=True, n_classes=10,
                                 dtype="float64")
            res = minimize(obj, np.zeros(obj.n_params), opt, **opts)
            W, b = obj.unpack(res.w)
            pred_tr, pred_te = obj.predict(Z, res.w), obj.predict(Zt, res.w)
            cm = np.zeros((10, 10), dtype=np.int64)
            np.add.at(cm, (ds.y_test, pred_te), 1)
            acc_tr, acc_te = float(np.mean(pred_tr == ds.y_train)), float(np.mean(pred_te == ds.y_test))
            test_loss = float(obj.predict_loss(Zt, ds.y_test, res.w))
            metrics = {"study": "study_t", "data": "mnist-t", "preprocess": pre, "model": "softmax",
                       "optimizer": opt, "l2": 1e-3, "lr": res.lr, "n_params": obj.n_params,
                       "fit_intercept": True, "status": res.status,
                       "converged": res.status == "converged", "message": res.message,
                       "iterations": int(res.n_iter), "train_loss": float(res.history["loss"][-1]),
                       "grad_norm": float(res.history["grad_norm"][-1]),
                       "train_time_s": float(res.history["time_s"][-1]), "train_accuracy": acc_tr,
                       "test_accuracy": acc_te, "test_loss": test_loss, "mlflow_run_id": None}
            config = {"data": {**data_cfg, "scale": 1 / 255}, "preprocess": {"name": pre, "id": pre},
                      "model": {"name": "softmax", "l2": 1e-3, "fit_intercept": True},
                      "optimizer": {"name": opt, **{k: v for k, v in opts.items()}}, "study": "study_t"}
            ev = {"train_accuracy": acc_tr, "test_accuracy": acc_te,
                  "train_loss": metrics["train_loss"], "test_loss": test_loss, "n_train": 400,
                  "n_test": 200, "per_class_accuracy": [None] * 10}
            _write_run(tmp / "experiments", "study_t", f"mnist-t-{pre}-softmax-{opt}", metrics,
                       {k: np.asarray(v) for k, v in res.history.items()}, config,
                       {"w": res.w, "coef": W, "intercept": np.asarray(b)}, ev, cm)
    return tmp


@pytest.fixture(scope="module")
def built(project: Path) -> tuple[Path, dict[str, Any]]:
    """The report built once from the fixture runs (trained-run sections + conditioning)."""
    from pipeline.report import run_report

    cfg = compose_report_cfg(project, "report.sections=[conditioning,trained]",
                             "report.conditioning.data=mnist-t", "report.reference.dense_max=100")
    summary = run_report(cfg)
    return project / "reports", summary


# ---------------------------------------------------------------------------- the built report


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_every_figure_in_index_exists_and_is_a_png(built: tuple[Path, dict[str, Any]]) -> None:
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 4  # convergence ×1, spectrum, confusion, weights
    for src in srcs:
        assert_png(rep / src)
    names = " ".join(srcs)
    for must in ("convergence-study_t-mnist-t-softmax", "conditioning-mnist-t", "confusion-", "weights-"):
        assert must in names, must
    for href in re.findall(r'<a href="(tables/[^"]+)"', page):
        assert (rep / href).is_file(), href
    md = (rep / "report.md").read_text(encoding="utf-8")
    assert all(src in md for src in srcs)  # the markdown shows the same figures
    assert not list(rep.glob(".staging-*")), "staging folder left behind"


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_speed_table_one_row_per_run_with_reference_optimum(built: tuple[Path, dict[str, Any]], project: Path) -> None:
    rep, _ = built
    speed = pd.read_csv(rep / "tables" / "speed.csv")
    runs = sorted(p.parent.name for p in (project / "experiments").glob("*/*/metrics.json"))
    assert sorted(speed["run_id"].str.split("/").str[1]) == runs
    for col in ("iters_to_1e-04", "seconds_to_1e-04", "iters_to_1e-08", "seconds_to_1e-08",
                "rate_measured", "rate_predicted", "kappa_gd", "f_star"):
        assert col in speed.columns
    assert set(speed["f_star_source"]) == {"newton_cg"}
    nt = speed[speed["optimizer"] == "newton_cg"]
    assert nt["iters_to_1e-08"].str.fullmatch(r"\d+").all()  # Newton reaches 1e-8
    gd = speed[speed["optimizer"] == "gd"]
    assert gd["iters_to_1e-08"].str.startswith("not reached in 40").all()  # 40 GD steps do not
    assert (gd["rate_measured"] < 1).all() and (gd["rate_measured"] > 0).all()


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_reference_optimum_matches_an_independent_solver(built: tuple[Path, dict[str, Any]], project: Path) -> None:
    """f* from the cached Newton-CG solve equals scipy's L-BFGS on the same objective."""
    from scipy.optimize import minimize as sp_minimize

    from pipeline.losses import make_objective
    from pipeline.prepared import load_prepared

    rep, _ = built
    refs = pd.read_csv(rep / "tables" / "reference-optima.csv")
    row = refs[refs["preprocess"] == "zscore"].iloc[0]
    ds, _, _ = load_prepared(project / "prepared" / "mnist-t-zscore.npz")
    obj = make_objective("softmax", ds.X_train, ds.y_train, l2=1e-3, fit_intercept=True, n_classes=10,
                         dtype="float64")
    res = sp_minimize(obj.value_grad, np.zeros(obj.n_params), jac=True, method="L-BFGS-B",
                      options={"maxiter": 3000, "gtol": 1e-8, "ftol": 1e-15})
    assert row["f_star"] <= res.fun + 1e-9
    assert row["f_star"] == pytest.approx(res.fun, rel=1e-7)
    cached = list((rep / "cache").glob("fstar-*.json"))
    assert len(cached) == 2 and all(json.loads(p.read_text())["f_star"] > 0 for p in cached)


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_accuracy_table_equals_metrics_json(built: tuple[Path, dict[str, Any]], project: Path) -> None:
    rep, _ = built
    acc = pd.read_csv(rep / "tables" / "accuracy.csv")
    metrics = {f"study_t/{p.parent.name}": json.loads(p.read_text())
               for p in (project / "experiments").glob("study_t/*/metrics.json")}
    assert sorted(acc["run_id"]) == sorted(metrics)
    for rec in acc.itertuples():
        m = metrics[rec.run_id]
        assert rec.train_accuracy == m["train_accuracy"] and rec.test_accuracy == m["test_accuracy"]
        assert rec.test_loss == m["test_loss"] and rec.model == "softmax"
    page = (rep / "index.html").read_text(encoding="utf-8")
    best = max(metrics.values(), key=lambda m: m["test_accuracy"])
    assert f"{best['test_accuracy']:.2%}" in page


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_penalty_note_beside_whitening_figures(built: tuple[Path, dict[str, Any]]) -> None:
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    assert "acts on different coordinates" in page  # λ = 1e-3 > 0 with zscore runs


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_second_build_uses_the_cache_and_keeps_the_page(built: tuple[Path, dict[str, Any]], project: Path) -> None:
    from pipeline.report import run_report

    cfg = compose_report_cfg(project, "report.sections=[trained]", "report.reference.dense_max=100")
    summary = run_report(cfg)
    assert summary["timings"]["reference"] < 5.0  # both f* read from reports/cache/
    assert (project / "reports" / "tables" / "speed.csv").exists()


@pytest.mark.slow  # the module's MNIST runs take ~15 s to make
def test_a_damaged_run_is_skipped_with_a_warning_and_listed(built: tuple[Path, dict[str, Any]],
                                                            tmp_path: Path, project: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from pipeline.report import run_report

    shutil.copytree(project / "experiments", tmp_path / "experiments")
    shutil.copytree(project / "reports", tmp_path / "reports")
    runs = sorted((tmp_path / "experiments" / "study_t").iterdir())
    bad = runs[0] / "metrics.json"
    bad.write_text("{not json")
    cfg = compose_report_cfg(tmp_path, "report.sections=[trained]")
    cfg["paths"]["prepared_dir"] = str(project / "prepared")
    summary = run_report(cfg)
    assert summary["runs"] == len(runs) - 1  # the others are rendered
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning: skipped run" in ln]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "not a valid UTF-8 JSON" in warnings[0]
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "Skipped 1 damaged run" in page and runs[0].name in page
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".reports")) == []


# ---------------------------------------------------------------------------- units


def test_first_reach_and_measured_rate_on_a_geometric_sequence() -> None:
    k = np.arange(60, dtype=np.float64)
    f_star = 0.5
    hist = pd.DataFrame({"iteration": k, "time_s": k * 0.1, "loss": f_star + 2.0 * 0.8**k,
                         "grad_norm": 0.8**k})
    sub = analysis.suboptimality(hist, f_star)
    it, sec = analysis.first_reach(sub, 1e-4)
    expect = int(np.ceil(np.log(1e-4 * 0.5 / 2.0) / np.log(0.8)))  # 2·0.8^k ≤ 1e-4·|f*|
    assert it == expect and sec == pytest.approx(expect * 0.1)
    assert analysis.first_reach(sub, 1e-30) == (None, None)
    assert analysis.measured_rate(sub, f_star) == pytest.approx(0.8, rel=1e-6)


def test_speed_table_flags_a_rate_slower_than_theory() -> None:
    """A GD run contracting at 0.99 while 1 − εμ = 0.9 is reported as a disagreement."""
    from pipeline.reporting.runs import RunSet

    k = np.arange(50, dtype=np.float64)
    hist = pd.DataFrame({"iteration": k, "time_s": k, "loss": 1.0 + 0.99**k, "grad_norm": 0.99**k})
    runs = RunSet(pd.DataFrame([{"run_id": "s/r", "study": "s", "data": "d", "preprocess": "none",
                                 "model": "logistic", "optimizer": "gd", "l2": 0.0, "lr": 0.1,
                                 "status": "max_iter", "iterations": 49, "train_time_s": 1.0}]
                               ).set_index("run_id", drop=False), {"s/r": hist}, {"s/r": {}})
    ref = Reference(f_star=1.0, source="newton", status="converged", mu=1.0, L_local=2.0)
    table = analysis.speed_table(runs, {("d", "none", "logistic", 0.0): ref})
    row = table.iloc[0]
    assert row["rate_predicted"] == pytest.approx(0.9)
    assert row["rate_measured"] == pytest.approx(0.99, rel=1e-6)
    assert row["rate_check"].startswith("DISAGREES")


def test_confusion_reader_accepts_header_and_label_column(tmp_path: Path) -> None:
    m = np.array([[5, 1], [2, 7]])
    (tmp_path / "confusion.csv").write_text("0,1\n5,1\n2,7\n")
    assert np.array_equal(load_confusion(tmp_path), m)
    (tmp_path / "confusion.csv").write_text("true,0,1\n0,5,1\n1,2,7\n")
    assert np.array_equal(load_confusion(tmp_path), m)
    (tmp_path / "confusion.csv").write_text("1,2\n3,4\n5,6\n7,8\n")
    with pytest.raises(DataError, match="not square"):
        load_confusion(tmp_path)


def test_gather_rejects_missing_and_empty_experiment_dirs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no experiments directory"):
        gather_dirs(tmp_path / "nope")
    (tmp_path / "exp" / "s" / "r").mkdir(parents=True)
    with pytest.raises(DataError, match="no finished runs"):
        gather_dirs(tmp_path / "exp")


def test_gd_paths_match_the_step_size_theory() -> None:
    """f = 3x² + 2y² − 2 (L = 6): ε < 2/L converges to f* = −2, ε > 2/L blows up."""
    cfg = {"n_steps": 60, "functions": [{"name": "bowl", "a": 3.0, "b": 2.0, "c": -2.0, "start": [1.0, 1.0],
                                         "learning_rates": [0.1, 0.3, 0.34]}]}
    figs, table = studies.study_gd_paths(cfg)
    assert list(table["predicted"]) == ["converges", "oscillates, converges", "diverges"]
    assert table["f_end_minus_f_star"].iloc[0] < 1e-8 and table["f_end_minus_f_star"].iloc[1] < 1e-4
    assert table["f_end_minus_f_star"].iloc[2] > 1e2
    pts = figs[0]["paths"][1][1]  # ε = 0.3: x flips sign every step (1 − εL = −0.8)
    assert np.all(np.sign(pts[1:12, 0]) == -np.sign(pts[:11, 0]))


def test_exercise_functions_convexity() -> None:
    maps, table = studies.study_convexity_functions({"functions": ["trough", "quartic"], "extent": 2.0})
    assert list(table["convex"]) == [True, False]
    lam = maps[1][3]  # λ_min of [[12x² + 2, 1], [1, 0]] at x = 0 is 1 − √2
    assert lam.max() < 0 and lam.min() == pytest.approx(1 - math.sqrt(2), abs=1e-3)
    with pytest.raises(ConfigError, match="unknown"):
        studies.study_convexity_functions({"functions": ["nope"]})


def test_kappa_sweep_whitening_takes_one_step() -> None:
    cfg = {"condition_numbers": [1.0e1, 1.0e3], "tol": 1e-6, "max_iter": 50000,
           "data": {"name": "synthetic_regression", "id": "s", "n_samples": 400, "n_features": 5,
                    "noise": 0.1, "test_fraction": 0.2},
           "preprocess": [{"name": "none", "id": "none"}, {"name": "whiten", "id": "whiten", "lr": 1.0}]}
    t = studies.study_kappa_sweep(cfg)
    raw, white = t[t["preprocess"] == "none"], t[t["preprocess"] == "whiten"]
    assert raw["kappa"].to_numpy() == pytest.approx([10.0, 1000.0], rel=1e-6)
    assert (raw["status"] == "converged").all()
    ratio = raw["iterations"].iloc[1] / raw["iterations"].iloc[0]
    assert 30 < ratio < 300  # ~ linear in κ (100× κ)
    assert list(white["iterations"]) == [1, 1] and white["kappa"].max() < 1 + 1e-6
