"""The ``analytic`` stage (``python -m pipeline.analytic``): the lecture's claims 1–3 as files and
MLflow runs.

One small run (κ ∈ {1, 10, 100} on a 200 × 5 least-squares problem, the convexity models on 100
MNIST
images pooled to 7 × 7) into a tmp folder with a tmp SQLite MLflow store; every study's files are
read back as the report reads them and checked against the theory they illustrate. Bad values end
in one line, exit 2, and leave the earlier studies (files and MLflow runs) as they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support.compose import compose_app
from support.snapshots import error_lines, snapshot

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
KAPPAS = [1.0, 10.0, 100.0]
TOL = 1.0e-6
MNIST = "{name: mnist, id: mnist, n_train: 100, n_test: 10}"
BINARY = "{name: mnist_binary, id: mnist-3v8, classes: [3, 8], n_train: 100, n_test: 10}"
SMALL = [
    f"analytic.kappa_sweep.condition_numbers=[{','.join(map(str, KAPPAS))}]",
    "analytic.kappa_sweep.max_iter=4000",  # κ = 100 needs about 1000
    f"analytic.kappa_sweep.tol={TOL}",
    f"analytic.kappa_sweep.methods.condition_numbers=[{','.join(map(str, KAPPAS))}]",
    "analytic.kappa_sweep.data.n_samples=200",
    "analytic.kappa_sweep.data.n_features=5",
    "analytic.gd_paths.n_steps=30",
    "analytic.adam_scaling.checkpoints=[2,5]",
    "analytic.adam_scaling.problems=["
    "{name: quadratic, model: linear, l2: 0.0, data: {name: synthetic_regression, id: s,"
    " n_samples: 200, n_features: 5}},"
    f"{{name: mnist_softmax, model: softmax, l2: 1.0e-4, data: {MNIST}}}]",
    "analytic.convexity.models=["
    f"{{model: linear, pool: 4, data: {MNIST}}},"
    f"{{model: logistic, pool: 4, data: {BINARY}}},"
    f"{{model: softmax, pool: 4, data: {MNIST}}}]",
]
STUDIES = {
    "gd_paths": "claim1_gd_paths",
    "kappa_sweep": "claim2_kappa_sweep",
    "convexity": "claim3_convexity",
    "adam_scaling": "claim7_adam_scaling",
}
FILES = {"table.csv", "arrays.npz", "study.json"}
METHODS = ["gd", "heavy_ball", "nesterov", "lbfgs", "newton"]  # conf/analytic.yaml
# claim 2's further tables: one per method and the fitted slopes
KAPPA_TABLES = [*(f"iterations_{m}" for m in METHODS), "slopes"]


def _files(name: str) -> set[str]:
    """What a study's folder (and its MLflow run) holds."""
    extra = KAPPA_TABLES if name == "claim2_kappa_sweep" else []
    return FILES | {f"{t}.csv" for t in extra}


# dense ~785 × 785 factorizations (conftest)
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _paths(tmp: Path) -> list[str]:
    return [
        f"paths.analytic_dir={tmp / 'analytic'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        f"mlflow.artifact_root={tmp / 'mlartifacts'}",
    ]


def _mlflow_runs(tmp: Path) -> list[tuple[str, str, str]]:
    """(experiment name, run status, run id) of every run in the tmp store."""
    import sqlite3

    db = tmp / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        rows = con.execute("select e.name, r.status, r.run_uuid from runs r join experiments e "
                           "on e.experiment_id = r.experiment_id order by e.name").fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path
) -> tuple[Path, dict[str, Any], list[Path]]:
    """``run_analytic`` on the composed config (the CLI's config), MLflow into a tmp SQLite
    store."""
    import pipeline.analytic as analytic
    from pipeline.config.schemas import as_kwargs

    tmp = tmp_path_factory.mktemp("analytic")
    cfg = compose_app("analytic", [*SMALL, *_paths(tmp)])
    kw = as_kwargs(cfg)
    assert kw["mlflow"]["enabled"] is True and kw["analytic"]["studies"] == list(STUDIES)
    folders = analytic.run_analytic(kw)
    return tmp, kw, folders


