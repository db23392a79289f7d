"""The report's method comparisons: the predicted linear rate beside the measured one in the
speed table, claim 2's per-method panel (iterations against κ, fitted slopes) and claim 7
("Newton inspired Adam") — each from small synthetic files in the format the stages write."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.context import Context, build_context
from pipeline.reporting.gather import RunSet
from pipeline.reporting.render import to_html
from pipeline.reporting.sections import ORDER, claim2, claim7, speed
from pipeline.store.references import load_references
from pipeline.store.studies import write_study

OBJ = "synth-linear-l2=0"
RATES = {"rate_gd": 0.99, "rate_gd_lr_auto": 0.9975, "rate_heavy_ball": None,
         "rate_nesterov": 0.9}  # heavy ball: unknown in this file


def _reference(folder: Path) -> Path:
    """A reference file as the reference stage writes it (μ, L and the predicted rates)."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"objective": OBJ, "f_star": 1.0, "status": "converged", "method": "newton",
           "grad_norm": 1e-12, "coordinates": {"none": {"mu": 0.01, "L_local": 1.0, "kappa": 100.0,
                                                        "L_bound": 4.0, **RATES}}}
    (folder / f"{OBJ}.json").write_text(json.dumps(rec), encoding="utf-8")
    return folder


def _runs(study: str, optimizers: dict[str, dict[str, Any]], rate: float = 0.95) -> RunSet:
    """One run per optimizer on the same objective, f − f* = 0.5·rateᵏ."""
    k = np.arange(60, dtype=np.float64)
    rows, hists, cfgs = [], {}, {}
    for name, opt in optimizers.items():
        rid = f"{study}/synth-none-linear-{name}"
        rows.append({"run_id": rid, "study": study, "data": "synth", "preprocess": "none",
                     "model": "linear", "optimizer": name, "objective": OBJ, "l2": 0.0,
                     "lr": 0.25, "status": "max_iter", "iterations": 59, "train_time_s": 1.0})
        hists[rid] = pd.DataFrame({"iteration": k, "time_s": k, "passes": k + 1.0,
                                   "loss": 1.0 + 0.5 * rate**k, "grad_norm": rate**k})
        cfgs[rid] = {"optimizer": {"name": name, **opt}}
    return RunSet(pd.DataFrame(rows).set_index("run_id", drop=False), hists, cfgs)


def _cfg(tmp: Path, **rep: Any) -> dict[str, Any]:
    return {"report": {"tolerances": [1.0e-4, 1.0e-8], "analytic": {},
                       "trained_studies": {"newton_vs_gd": [], "adam": []}, **rep},
            "paths": {"analytic_dir": str(tmp / "analytic"),
                      "reference_dir": str(tmp / "reference")}}


# ---------------------------------------------------------------------------- speed table


def test_the_predicted_rate_is_the_reference_files_value(tmp_path: Path) -> None:
    refs, _ = load_references(_reference(tmp_path / "reference"))
    # config.yaml lists every option: Nesterov's (unused) momentum is the schema's 0.0
    runs = _runs("s", {"gd": {"lr": "auto"}, "heavy_ball": {"lr": "auto", "momentum": "auto"},
                       "nesterov": {"lr": "auto", "momentum": 0.0}, "newton": {"lr": 1.0}})
    sp = analysis.speed_table(runs, refs).set_index("optimizer")
    coords = json.loads((tmp_path / "reference" / f"{OBJ}.json").read_text())["coordinates"]
    assert sp.loc["gd", "rate_theory"] == coords["none"]["rate_gd_lr_auto"]  # lr=auto: L_bound
    assert sp.loc["nesterov", "rate_theory"] == coords["none"]["rate_nesterov"]
    assert np.isnan(sp.loc["heavy_ball", "rate_theory"]) and np.isnan(sp.loc["newton",
                                                                             "rate_theory"])
    ctx = Context(tmp_path, _cfg(tmp_path), runs, speed=sp.reset_index())
    cells = dict(zip(sp.index, speed.theory_cells(ctx, sp.reset_index()), strict=True))
    assert cells["gd"].text == "0.9975" and cells["nesterov"].text == "0.9"
    assert cells["heavy_ball"].text == "—" and cells["newton"].text == "n/a"  # unknown / none
    # ε = 1/L_local exactly: 1 − 1/κ; any other ε: no prediction from the file
    runs = _runs("s", {"gd": {"lr": 1.0}})
    assert analysis.speed_table(runs, refs)["rate_theory"].iloc[0] == coords["none"]["rate_gd"]
    runs = _runs("s", {"gd": {"lr": 0.3}, "heavy_ball": {"lr": "auto", "momentum": 0.5},
                       "nesterov": {"lr": 0.1}})  # hand-set parameters: not the file's rate
    assert analysis.speed_table(runs, refs)["rate_theory"].isna().all()


