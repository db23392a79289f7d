"""The report stage: tables and figures from the files of the stages before it, in the documented
format.

The fixture runs the real stages' functions on a small MNIST subsample (prepare none + zscore with
the
penalty on the input-space weights — one objective —, train GD and Newton-CG, evaluate, the
reference
optimum, the analytic studies), so f*, the speed table and the projections are real.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support.compose import compose_app
from support.png import assert_png

from pipeline.core import studies as lecture
from pipeline.core.errors import ConfigError, DataError
from pipeline.data.datasets import load_dataset
from pipeline.reporting import analysis
from pipeline.reporting.gather import gather_dirs, load_confusion
from pipeline.store.references import Reference
from pipeline.store.rundir import read_run_record

REPO = Path(__file__).resolve().parents[2]
STUDY = "study_t"
RUN_OVERRIDES = [
    "data=mnist",
    "data.id=mnist-t",
    "data.n_train=400",
    "data.n_test=200",
    "model=softmax",
    "model.l2=1.0e-3",
    f"study={STUDY}",
    "mlflow.enabled=false",
    "progress=false",
]
OPTIMIZERS = {
    "gd": ["optimizer=gd", "optimizer.max_iter=40"],
    "newton_cg": [
        "optimizer=newton_cg",
        "optimizer.tol=1.0e-9",
        "optimizer.line_search=true",
        "optimizer.max_iter=30",
    ],
}


def compose_report_cfg(tmp: Path, *overrides: str) -> dict[str, Any]:
    """conf/report.yaml composed with Hydra (the real defaults), paths pointed into ``tmp``."""
    from pipeline.config.schemas import as_kwargs

    return as_kwargs(compose_app("report", [*_paths(tmp), "mlflow.enabled=false", *overrides]))


def _paths(tmp: Path) -> list[str]:
    return [
        f"paths.reports_dir={tmp / 'reports'}",
        f"paths.experiments_dir={tmp / 'experiments'}",
        f"paths.prepared_dir={tmp / 'prepared'}",
        f"paths.reference_dir={tmp / 'experiments' / 'reference'}",
        f"paths.analytic_dir={tmp / 'experiments' / 'analytic'}",
    ]


# ---------------------------------------------------------------------------- fixture project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Iterator[Path]:
    """prepared/ (MNIST 400 images, none + zscore), 4 trained and evaluated runs, their reference
    f*,
    and small analytic studies — every file made by the stage that makes it in `dvc repro`."""
    # for this module only: later tests keep the caller's data dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURVLAB_DATA_DIR", str(mnist_dir))
        yield _build_project(tmp_path_factory.mktemp("proj"))


def _build_project(tmp: Path) -> Path:
    from pipeline.analytic import run_analytic
    from pipeline.config.schemas import as_kwargs
    from pipeline.evaluate import evaluate
    from pipeline.prepare import prepare
    from pipeline.reference import reference
    from pipeline.train import train

    for pre in ("none", "zscore"):
        cfg = compose_app("train", [*RUN_OVERRIDES, *_paths(tmp), f"preprocess={pre}"])
        prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), 0, tmp / "prepared")
        for opt in OPTIMIZERS.values():
            over = [*RUN_OVERRIDES, *_paths(tmp), f"preprocess={pre}", *opt]
            train(compose_app("train", over))
            evaluate(compose_app("evaluate", [o for o in over if o != "progress=false"]))
    reference(compose_app("reference", [*RUN_OVERRIDES, *_paths(tmp), "preprocess=none"]))
    acfg = as_kwargs(compose_app("analytic", [*_paths(tmp), "mlflow.enabled=false",
                                           "analytic.kappa_sweep.condition_numbers=[1.0e1,1.0e2]",
                                           "analytic.convexity.n_points=2"]))
    run_analytic(acfg)
    return tmp


@pytest.fixture(scope="module")
def built(project: Path) -> tuple[Path, dict[str, Any]]:
    """The report built once from the fixture's files (every section)."""
    from pipeline.report import run_report

    cfg = compose_report_cfg(
        project,
        "report.conditioning.data=mnist-t",
        "report.conditioning.prepared=[none,zscore]",
        f"report.headline_study={STUDY}",
        f"report.trained_studies.newton_vs_gd=[{STUDY}]",
    )
    summary = run_report(cfg)
    return project / "reports", summary