def _study(tmp: Path, name: str) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
    from pipeline.store.studies import read_study

    folder = tmp / "analytic" / name
    assert {p.name for p in folder.iterdir()} == _files(name) | {"timing.json"}  # seconds: beside
    assert "seconds" not in (folder / "study.json").read_text(encoding="utf-8")
    assert "seconds" not in pd.read_csv(folder / "table.csv").columns
    meta, table, _ = read_study(folder)  # the seconds joined back
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: np.asarray(z[k]) for k in z.files}
    for key, arr in arrays.items():
        assert arr.dtype.kind in "fiub", (key, arr.dtype)  # plain numbers, no pickled objects
    assert set(meta) - {"tables"} == {"name", "title", "params", "metrics", "figures", "seconds"}
    assert {f"{t}.csv" for t in meta.get("tables", [])} == _files(name) - FILES
    assert meta["name"] == name and meta["seconds"] >= 0 and meta["figures"]
    assert all(isinstance(v, float) and not np.isnan(v) for v in meta["metrics"].values())
    return meta, table, arrays


def _numeric(table: pd.DataFrame, cols: list[str]) -> None:
    for c in cols:
        assert pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(
            table[c]
        ), (c, table[c].dtype)


def test_one_folder_per_study_with_its_params(run: tuple[Path, dict[str, Any], list[Path]]) -> None:
    tmp, kw, folders = run
    assert folders == [tmp / "analytic" / n for n in STUDIES.values()]
    # no temp folders left
    assert {p.name for p in (tmp / "analytic").iterdir()} == set(STUDIES.values())
    for key, name in STUDIES.items():
        meta, _, _ = _study(tmp, name)
        assert meta["params"] == {k: v for k, v in kw["analytic"][key].items() if k != "study"}


def test_claim1_predictions_follow_the_step_size_theory(
    run: tuple[Path, dict[str, Any], list[Path]],
) -> None:
    tmp, kw, _ = run
    meta, table, arrays = _study(tmp, "claim1_gd_paths")
    _numeric(table, ["L", "mu", "kappa", "lr", "lr_times_L", "max_abs_1_minus_lr_lambda", "steps",
                     "f_end_minus_f_star"])
    assert pd.api.types.is_integer_dtype(table["steps"])
    specs = kw["analytic"]["gd_paths"]["functions"]
    n_steps = kw["analytic"]["gd_paths"]["n_steps"]
    assert len(table) == sum(len(s["learning_rates"]) for s in specs)
    assert [f["key"] for f in meta["figures"]] == [s["name"] for s in specs]
    assert meta["metrics"]["disagreements"] == 0.0
    rows = iter(table.itertuples())
    n_div = n_conv = 0
    for spec, fig in zip(specs, meta["figures"], strict=True):
        a, b, c, key = spec["a"], spec["b"], spec["c"], spec["name"]
        L, mu = 2 * max(a, b), 2 * min(a, b)
        gx, gy, gf = arrays[f"{key}/x"], arrays[f"{key}/y"], arrays[f"{key}/f"]
        assert gx.shape == gy.shape == gf.shape and gx.ndim == 2
        np.testing.assert_allclose(gf, a * gx**2 + b * gy**2 + c, rtol=1e-12, atol=1e-12)
        assert len(fig["labels"]) == len(spec["learning_rates"])
        assert f"{key}/path{len(spec['learning_rates'])}" not in arrays
        for i, lr in enumerate(spec["learning_rates"]):
            r = next(rows)
            assert (r.lr, r.L, r.mu) == (lr, L, mu)
            assert r.lr_times_L == pytest.approx(lr * L)
            pts = arrays[f"{key}/path{i}"]
            assert pts.shape == (r.steps + 1, 2) and r.steps == n_steps
            np.testing.assert_array_equal(pts[0], spec["start"])
            np.testing.assert_allclose(pts[1], pts[0] * (1 - 2 * lr * np.array([a, b])), rtol=1e-14)
            f0 = a * pts[0, 0] ** 2 + b * pts[0, 1] ** 2
            f_end = a * pts[-1, 0] ** 2 + b * pts[-1, 1] ** 2
            assert r.f_end_minus_f_star == pytest.approx(f_end, rel=1e-9, abs=1e-12)
            if lr < 2 / L:  # 0 < ε < 2/L: every mode contracts, |1 − ελ| < 1
                n_conv += 1
                assert "converges" in r.predicted and "diverges" not in r.predicted, r
                assert r.max_abs_1_minus_lr_lambda < 1 and f_end < f0
                assert ("oscillates" in r.predicted) == (lr * L > 1)
            else:  # ε > 2/L: the steep mode grows like |1 − εL|^k
                n_div += 1
                assert r.predicted == "diverges" and r.max_abs_1_minus_lr_lambda > 1, r
                assert f_end > f0 * 100
            assert fig["labels"][i].endswith(r.predicted)
    assert n_conv >= 4 and n_div >= 2  # the default rates straddle 2/L on both functions


