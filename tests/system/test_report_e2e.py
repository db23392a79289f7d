"""End to end: real tiny runs (prepare → train sweep → evaluate, the reference optimum, the analytic
studies) → report from run dirs and from MLflow → the page opened in headless Chromium without
console errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.browser import layout_problems, measure
from support.png import assert_png

from pipeline.store.rundir import read_run_record

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env(mnist_dir: Path, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CURVLAB_DATA_DIR=str(mnist_dir), CURVLAB_OFFLINE="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", PYTHONPATH=str(REPO))
    return env


def _run(args: list[str], env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert proc.returncode == 0, (
            f"{args[:2]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, dict[str, str]]:
    """prepare (3 vs 8, 300 images; none + whiten) → train -m {gd, newton} × {none, whiten} →
    evaluate,
    reference (one objective: solved on raw pixels, κ in both coordinates) and analytic (claim 1
    only)."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = _env(mnist_dir, tmp)
    data = ["data=mnist_binary", "data.id=t3v8", "data.n_train=300", "data.n_test=200"]
    paths = [f"paths.prepared_dir={tmp}/prepared", f"paths.experiments_dir={tmp}/experiments"]
    for pre in ("none", "whiten"):
        _run(
            ["pipeline.prepare", *data, f"preprocess={pre}", f"paths.prepared_dir={tmp}/prepared"],
            env,
        )
    common = [*data, *paths, "model=logistic", "study=tiny", "progress=false",
              f"mlflow.artifact_root={tmp}/mlartifacts"]
    _run(["pipeline.train", "-m", *common, "preprocess=none,whiten", "optimizer=gd,newton",
          "optimizer.max_iter=60", f"hydra.sweep.dir={tmp}/multirun"], env)
    run_dir = next((tmp / "experiments" / "tiny").glob("t3v8-none-logistic-newton*"))
    _run(
        [
            "pipeline.evaluate",
            *paths,
            f"run_dir='{run_dir}'",
            f"mlflow.artifact_root={tmp}/mlartifacts",
        ],
        env,
    )
    _run(
        [
            "pipeline.reference",
            *data,
            *paths,
            "model=logistic",
            "preprocess=none",
            "reference.kappa_in=[whiten]",
            f"paths.reference_dir={tmp}/experiments/reference",
        ],
        env,
    )
    _run(
        [
            "pipeline.analytic",
            "analytic.studies=[gd_paths]",
            f"paths.analytic_dir={tmp}/experiments/analytic",
            f"mlflow.artifact_root={tmp}/mlartifacts",
        ],
        env,
    )
    return tmp, env


def _report(
    tmp: Path, env: dict[str, str], out: str, *extra: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            "pipeline.report",
            f"paths.reports_dir={tmp}/{out}",
            f"paths.experiments_dir={tmp}/experiments",
            f"paths.prepared_dir={tmp}/prepared",
            f"paths.reference_dir={tmp}/experiments/reference",
            f"paths.analytic_dir={tmp}/experiments/analytic",
            f"mlflow.artifact_root={tmp}/mlartifacts",
            "report.sections=[claim1,trained]",
            "report.conditioning.data=t3v8",
            "report.headline_study=tiny",
            *extra,
        ],
        env,
        ok,
    )


def test_report_from_dirs_and_from_mlflow_agree(tiny: tuple[Path, dict[str, str]]) -> None:
    tmp, env = tiny
    proc = _report(tmp, env, "reports")
    assert "report: wrote" in proc.stdout
    rep = tmp / "reports"
    page = (rep / "index.html").read_text(encoding="utf-8")
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert_png(rep / src)
    speed = pd.read_csv(rep / "tables" / "speed.csv")
    assert len(speed) == 4 and set(speed["optimizer"]) == {"gd", "newton"}
    newton = speed[speed["optimizer"] == "newton"]
    assert (
        newton["reached_1e-08"].all()
        and (newton["iters_to_1e-08"] == newton["iters_to_1e-08"].round()).all()
    )
    # exact Newton is affine invariant: same steps raw / whitened
    assert newton["iters_to_1e-08"].nunique() == 1
    gd = speed[speed["optimizer"] == "gd"]
    assert (~gd["reached_1e-08"]).all() and np.isfinite(gd["projected_iters_to_1e-08"]).all()
    refs = pd.read_csv(rep / "tables" / "reference-optima.csv")
    assert list(refs["coordinates"]) == ["none", "whiten"] and (refs["status"] == "converged").all()
    assert refs["f_here"].to_numpy() == pytest.approx(refs["f_star"].to_numpy(), rel=1e-12)
    acc = pd.read_csv(rep / "tables" / "accuracy.csv")
    for rec in acc.itertuples():
        m = read_run_record(tmp / "experiments" / rec.run_id / "metrics.json")
        assert rec.test_accuracy == m["test_accuracy"] and rec.train_accuracy == m["train_accuracy"]

    _report(tmp, env, "reports_mlflow", "report.source=mlflow", "report.experiment=tiny")
    acc2 = pd.read_csv(tmp / "reports_mlflow" / "tables" / "accuracy.csv")
    assert sorted(acc2["run_id"]) == sorted(acc["run_id"])
    merged = acc.merge(acc2, on="run_id", suffixes=("", "_ml"))
    assert (merged["test_accuracy"] == merged["test_accuracy_ml"]).all()

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    found = mlflow.search_runs(experiment_names=["claim1_gd_paths"])
    # the analytic study is browsable in MLflow (logged by its stage, not the report)
    assert len(found) == 1
    arts = sorted(a.path for a in mlflow.MlflowClient().list_artifacts(found["run_id"].iloc[0]))
    assert arts == ["arrays.npz", "study.json", "table.csv"]


def test_user_errors_are_one_line_exit_2(tiny: tuple[Path, dict[str, str]]) -> None:
    tmp, env = tiny
    for extra, msg in ((["report.source=mlflow"], "needs report.experiment"),
                       (["report.source=mlflow", "report.experiment=nope"], "not found"),
                       (["report.tolerances=[2.0]"], "report.tolerances")):
        proc = _report(tmp, env, "reports_err", *extra, ok=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "INFO" not in ln]
        assert len(lines) == 1 and lines[0].startswith("report: "
                                                       "error:") and msg in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp / "reports_err" / "index.html").exists()


def test_page_renders_in_headless_chromium(
    tiny: tuple[Path, dict[str, str]], chromium: str
) -> None:
    tmp, env = tiny
    index = tmp / "reports" / "index.html"
    if not index.exists():
        _report(tmp, env, "reports")
    shot = tmp / "screenshot.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-3000:]
    assert_png(shot)
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln
               or "Failed to load" in ln or "ERR_FILE_NOT_FOUND" in ln]
    assert not console, console
    # fits a 1280-px window: tables scroll in their own box
    layout = measure(chromium, index, width=1280)
    assert not layout_problems(layout), "\n".join(layout_problems(layout))