# ---------------------------------------------------------------------------- the built report


@pytest.mark.slow  # the module's fixture trains 4 MNIST runs (~15 s)
def test_every_figure_in_index_exists_and_is_a_png(built: tuple[Path, dict[str, Any]]) -> None:
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', page)
    names = " ".join(srcs)
    for must in (
        "claim1-lecture_bowl",
        "claim2-iterations-vs-kappa",
        "claim3-exercise-functions",
        f"convergence-{STUDY}-mnist-t-softmax",
        "conditioning-mnist-t",
        "confusion-",
        "weights-",
    ):
        assert must in names, must
    for src in srcs:
        assert_png(rep / src)
    for href in re.findall(r'<a href="(tables/[^"]+)"', page):
        assert (rep / href).is_file(), href
    md = (rep / "report.md").read_text(encoding="utf-8")
    assert all(src in md for src in srcs)  # the markdown shows the same figures
    assert not list(rep.parent.glob(".reports*")), "staging folder left behind"
    assert "Generated 20" not in page  # no clock in the output


@pytest.mark.slow
def test_the_headline_comes_first_and_answers_per_problem(
    built: tuple[Path, dict[str, Any]],
) -> None:
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    sections = re.findall(r'<section id="([^"]+)"', page)
    # the answer on the first screen
    assert sections[:3] == ["abstract", "headline", "overview"]
    assert page.index('id="headline"') < page.index("<table") and page.index("<table") < 6000
    head = pd.read_csv(rep / "tables" / "headline.csv")
    assert sorted(zip(head["optimizer"], head["preprocess"], strict=True)) == [
        ("gd", "none"), ("gd", "zscore"), ("newton_cg", "none"), ("newton_cg", "zscore")]
    for col in ("iters_to_1e-04", "passes_to_1e-04", "seconds_to_1e-04", "iters_to_1e-08",
                "passes_to_1e-08", "seconds_to_1e-08", "test_accuracy"):
        assert pd.api.types.is_float_dtype(head[col]), col  # typed: numbers stay numbers
    nt = head[head["optimizer"] == "newton_cg"]
    assert (nt["basis_1e-08"] == "measured").all()
    gd = head[head["optimizer"] == "gd"]
    assert (gd["basis_1e-08"] == "projected").all() and (gd["iters_to_1e-08"] > 40).all()
    assert "≈" in page  # projections are marked on the page
    fac = pd.read_csv(rep / "tables" / "whitening-factors.csv")
    raw = fac[fac["preprocess"] == "none"]
    assert (raw["iterations_vs_raw"] == 1.0).all() and set(fac["preprocess"]) == {"none", "zscore"}


@pytest.mark.slow
def test_speed_table_is_typed_and_has_one_row_per_certified_run(built: tuple[Path, dict[str, Any]],
                                                                project: Path) -> None:
    rep, _ = built
    speed = pd.read_csv(rep / "tables" / "speed.csv")
    runs = sorted(p.parent.name for p in (project / "experiments" / STUDY).glob("*/metrics.json"))
    assert sorted(speed["run_id"].str.split("/").str[1]) == runs
    # penalty on the input weights: none and zscore share f*
    assert speed["objective"].nunique() == 1
    for col in (
        "iters_to_1e-04",
        "seconds_to_1e-08",
        "projected_iters_to_1e-08",
        "rate_measured",
        "f_star",
    ):
        assert pd.api.types.is_float_dtype(speed[col]), col
    assert speed["reached_1e-08"].dtype == bool
    nt = speed[speed["optimizer"] == "newton_cg"]
    assert nt["reached_1e-08"].all() and (nt["iters_to_1e-08"] <= nt["iterations"]).all()
    gd = speed[speed["optimizer"] == "gd"]
    assert not gd["reached_1e-08"].any() and gd["iters_to_1e-08"].isna().all()  # 40 GD steps do not
    assert (
        np.isfinite(gd["projected_iters_to_1e-08"]).all()
        and (gd["projected_iters_to_1e-08"] > 40).all()
    )
    assert (gd["rate_measured"] < 1).all() and (gd["rate_measured"] > 0).all()