def test_the_speed_section_shows_the_predicted_rate_column(tmp_path: Path) -> None:
    _reference(tmp_path / "reference")
    runs = _runs("s", {"gd": {"lr": "auto"}, "heavy_ball": {"lr": "auto"}})
    ctx = build_context(tmp_path / "out", _cfg(tmp_path), runs)
    (s,) = speed.section(ctx)
    (tab,) = [b for b in s.blocks if b.kind == "table"]
    assert tab.columns["rate_theory"].startswith("rate predicted")
    shown = {str(c) for c in tab.table["rate_theory"]}
    assert shown == {"0.9975", "—"}
    csv = pd.read_csv(tmp_path / "out" / tab.path)
    assert csv["rate_theory"].iloc[0] == RATES["rate_gd_lr_auto"]


def test_minibatch_adam_and_adagrad_are_stochastic_like_sgd(tmp_path: Path) -> None:
    refs, _ = load_references(_reference(tmp_path / "reference"))
    runs = _runs("s", {"sgd": {"batch_size": 10}, "adam": {"batch_size": 10},
                       "adagrad": {"batch_size": 10}, "adam_full": {"batch_size": None}},
                 rate=0.999)
    runs.configs["s/synth-none-linear-adam_full"]["optimizer"]["name"] = "adam"
    sp = analysis.speed_table(runs, refs).set_index("optimizer")
    assert list(sp["basis_1e-08"]) == ["stochastic"] * 3 + ["projected"]


# ---------------------------------------------------------------------------- claim 2


def _claim2_study(root: Path, slopes: dict[str, float]) -> pd.DataFrame:
    """claim2_kappa_sweep as the analytic stage writes it: the GD table, one iterations table per
    method and slopes.csv."""
    kappas = [1.0, 10.0, 100.0, 1000.0]
    table = pd.DataFrame({"kappa_requested": kappas, "kappa_raw": kappas, "kappa": kappas,
                          "preprocess": "none", "iterations": [1, 150, 1300, 11000]})
    tables = {f"iterations_{m}": pd.DataFrame(
        {"kappa_requested": kappas, "kappa": kappas, "method": m, "status": "converged",
         "iterations": [max(1, int(round(k ** p * 15))) for k in kappas]})
        for m, p in slopes.items()}
    sl = pd.DataFrame([{"method": m, "slope": p, "expected": "≈ 1" if m == "gd" else "≈ ½",
                        "points": 3, "kappa_min": 1.0, "kappa_max": 1000.0,
                        "all_converged": True} for m, p in slopes.items()])
    meta = {"name": "c2", "title": "Claim 2", "params": {},
            "metrics": {"loglog_slope_iterations_vs_kappa": 1.02, "whitened_max_iterations": 1,
                        "whitened_max_kappa": 1.0},
            "figures": [{"kind": "iterations_vs_kappa", "title": "GD"},
                        {"kind": "iterations_vs_kappa_methods", "title": "per method"}],
            "tables": [*tables, "slopes"]}
    write_study(root, "c2", table, {}, meta, {**tables, "slopes": sl})
    return sl


def _verdicts(s: Any) -> list[str]:
    return [b.text for b in s.blocks if b.kind == "verdict"]


def test_claim2_shows_the_slopes_table_and_decides_by_the_slopes(tmp_path: Path) -> None:
    written = _claim2_study(tmp_path / "analytic", {"gd": 0.93, "heavy_ball": 0.53,
                                                    "nesterov": 0.47, "newton": 0.0})
    ctx = Context(tmp_path / "out", _cfg(tmp_path, analytic={"claim2": "c2"}))
    (s,) = claim2.section(ctx)
    tabs = {b.path: b.table for b in s.blocks if b.kind == "table"}
    pd.testing.assert_frame_equal(tabs["tables/claim2-slopes.csv"], written)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "tables" / "claim2-slopes.csv"),
                                  pd.read_csv(tmp_path / "analytic" / "c2" / "slopes.csv"))
    figs = [b.path for b in s.blocks if b.kind == "figure"]
    assert figs == ["figures/claim2-iterations-vs-kappa.png",
                    "figures/claim2-iterations-vs-kappa-methods.png"]
    assert all((tmp_path / "out" / f).is_file() for f in figs)
    (v,) = _verdicts(s)
    assert v.startswith("agrees") and "heavy_ball 0.53" in v and "nesterov 0.47" in v
    _claim2_study(tmp_path / "analytic", {"gd": 0.93, "heavy_ball": 0.95, "nesterov": 0.47})
    (v,) = _verdicts(claim2.section(ctx)[0])
    assert v.startswith("partly") and "heavy_ball 0.95 (outside" in v