def test_claim2_whitening_takes_one_step_raw_iterations_grow_linearly(
        run: tuple[Path, dict[str, Any], list[Path]]) -> None:
    tmp, _, _ = run
    meta, table, arrays = _study(tmp, "claim2_kappa_sweep")
    _numeric(table, ["kappa_requested", "kappa_raw", "kappa", "lr", "iterations", "grad_norm_end",
                     "predicted_iterations"])
    assert pd.api.types.is_integer_dtype(table["iterations"])
    assert arrays == {}  # its figures are drawn from the tables
    assert [f["kind"] for f in meta["figures"]] == ["iterations_vs_kappa",
                                                    "iterations_vs_kappa_methods"]
    assert {"kappa_raw", "iterations", "preprocess"} <= set(table.columns)
    assert len(table) == 2 * len(KAPPAS) and (table["status"] == "converged").all()
    assert (table["grad_norm_end"] <= TOL).all()

    raw = table[table["preprocess"] == "none"].sort_values("kappa_requested")
    white = table[table["preprocess"] == "whiten"]
    assert list(raw["kappa_requested"]) == KAPPAS
    np.testing.assert_allclose(raw["kappa_raw"], KAPPAS, rtol=1e-6)  # the data have the κ asked for
    np.testing.assert_allclose(raw["kappa"], raw["kappa_raw"], rtol=0)
    # κ = 1 (it used to crash in scipy's subset eigensolver): ε = 1/L = 1/μ is exact, one step
    k1 = raw.iloc[0]
    assert k1["iterations"] == 1 and k1["lr"] == pytest.approx(1.0, rel=1e-9)
    it = raw["iterations"].to_numpy()
    assert np.all(np.diff(it) > 0)
    # κ·ln(‖∇f₀‖/tol) bounds GD at ε = 1/L
    assert np.all(it <= raw["predicted_iterations"].to_numpy())
    ratio = it[2] / it[1]  # κ × 10 ⇒ iterations × ≈ 10 (linear in κ, not in √κ or κ²)
    assert 5 < ratio < 20, it
    # whitened: κ = 1 whatever the raw κ, and ε = 1 lands on the minimum in one step
    assert len(white) == len(KAPPAS) and (white["iterations"] == 1).all()
    assert (white["kappa"] <= 1 + 1e-9).all() and (white["lr"] == 1.0).all()
    assert white["predicted_iterations"].isna().all()

    m = meta["metrics"]
    assert m["whitened_max_iterations"] == 1.0 and m["whitened_max_kappa"] == pytest.approx(
        1.0, abs=1e-9
    )
    big = raw[raw["kappa_raw"] > 1.5]  # κ = 1 is one step whatever the tolerance: not in the fit
    slope = np.polyfit(np.log(big["kappa_raw"]), np.log(big["iterations"]), 1)[0]
    assert m["loglog_slope_iterations_vs_kappa"] == pytest.approx(slope, rel=1e-12)
    assert 0.7 <= slope <= 1.3  # the report's "agrees with the linear-in-κ prediction"


def test_claim2_per_method_tables_and_slopes(run: tuple[Path, dict[str, Any], list[Path]]) -> None:
    """One table per method (iterations to ‖∇f‖ ≤ 1e-8 against κ) and the slopes table, as the
    report reads them; GD's slope ≈ 1, the accelerated ones ≈ ½, Newton 0."""
    from pipeline.store.studies import read_study_tables

    tmp, _, _ = run
    meta, _, _ = _study(tmp, "claim2_kappa_sweep")
    tables = read_study_tables(tmp / "analytic" / "claim2_kappa_sweep", meta["tables"])
    assert meta["figures"][-1]["kind"] == "iterations_vs_kappa_methods"
    for m in METHODS:
        t = tables[f"iterations_{m}"]
        assert list(t["kappa_requested"]) == KAPPAS and (t["method"] == m).all()
        assert (t["status"] == "converged").all() and (t["grad_norm_end"] <= 1e-8).all(), m
        _numeric(t, ["kappa", "L", "mu", "iterations", "rate_measured", "grad_norm_end"])
    slopes = tables["slopes"].set_index("method")
    assert list(slopes.columns) == ["slope", "expected", "points", "kappa_min", "kappa_max",
                                    "all_converged"]
    assert 0.8 <= slopes.loc["gd", "slope"] <= 1.1 and slopes.loc["newton", "slope"] == 0.0
    for m in ("heavy_ball", "nesterov"):
        assert 0.3 <= slopes.loc[m, "slope"] <= 0.7, (m, slopes.loc[m, "slope"])
    assert slopes.loc["lbfgs", "slope"] < 0.5
    for m in METHODS:
        assert meta["metrics"][f"loglog_slope.{m}"] == slopes.loc[m, "slope"]