@pytest.mark.slow
def test_reference_optimum_matches_an_independent_solver(
    built: tuple[Path, dict[str, Any]], project: Path
) -> None:
    """f* from the reference stage equals scipy's L-BFGS on the same (raw-pixel) objective."""
    from scipy.optimize import minimize as sp_minimize

    from pipeline.core.objectives import make_objective
    from pipeline.store.prepared import load_prepared

    rep, _ = built
    refs = pd.read_csv(rep / "tables" / "reference-optima.csv")
    assert (
        list(refs["status"]) == ["converged"]
        and refs["objective"].iloc[0] == "mnist-t-softmax-l2=0.001"
    )
    ds, _, _ = load_prepared(project / "prepared" / "mnist-t-none.npz")
    obj = make_objective(
        "softmax",
        ds.X_train,
        ds.y_train,
        l2=1e-3,
        fit_intercept=True,
        n_classes=10,
        dtype="float64",
    )
    res = sp_minimize(obj.value_grad, np.zeros(obj.n_params), jac=True, method="L-BFGS-B",
                      options={"maxiter": 3000, "gtol": 1e-8, "ftol": 1e-15})
    f_star = float(refs["f_star"].iloc[0])
    assert f_star <= res.fun + 1e-9
    assert f_star == pytest.approx(res.fun, rel=1e-7)


@pytest.mark.slow
def test_accuracy_table_equals_metrics_json(
    built: tuple[Path, dict[str, Any]], project: Path
) -> None:
    rep, _ = built
    acc = pd.read_csv(rep / "tables" / "accuracy.csv")
    metrics = {f"{STUDY}/{p.parent.name}": read_run_record(p)  # the run's record, joined
               for p in (project / "experiments").glob(f"{STUDY}/*/metrics.json")}
    assert sorted(acc["run_id"]) == sorted(metrics)
    for rec in acc.itertuples():
        m = metrics[rec.run_id]
        assert rec.train_accuracy == m["train_accuracy"] and rec.test_accuracy == m["test_accuracy"]
        assert rec.test_loss == m["test_loss"] and rec.model == "softmax"
    page = (rep / "index.html").read_text(encoding="utf-8")
    best = max(metrics.values(), key=lambda m: m["test_accuracy"])
    assert f"{100 * best['test_accuracy']:.2f} %" in page