def test_claim2_without_the_per_method_tables_keeps_its_gd_verdict(tmp_path: Path) -> None:
    _claim2_study(tmp_path / "analytic", {"gd": 0.93})
    meta_path = tmp_path / "analytic" / "c2" / "study.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "tables": []}))
    (s,) = claim2.section(Context(tmp_path / "out", _cfg(tmp_path, analytic={"claim2": "c2"})))
    (v,) = _verdicts(s)
    assert v.startswith("agrees") and "per method" not in v
    assert len([b for b in s.blocks if b.kind == "figure"]) == 1


# ---------------------------------------------------------------------------- claim 7


def _claim7_study(root: Path) -> pd.DataFrame:
    """claim7_adam_scaling as the analytic stage writes it: two problems, two checkpoints."""
    rng = np.random.default_rng(0)
    rows, arrays = [], {}
    for prob, model, n, rho_h, rho_g in (("quadratic", "linear", 21, (0.4286, 0.4117),
                                          (1.0, 0.9909)),
                                         ("mnist_softmax", "softmax", 700, (0.8481, 0.8346),
                                          (0.9801, 0.9267))):
        for it, rh, rg in zip((10, 100), rho_h, rho_g, strict=True):
            rows.append({"problem": prob, "model": model, "n_params": n, "iteration": it,
                         "loss": 1.0, "grad_norm": 0.5, "coordinates": n,
                         "coordinates_left_out": 0, "spearman_step_vs_inv_hess_diag": rh,
                         "spearman_step_vs_inv_abs_grad": rg,
                         "spearman_hess_diag_vs_abs_grad": rh, "step_median": 0.01,
                         "inv_hess_diag_median": 4.5})
            arrays[f"{prob}/it{it}/adam_step"] = rng.uniform(1e-3, 1e-1, n)
            arrays[f"{prob}/it{it}/inv_hess_diag"] = rng.uniform(1.0, 10.0, n)
    table = pd.DataFrame(rows)
    meta = {"name": "c7", "title": "Claim 7", "params": {}, "metrics": {},
            "figures": [{"kind": "adam_step_vs_inv_hess_diag", "title": "Adam vs Newton"}]}
    write_study(root, "c7", table, arrays, meta)
    return table


def test_claim7_has_a_verdict_and_its_rho_values_are_table_cells(tmp_path: Path) -> None:
    table = _claim7_study(tmp_path / "analytic")
    ctx = Context(tmp_path / "out", _cfg(tmp_path, analytic={"claim7": "c7"}))
    (s,) = claim7.section(ctx)
    (tab,) = [b for b in s.blocks if b.kind == "table"]
    for col in ("spearman_step_vs_inv_hess_diag", "spearman_step_vs_inv_abs_grad"):
        assert list(tab.table[col]) == list(table[col])  # the page's cells are table.csv's
    (v,) = _verdicts(s)
    assert v.startswith("partly") and "threshold: ρ ≥ 0.9" in v
    text = " ".join(b.text for b in s.blocks if b.kind in ("text", "verdict"))
    shown = {float(x) for x in re.findall(r"ρ = (\d\.\d\d)", text)}
    shown |= {float(x) for x in re.findall(r"(\d\.\d\d)–(\d\.\d\d)", text) for x in x}
    cells = {round(float(x), 2) for c in ("spearman_step_vs_inv_hess_diag",
                                          "spearman_step_vs_inv_abs_grad") for x in table[c]}
    assert shown and shown <= cells, (shown, cells)
    assert "0.41–0.43" in v and "0.99–1.00" in v and "0.83–0.85" in v and "0.93–0.98" in v
    assert "gradient's magnitude" in v
    (fig,) = [b.path for b in s.blocks if b.kind == "figure"]
    assert (tmp_path / "out" / fig).is_file()


def test_claim7_is_left_out_when_its_files_are_absent(tmp_path: Path) -> None:
    ctx = Context(tmp_path / "out", _cfg(tmp_path, analytic={"claim7": "c7"}))
    assert claim7.section(ctx) == []
    assert claim7.section(Context(tmp_path / "out", _cfg(tmp_path))) == []  # no key at all