def test_claim7_adam_step_against_the_inverse_hessian_diagonal(
        run: tuple[Path, dict[str, Any], list[Path]]) -> None:
    """One row per problem and checkpoint with the rank correlations, and the two vectors per row
    for a scatter plot (as many entries as coordinates compared)."""
    tmp, _, _ = run
    meta, table, arrays = _study(tmp, "claim7_adam_scaling")
    assert list(table.columns) == [
        "problem", "model", "n_params", "iteration", "loss", "grad_norm", "coordinates",
        "coordinates_left_out", "spearman_step_vs_inv_hess_diag",
        "spearman_step_vs_inv_abs_grad", "spearman_hess_diag_vs_abs_grad", "step_median",
        "inv_hess_diag_median"]
    assert list(zip(table["problem"], table["iteration"], strict=True)) == [
        ("quadratic", 2), ("quadratic", 5), ("mnist_softmax", 2), ("mnist_softmax", 5)]
    _numeric(table, ["loss", "grad_norm", "spearman_step_vs_inv_hess_diag", "step_median"])
    assert table["spearman_step_vs_inv_hess_diag"].between(-1, 1).all()
    assert (table["coordinates"] + table["coordinates_left_out"] == table["n_params"]).all()
    for rec in table.itertuples():
        step = arrays[f"{rec.problem}/it{rec.iteration}/adam_step"]
        inv_h = arrays[f"{rec.problem}/it{rec.iteration}/inv_hess_diag"]
        assert step.shape == inv_h.shape == (rec.coordinates,)
        assert (step > 0).all() and (inv_h > 0).all()
        assert meta["metrics"][f"spearman.{rec.problem}.it{rec.iteration}"] == pytest.approx(
            rec.spearman_step_vs_inv_hess_diag, rel=1e-12)
    assert meta["figures"][0]["keys"] == sorted({f"{p}/it{i}" for p, i in zip(
        table["problem"], table["iteration"], strict=True)})


def test_claim3_convex_models_and_a_nonconvex_exercise_function(
        run: tuple[Path, dict[str, Any], list[Path]]) -> None:
    tmp, kw, _ = run
    meta, table, arrays = _study(tmp, "claim3_convexity")
    _numeric(table, ["points_checked", "min_eig_min", "min_eig_max", "seconds"])
    assert pd.api.types.is_bool_dtype(table["convex"])
    assert len(table) == 2 + 3
    by = {
        p.split(" on ")[0] if " on " in p else p: r
        for p, r in zip(table["problem"], table.itertuples(), strict=True)
    }
    trough, quartic = by["f = x² + y + 5"], by["f = x⁴ + xy + x²"]
    # ∇²f = diag(2, 0)
    assert trough.convex and trough.min_eig_min == 0.0 and trough.min_eig_max == 0.0
    # ∇²f = [[12x² + 2, 1], [1, 0]]: det = −1 < 0 everywhere; λ_min is largest (1 − √2) at x = 0
    assert not quartic.convex and quartic.min_eig_min < 0 and quartic.min_eig_max < 0
    lam, gx = arrays["map1/lambda_min"], arrays["map1/x"]
    h = 12 * gx**2 + 2
    np.testing.assert_allclose(lam, 0.5 * h - np.sqrt(0.25 * h**2 + 1), rtol=1e-12, atol=1e-15)
    assert quartic.min_eig_min == pytest.approx(1 - np.sqrt(2), rel=1e-12) == lam.min()
    # at |x| = 2
    assert quartic.min_eig_max == pytest.approx(25 - np.sqrt(626), rel=1e-9) == lam.max()
    np.testing.assert_array_equal(arrays["map0/lambda_min"], 0.0)
    for model, d in (("linear", 49), ("logistic", 49), ("softmax", 49)):
        r = by[model]
        assert r.convex and r.min_eig_min >= -1e-9 and r.min_eig_max > 0, r
        assert (
            f"n=100, d={d}, λ=0" in r.problem
            and r.points_checked == kw["analytic"]["convexity"]["n_points"]
        )
    fig = meta["figures"][0]
    assert fig["kind"] == "min_eig_maps" and fig["labels"] == ["f = x² + y + 5", "f = x⁴ + xy + x²"]
    for i in range(len(fig["labels"])):
        assert (
            arrays[f"map{i}/x"].shape
            == arrays[f"map{i}/y"].shape
            == arrays[f"map{i}/lambda_min"].shape
        )
    assert f"map{len(fig['labels'])}/x" not in arrays
    assert meta["metrics"]["min_eig.f = x⁴ + xy + x²"] == quartic.min_eig_min