@pytest.mark.slow
def test_the_report_solves_nothing_and_renders_what_the_files_say(
    built: tuple[Path, dict[str, Any]],
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every optimizer call made to fail, a second build gives the same tables: the report only
    reads."""
    import shutil

    import pipeline.core.solvers
    from pipeline.report import run_report

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("the report stage must not minimize anything")

    monkeypatch.setattr(pipeline.core.solvers, "minimize", refuse)
    shutil.copytree(project / "experiments", tmp_path / "experiments")
    cfg = compose_report_cfg(
        tmp_path, "report.conditioning.data=mnist-t", f"report.headline_study={STUDY}"
    )
    cfg["paths"]["prepared_dir"] = str(project / "prepared")
    run_report(cfg)
    for name in ("speed.csv", "headline.csv", "reference-optima.csv", "claim2-kappa-sweep.csv"):
        a = pd.read_csv(built[0] / "tables" / name).drop(columns=["seconds"], errors="ignore")
        b = pd.read_csv(tmp_path / "reports" / "tables" / name).drop(
            columns=["seconds"], errors="ignore"
        )
        pd.testing.assert_frame_equal(a, b)
    (tmp_path / "experiments" / "reference" / "mnist-t-softmax-l2=0.001.json").unlink()
    run_report(cfg)  # no reference file: the runs are listed, not timed against a guess
    page = (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
    assert (
        "no reference optimum" in page
        and not (tmp_path / "reports" / "tables" / "speed.csv").exists()
    )


@pytest.mark.slow
def test_a_damaged_run_is_skipped_with_a_warning_and_listed(
    built: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from pipeline.report import run_report

    shutil.copytree(project / "experiments", tmp_path / "experiments")
    shutil.copytree(project / "reports", tmp_path / "reports")
    runs = sorted((tmp_path / "experiments" / STUDY).iterdir())
    bad = runs[0] / "metrics.json"
    bad.write_text("{not json")
    cfg = compose_report_cfg(tmp_path, "report.sections=[trained]")
    cfg["paths"]["prepared_dir"] = str(project / "prepared")
    summary = run_report(cfg)
    assert summary["runs"] == len(runs) - 1  # the others are rendered
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning: skipped run" in ln]
    assert (
        len(warnings) == 1 and str(bad) in warnings[0] and "not a valid UTF-8 JSON" in warnings[0]
    )
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "Skipped 1 damaged run" in page and runs[0].name in page
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".reports")) == []


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment."""
    import html as html_mod

    text = html_mod.unescape(re.sub(r"<[^>]+>", "", fragment))
    return re.sub(r"[ \t\r\n]+", " ", text).strip()  # narrow no-break spaces kept


def _sections(page: str) -> dict[str, str]:
    """Section id → its HTML."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.S))


@pytest.mark.slow
def test_every_number_of_the_abstract_is_a_table_cell(built: tuple[Path, dict[str, Any]]) -> None:
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    abstract = re.search(r'<p class="abstract">(.*?)</p>', page, flags=re.S)
    assert abstract is not None
    text = _text(re.sub(r"<code>.*?</code>", "", abstract.group(1)))  # names, not numbers
    text = re.sub(r"\b1e-\d+\b", "", text)  # the tolerances (column headers)
    numbers = re.findall(r"≈ \d[\d\u202f]*(?:\.\d+)?|\d[\d\u202f]*(?:\.\d+)?(?: ?%)?", text)
    cells = {_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", page, flags=re.S)}
    assert len(numbers) >= 6, text  # iterations, passes, seconds, ratios, accuracy
    for num in numbers:
        assert num in cells or any(c.endswith(num) for c in cells), (num, text)
    head = pd.read_csv(rep / "tables" / "headline.csv")
    measured = head[head["basis_1e-08"] == "measured"]
    best = measured.sort_values("seconds_to_1e-08").iloc[0]  # the fastest in seconds
    assert f"{best['optimizer']} on {best['preprocess']} inputs" in text
    assert f"{int(best['iters_to_1e-08'])} iterations" in text


@pytest.mark.slow
def test_every_claim_ends_with_a_verdict_and_no_figure_appears_twice(
    built: tuple[Path, dict[str, Any]],
) -> None:
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    secs = _sections(page)
    claims = [k for k in secs if k.startswith("claim")]
    assert {"claim1", "claim2", "claim3", "claim5", "claim6"} <= set(claims)
    for key in claims:
        verdicts = re.findall(r'<p class="verdict"><b>Verdict:</b> (.*?)</p>', secs[key], re.S)
        assert len(verdicts) == 1, key
        assert re.match(r"(agrees|partly|DISAGREES|not decided)", verdicts[0]), verdicts[0]
        assert re.search(r"\d", verdicts[0]), verdicts[0]  # the number that decides it
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(set(srcs)), sorted(s for s in srcs if srcs.count(s) > 1)
    assert all(re.search(r"<(table|figure|p)\b", body) for body in secs.values())  # none empty


@pytest.mark.slow
def test_no_alarm_about_the_budget_the_study_chose(built: tuple[Path, dict[str, Any]]) -> None:
    """GD runs stop at their max_iter budget: no warning and no DISAGREES sentence names them."""
    rep, _ = built
    page = (rep / "index.html").read_text(encoding="utf-8")
    speed = pd.read_csv(rep / "tables" / "speed.csv")
    capped = speed[speed["status"] == "max_iter"]
    assert len(capped) == 2  # the fixture's budget-capped GD runs
    alarms = [_text(p) for p in re.findall(r'<p class="warn">(.*?)</p>', page, re.S)]
    alarms += [sent for sent in re.split(r"(?<=[.;])\s", _text(page)) if "DISAGREE" in sent]
    for rid, pre in zip(capped["run_id"], capped["preprocess"], strict=True):
        label = f"mnist-t · {pre} · gd"
        assert not [a for a in alarms if label in a or rid in a], alarms
    assert "budget" in _text(_sections(page)["claim6"])  # stated as the budget


@pytest.mark.slow
def test_convergence_plot_files_are_long_format_subopt(
    built: tuple[Path, dict[str, Any]], project: Path
) -> None:
    rep, _ = built
    plot = pd.read_csv(rep / "plots" / f"convergence-{STUDY}-mnist-t-softmax.csv")
    assert list(plot.columns) == ["run", "optimizer", "preprocess", "iteration", "passes",
                                  "subopt", "rel_subopt"]
    assert (plot["subopt"] > 0).all() and set(plot["optimizer"]) == {"gd", "newton_cg"}
    ref = json.loads((project / "experiments" / "reference" / "mnist-t-softmax-l2=0.001.json")
                     .read_text())
    f_star = ref["f_star"]
    hist = pd.read_csv(project / "experiments" / STUDY / "mnist-t-none-softmax-gd" / "history.csv")
    gd = plot[plot["run"] == "mnist-t · none · gd"]
    want = hist["loss"] - f_star
    assert gd["subopt"].to_numpy() == pytest.approx(want[want > 0].to_numpy(), rel=1e-12)
    assert gd["rel_subopt"].to_numpy() == pytest.approx(gd["subopt"].to_numpy() / abs(f_star))


@pytest.mark.slow
def test_scratch_and_stale_sweep_runs_are_left_out(project: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.reporting.gather import gather_dirs

    src = sorted((project / "experiments" / STUDY).glob("*/metrics.json"))[0].parent
    for study in ("kept", "scratch"):
        shutil.copytree(src, tmp_path / study / src.name)
    for trial in ("old-trial,optimizer.lr=0.5", "new-trial,optimizer.lr=1.0e-1"):
        shutil.copytree(src, tmp_path / "tuned" / trial)
        m = json.loads((tmp_path / "tuned" / trial / "metrics.json").read_text())
        (tmp_path / "tuned" / trial / "metrics.json").write_text(
            json.dumps({**m, "val_accuracy": 0.9}))
    (tmp_path / "tuned" / "trials.csv").write_text(
        "job,optimizer.lr,val_accuracy\n0,1.0e-1,0.9\n")
    runs = gather_dirs(tmp_path, None, exclude=("scratch",))
    assert list(runs.runs.index) == [f"kept/{src.name}", "tuned/new-trial,optimizer.lr=1.0e-1"]
    assert runs.stale == ["tuned/old-trial,optimizer.lr=0.5"]
    assert list(gather_dirs(tmp_path, ["scratch"]).runs.index) == [f"scratch/{src.name}"]


def test_the_speed_table_shows_an_extra_column_when_the_data_has_it() -> None:
    from pipeline.reporting.context import Context
    from pipeline.reporting.sections import speed

    ctx = Context(Path("."), {"report": {"tolerances": [1.0e-4]}, "paths": {}})
    assert "rate_theory" not in speed.columns(ctx, {"run_id"})
    assert speed.columns(ctx, {"run_id", "rate_theory"})["rate_theory"]


@pytest.mark.slow
def test_evaluate_writes_the_weights_on_the_raw_inputs(project: Path) -> None:
    """input_weights.npz: W_x = Aᵀ W and b_x = cᵀ W + b (z-scoring: A = diag(scale))."""
    from pipeline.store.prepared import load_transform_arrays
    from pipeline.store.rundir import load_input_weights, load_weight_arrays

    run = project / "experiments" / STUDY / "mnist-t-zscore-softmax-gd"
    got = load_input_weights(run)
    w = load_weight_arrays(run / "weights.npz")
    tr = load_transform_arrays(project / "prepared" / "mnist-t-zscore.npz")
    assert got is not None and got["coef"].shape == w["coef"].shape
    assert got["coef"] == pytest.approx(tr["scale"][:, None] * w["coef"], rel=1e-12)
    assert got["intercept"] == pytest.approx(tr["offset"] @ w["coef"] + w["intercept"], rel=1e-12)


def test_the_report_imports_nothing_from_the_core() -> None:
    """reporting/ reads files through the store; the numerics (and their errors) stay below."""
    import ast

    found = []
    for path in sorted((REPO / "pipeline" / "reporting").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.startswith("pipeline.core")]
    assert not found, found


def test_the_page_order_is_one_list_of_section_modules() -> None:
    from pipeline.reporting.sections import ORDER

    keys = [m.KEY for m in ORDER]
    assert keys[:3] == ["abstract", "headline", "overview"] and len(keys) == len(set(keys))
    assert all(callable(m.section) and hasattr(m, "NEEDS") for m in ORDER)


# ---------------------------------------------------------------------------- units


def test_first_reach_and_measured_rate_on_a_geometric_sequence() -> None:
    k = np.arange(60, dtype=np.float64)
    f_star = 0.5
    hist = pd.DataFrame({"iteration": k, "time_s": k * 0.1, "loss": f_star + 2.0 * 0.8**k,
                         "grad_norm": 0.8**k})
    sub = analysis.suboptimality(hist, f_star)
    got = analysis.reach(sub, f_star, 1e-4)
    expect = int(np.ceil(np.log(1e-4 * 0.5 / 2.0) / np.log(0.8)))  # 2·0.8^k ≤ 1e-4·|f*|
    assert (
        got.basis == "measured"
        and got.iterations == expect
        and got.seconds == pytest.approx(expect * 0.1)
    )
    assert analysis.reach(sub, f_star, 1e-30).basis != "measured"  # not reached in the history
    assert analysis.measured_rate(sub, f_star) == pytest.approx(0.8, rel=1e-6)


def _one_run(hist: pd.DataFrame, **extra: Any) -> Any:
    from pipeline.reporting.gather import RunSet

    row = {
        "run_id": "s/r",
        "study": "s",
        "data": "d",
        "preprocess": "none",
        "model": "logistic",
        "optimizer": "gd",
        "objective": "d-logistic-l2=0",
        "l2": 0.0,
        "lr": 0.1,
        "status": "max_iter",
        "iterations": int(hist["iteration"].iloc[-1]),
        "train_time_s": 1.0,
        **extra,
    }
    return RunSet(pd.DataFrame([row]).set_index("run_id", drop=False), {"s/r": hist}, {"s/r": {}})


def test_speed_table_flags_a_rate_slower_than_theory() -> None:
    """A GD run contracting at 0.99 while 1 − εμ = 0.9 is reported as a disagreement."""
    k = np.arange(50, dtype=np.float64)
    hist = pd.DataFrame({"iteration": k, "time_s": k, "loss": 1.0 + 0.99**k, "grad_norm": 0.99**k,
                         "passes": k + 1.0})
    ref = Reference(objective="d-logistic-l2=0", f_star=1.0, status="converged", source="newton",
                    coordinates={"none": {"mu": 1.0, "L_local": 2.0, "kappa": 2.0}})
    row = analysis.speed_table(_one_run(hist), {"d-logistic-l2=0": ref}).iloc[0]
    assert row["rate_predicted"] == pytest.approx(0.9)
    assert row["rate_measured"] == pytest.approx(0.99, rel=1e-6)
    assert row["rate_check"].startswith("DISAGREES")
    assert row["kappa"] == 2.0  # κ of ∇²f(w*) in the run's own coordinates


def test_projection_of_a_linear_rate_is_exact_on_a_geometric_sequence() -> None:
    """f − f* = 2·0.7ᵏ for k ≤ 40 (1.5 s and 2 passes per iteration): 1e-8 is projected at the exact
    k."""
    k = np.arange(41, dtype=np.float64)
    f_star = 0.5
    hist = pd.DataFrame({"iteration": k, "time_s": 1.5 * k, "loss": f_star + 2.0 * 0.7**k,
                         "grad_norm": 0.7**k, "passes": 1.0 + 2.0 * k})
    ref = Reference(objective="d-logistic-l2=0", f_star=f_star, status="converged", source="newton")
    row = analysis.speed_table(_one_run(hist), {"d-logistic-l2=0": ref}, (1.0e-4, 1.0e-8)).iloc[0]
    k_exact = np.log(1.0e-8 * f_star / 2.0) / np.log(0.7)  # 2·0.7ᵏ = 1e-8·|f*|: k ≈ 55 > 40
    assert (
        not row["reached_1e-08"]
        and np.isnan(row["iters_to_1e-08"])
        and row["basis_1e-08"] == "projected"
    )
    assert row["projected_iters_to_1e-08"] == pytest.approx(k_exact, rel=1e-6)
    assert row["projected_seconds_to_1e-08"] == pytest.approx(1.5 * k_exact, rel=1e-6)
    assert row["projected_passes_to_1e-08"] == pytest.approx(1.0 + 2.0 * k_exact, rel=1e-6)
    # reached: measured, not projected
    first = int(np.ceil(np.log(1.0e-4 * f_star / 2.0) / np.log(0.7)))
    assert (
        row["reached_1e-04"] and row["iters_to_1e-04"] == first == row["projected_iters_to_1e-04"]
    )
    assert row["passes_to_1e-04"] == 1.0 + 2.0 * first and row["basis_1e-04"] == "measured"
    flat = hist.assign(loss=f_star + 1.0 + 0.0 * k)  # a stalled run never gets there: inf, 'never'
    row = analysis.speed_table(_one_run(flat), {"d-logistic-l2=0": ref}).iloc[0]
    assert row["basis_1e-08"] == "never" and np.isinf(row["projected_iters_to_1e-08"])


def test_runs_without_a_converged_reference_are_left_out_with_a_note() -> None:
    k = np.arange(10, dtype=np.float64)
    hist = pd.DataFrame(
        {"iteration": k, "time_s": k, "loss": 1.0 + 0.5**k, "grad_norm": 0.5**k, "passes": k}
    )
    runs = _one_run(hist)
    refs, notes = analysis.match_references(runs, {})
    assert not refs["d-logistic-l2=0"].certified and "no reference optimum" in notes[0]
    assert analysis.speed_table(runs, refs).empty
    bad = Reference(objective="d-logistic-l2=0", f_star=1.0, status="max_iter", source="newton_cg")
    refs, notes = analysis.match_references(runs, {"d-logistic-l2=0": bad})
    assert "not converged" in notes[0] and analysis.speed_table(runs, refs).empty
    low = Reference(objective="d-logistic-l2=0", f_star=1.5, status="converged", source="newton")
    refs, notes = analysis.match_references(runs, {"d-logistic-l2=0": low})  # a run got below f*
    assert refs["d-logistic-l2=0"].f_star == pytest.approx(1.0 + 0.5**9) and "DISAGREES" in notes[0]


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
    cfg = {
        "n_steps": 60,
        "functions": [
            {
                "name": "bowl",
                "a": 3.0,
                "b": 2.0,
                "c": -2.0,
                "start": [1.0, 1.0],
                "learning_rates": [0.1, 0.3, 0.34],
            }
        ],
    }
    figs, table = lecture.study_gd_paths(cfg)
    assert list(table["predicted"]) == ["converges", "oscillates, converges", "diverges"]
    assert table["f_end_minus_f_star"].iloc[0] < 1e-8 and table["f_end_minus_f_star"].iloc[1] < 1e-4
    assert table["f_end_minus_f_star"].iloc[2] > 1e2
    pts = figs[0]["paths"][1][1]  # ε = 0.3: x flips sign every step (1 − εL = −0.8)
    assert np.all(np.sign(pts[1:12, 0]) == -np.sign(pts[:11, 0]))


def test_exercise_functions_convexity() -> None:
    maps, table = lecture.study_convexity_functions(
        {"functions": ["trough", "quartic"], "extent": 2.0}
    )
    assert list(table["convex"]) == [True, False]
    lam = maps[1][3]  # λ_min of [[12x² + 2, 1], [1, 0]] at x = 0 is 1 − √2
    assert lam.max() < 0 and lam.min() == pytest.approx(1 - math.sqrt(2), abs=1e-3)
    with pytest.raises(ConfigError, match="unknown"):
        lecture.study_convexity_functions({"functions": ["nope"]})


def test_kappa_sweep_whitening_takes_one_step() -> None:
    cfg = {
        "condition_numbers": [1.0e1, 1.0e3],
        "tol": 1e-6,
        "max_iter": 50000,
        "data": {
            "name": "synthetic_regression",
            "id": "s",
            "n_samples": 400,
            "n_features": 5,
            "noise": 0.1,
            "test_fraction": 0.2,
        },
        "preprocess": [
            {"name": "none", "id": "none"},
            {"name": "whiten", "id": "whiten", "lr": 1.0},
        ],
    }
    t = lecture.study_kappa_sweep(cfg, load_dataset)
    raw, white = t[t["preprocess"] == "none"], t[t["preprocess"] == "whiten"]
    assert raw["kappa"].to_numpy() == pytest.approx([10.0, 1000.0], rel=1e-6)
    assert (raw["status"] == "converged").all()
    ratio = raw["iterations"].iloc[1] / raw["iterations"].iloc[0]
    assert 30 < ratio < 300  # ~ linear in κ (100× κ)
    assert list(white["iterations"]) == [1, 1] and white["kappa"].max() < 1 + 1e-6