def test_claim7_draws_its_runs_once_and_the_speed_section_does_not(tmp_path: Path) -> None:
    _reference(tmp_path / "reference")
    _claim7_study(tmp_path / "analytic")
    runs = _runs("c7q", {"gd": {"lr": "auto"}, "diag_newton": {}, "adam": {"batch_size": None},
                         "newton": {"lr": 1.0}})
    other = _runs("other", {"gd": {"lr": "auto"}})
    both = RunSet(pd.concat([runs.runs, other.runs]), {**runs.histories, **other.histories},
                  {**runs.configs, **other.configs})
    cfg = _cfg(tmp_path, analytic={"claim7": "c7"},
               trained_studies={"newton_vs_gd": [], "adam": ["c7q"]})
    ctx = build_context(tmp_path / "out", cfg, both)
    secs = [*claim7.section(ctx), *speed.section(ctx)]
    page = to_html("t", "", secs)
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(set(srcs)) and "figures/claim7-convergence-c7q.png" in srcs
    assert not [x for x in srcs if "convergence-c7q" in x and "claim7" not in x]
    assert [x for x in srcs if "convergence-other" in x]  # other studies still drawn there
    text = " ".join(b.text for b in secs[0].blocks if b.kind == "text")
    final = ctx.speed.set_index("optimizer").loc["adam", "final_rel_subopt"]
    assert f"(f − f*)/|f*| = {final:.1e}" in text


def test_claim7_follows_claim6_in_the_page_order() -> None:
    keys = [m.KEY for m in ORDER]
    assert keys.index("claim7") > keys.index("claim6") and "claim7" in keys


def test_the_default_report_config_includes_claim7() -> None:
    from pipeline.config.schemas import REPORT_SECTIONS, ReportOptions

    opts = ReportOptions()
    assert "claim7" in REPORT_SECTIONS and "claim7" in opts.sections
    assert opts.trained_studies.adam == ["claim7_adam", "claim7_adam_quadratic"]


def test_seconds_from_two_devices_are_never_in_one_column_unnamed(tmp_path: Path) -> None:
    _reference(tmp_path / "reference")
    runs = _runs("s", {"gd": {"lr": "auto"}, "newton": {"lr": 1.0}})
    one = build_context(tmp_path / "one", _cfg(tmp_path), runs)  # records without a device: cpu
    (s,) = speed.section(one)
    (tab,) = [b for b in s.blocks if b.kind == "table"]
    assert "device" not in tab.columns and tab.columns["seconds_to_1e-08"] == "s to 1e-8"
    assert "device" not in pd.read_csv(tmp_path / "one" / tab.path).columns  # the CSV as before
    runs.runs["device"] = ["cpu", "cuda:0 (NVIDIA H200)"]  # the same study on two devices
    two = build_context(tmp_path / "two", _cfg(tmp_path), runs)
    (s,) = speed.section(two)
    (tab,) = [b for b in s.blocks if b.kind == "table"]
    keys = list(tab.columns)
    assert keys.index("device") < keys.index("seconds_to_1e-04")  # beside the seconds
    assert tab.columns["seconds_to_1e-08"] == "s to 1e-8 on the run's device"
    assert dict(zip(tab.table["optimizer"], tab.table["device"], strict=True)) == {
        "gd": "cpu", "newton": "cuda:0 (NVIDIA H200)"}
    csv = pd.read_csv(tmp_path / "two" / tab.path)
    assert sorted(csv["device"]) == ["cpu", "cuda:0 (NVIDIA H200)"]
    page = to_html("t", "", [s])
    assert "device (of the seconds)" in page and "NVIDIA H200" in page


def test_the_headline_table_names_the_device_of_a_study_run_on_two(tmp_path: Path) -> None:
    from pipeline.reporting.sections import headline

    _reference(tmp_path / "reference")
    runs = _runs("s", {"gd": {"lr": "auto"}, "newton": {"lr": 1.0}})
    runs.runs["device"] = ["cpu", "cpu"]
    ctx = build_context(tmp_path / "one", _cfg(tmp_path, headline_study="s"), runs)
    (tab,) = [b for b in headline.section(ctx)[0].blocks if b.kind == "table"]
    assert "device" not in tab.columns and "device" not in pd.read_csv(tmp_path / "one" / tab.path)
    runs.runs["device"] = ["cpu", "cuda:0 (NVIDIA H200)"]
    ctx = build_context(tmp_path / "two", _cfg(tmp_path, headline_study="s"), runs)
    (tab,) = [b for b in headline.section(ctx)[0].blocks if b.kind == "table"]
    assert tab.columns["seconds_to_1e-04"] == "s to 1e-4 on the run's device"
    assert set(tab.table["device"]) == {"cpu", "cuda:0 (NVIDIA H200)"}