def test_one_mlflow_run_per_study_with_its_files(
    run: tuple[Path, dict[str, Any], list[Path]],
) -> None:
    from mlflow.tracking import MlflowClient

    tmp, _, _ = run
    runs = _mlflow_runs(tmp)
    assert sorted(e for e, _, _ in runs) == sorted(STUDIES.values())
    assert all(s == "FINISHED" for _, s, _ in runs)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    for exp, _, run_id in runs:
        r = client.get_run(run_id)
        assert r.data.tags["curvlab.kind"] == "analytic-study"
        assert {a.path for a in client.list_artifacts(run_id)} == _files(exp)
        got = Path(client.download_artifacts(run_id, "", str(tmp / "dl" / exp)))
        for f in _files(exp):
            assert (got / f).read_bytes() == (tmp / "analytic" / exp / f).read_bytes(), (exp, f)
        meta = json.loads((tmp / "analytic" / exp / "study.json").read_text(encoding="utf-8"))
        assert len(r.data.metrics) == len(meta["metrics"])
    claim1 = client.get_run(next(i for e, _, i in runs if e == "claim1_gd_paths"))
    assert claim1.data.metrics["disagreements"] == 0.0


@pytest.fixture
def cli(stage_cli: Any) -> Any:
    """``cli(*args) -> (exit status, stdout, stderr)``: ``python -m pipeline.analytic args``
    in-process."""
    return lambda *args: stage_cli("analytic", *args)


@pytest.mark.parametrize(
    "bad, words",
    [
        (["analytic.kappa_sweep.tol=0"], ["analytic.kappa_sweep.tol", "> 0"]),
        (["analytic.studies=[gd_paths,nope]"], ["analytic.studies", "nope", "kappa_sweep"]),
        (["analytic.gd_paths.n_steps=0"], ["analytic.gd_paths.n_steps"]),
        (["analytic.kappa_sweep.max_iter=0"], ["analytic.kappa_sweep.max_iter"]),
        (["analytic.kappa_sweep.methods.names=[gd,nope]"],
         ["analytic.kappa_sweep.methods.names", "nope", "lbfgs"]),
        (["analytic.kappa_sweep.methods.tol=0"], ["analytic.kappa_sweep.methods.tol", "> 0"]),
        (["analytic.adam_scaling.lr=0"], ["analytic.adam_scaling.lr", "> 0"]),
        (["analytic.adam_scaling.checkpoints=[0]"], ["analytic.adam_scaling", "checkpoints"]),
        (
            [
                "analytic.gd_paths.functions=[{name: saddle, a: 1.0, b: -1.0, start: [1, 1], "
                "learning_rates: [0.1]}]"
            ],
            ["saddle", "a, b > 0"],
        ),
        # values only the last study reads: refused before the first study is replaced
        (
            ["analytic.convexity.functions=[trough,nope]"],
            ["analytic.convexity.functions", "nope", "quartic"],
        ),
        (["analytic.convexity.models=[{model: nope, data: " + MNIST + "}]"], ["nope", "softmax"]),
    ],
)
def test_bad_value_is_one_line_exit_2_and_keeps_earlier_studies(
    run: tuple[Path, dict[str, Any], list[Path]], cli: Any, bad: list[str], words: list[str]
) -> None:
    tmp, _, _ = run
    before, runs_before = snapshot(tmp / "analytic"), _mlflow_runs(tmp)
    # other values for the studies before the bad one: a stage that wrote them first would change
    # files
    code, out, err = cli(*SMALL, *_paths(tmp), "analytic.gd_paths.n_steps=3",
                         "analytic.kappa_sweep.condition_numbers=[2.0]", *bad)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, (code, out, err)
    assert lines[0].startswith("analytic: error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert snapshot(tmp / "analytic") == before  # byte-identical, nothing added
    assert _mlflow_runs(tmp) == runs_before  # and no MLflow run for a failed command
