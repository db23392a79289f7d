"""``python -m pipeline.report``: gather finished runs into one DataFrame and write the report.

Sources: the run directories under ``experiments/`` (``report.source=dirs``, default; what DVC
tracks) or one MLflow experiment (``report.source=mlflow report.experiment=<study>``), the
reference optima (``paths.reference_dir``, the ``reference`` stage), the analytic studies
(``paths.analytic_dir``, the ``analytic`` stage) and the prepared facts. It only reads files and
renders: nothing is solved or trained here. Writes ``reports/index.html`` (opens from disk),
``reports/report.md``, ``reports/figures/*.png`` and ``reports/tables/*.csv`` (typed columns). The
page is built in a staging folder and moved into place only when complete, so a failure never
leaves a half-written report.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from pipeline.cli.entry import user_errors_exit
from pipeline.config.checks import check_boundary
from pipeline.config.paths import project_path
from pipeline.config.schemas import MlflowConfig, PathsConfig, as_kwargs
from pipeline.core.errors import ConfigError

PROG = "report"
SECTIONS = ("claim1", "claim2", "conditioning", "claim3", "trained")
REPORT_FILES = ("index.html", "report.md", "figures", "tables")  # what each report replaces


@dataclass
class TrainedStudies:
    bad_init: str = "claim4_bad_init"
    newton_vs_gd: list[str] = field(default_factory=lambda: ["claim5_newton_vs_gd", "default"])


@dataclass
class ReportOptions:
    source: str = "dirs"  # dirs | mlflow
    experiment: str | None = None  # source=mlflow: the MLflow experiment (= study) to report
    studies: list[str] | None = None  # source=dirs: only these experiments/<study>/ (null = all)
    title: str = "curvlab report"
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    tolerances: list[float] = field(default_factory=lambda: [1.0e-4, 1.0e-8])
    headline_study: str = "default"  # the study of the first table (optimizer × preprocessing per problem)
    trained_studies: TrainedStudies = field(default_factory=TrainedStudies)
    conditioning: Any = MISSING  # {data: <data.id>, prepared: [<preprocess ids of the prepared files to compare>]}
    analytic: Any = MISSING  # {claim1|claim2|claim3: <study folder under paths.analytic_dir>}
    accuracy_data: list[str] = field(default_factory=list)  # data ids given a claim-6-style accuracy section


@dataclass
class ReportConfig:
    report: ReportOptions = field(default_factory=ReportOptions)
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


ConfigStore.instance().store(name="report_schema", node=ReportConfig)


def validate(cfg: dict[str, Any]) -> None:
    """Range checks Hydra cannot do; a one-line ConfigError."""
    rep = cfg["report"]
    if rep["source"] not in ("dirs", "mlflow"):
        raise ConfigError(f"report.source={rep['source']!r} is invalid: use dirs or mlflow")
    if rep["source"] == "mlflow" and not rep.get("experiment"):
        raise ConfigError("report.source=mlflow needs report.experiment=<MLflow experiment (study) name>")
    unknown = sorted(set(rep["sections"]) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"report.sections: unknown {unknown}; choose from {list(SECTIONS)}")
    tols = rep["tolerances"]
    if not tols or not all(0.0 < float(t) < 1.0 for t in tols):
        raise ConfigError(f"report.tolerances={tols} is invalid: give relative tolerances in (0, 1)")
    missing = sorted({"claim1", "claim2", "claim3"} - set(rep["analytic"] or {}))
    if missing:
        raise ConfigError(f"report.analytic lacks {missing}: name each claim's study folder, e.g. "
                          "report.analytic.claim1=claim1_gd_paths")


def gather(cfg: dict[str, Any], stage_dir: Path) -> Any:
    """The RunSet named by report.source, or None when the experiments folder has no runs yet."""
    from pipeline.reporting.gather import NoRuns, gather_dirs, gather_mlflow

    rep = cfg["report"]
    if rep["source"] == "mlflow":
        from pipeline.tracking.mlflow import tracking_uri

        return gather_mlflow(str(rep["experiment"]), tracking_uri(cfg["mlflow"]), stage_dir / ".mlflow",
                             local_experiments=project_path(cfg["paths"]["experiments_dir"]))
    exp = project_path(cfg["paths"]["experiments_dir"])
    try:
        return gather_dirs(exp, rep["studies"])
    except NoRuns:
        if rep["studies"]:
            raise
        return None  # a fresh project: the analytic studies only


def run_report(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate, gather, build in a staging folder, publish; returns a summary."""
    from pipeline.reporting.build import build
    from pipeline.reporting.render import Section, to_html, to_markdown
    from pipeline.store.writer import check_writable, replace_dir, write_text

    validate(cfg)
    cfg = {**cfg, "paths": {k: str(project_path(v)) for k, v in cfg["paths"].items()}}
    dest = Path(cfg["paths"]["reports_dir"])
    check_writable(dest)  # fail before the minutes of work, not at the end
    t0 = time.perf_counter()
    # the report folder changes as a whole: built in a sibling, swapped in when complete
    # (anything else in reports/ that the report does not write is carried over)
    with replace_dir(dest, carry=lambda name: name not in REPORT_FILES) as stage:
        runs = gather(cfg, stage)
        rep = cfg["report"]
        sections = [s for s in rep["sections"] if s != "trained"]
        built = build(stage, {**cfg, "report": {**rep, "sections": sections}},
                      runs if "trained" in rep["sections"] else None)
        overview = Section("overview", "Overview",
                           "Each section below tests one claim from the lecture on first- and "
                           "second-order optimization; figures and tables are regenerated by "
                           "`dvc repro` (or `python -m pipeline.report`).")
        if runs is not None and runs.skipped:
            from pipeline.reporting.gather import warn_skipped

            warn_skipped(PROG, runs.skipped)
            overview.note(f"Skipped {len(runs.skipped)} damaged run(s): "
                          + "; ".join(f"{rid}: {why}" for rid, why in runs.skipped))
        if runs is None:
            overview.note(f"No trained runs under {cfg['paths']['experiments_dir']}; only the analytic "
                          "studies are shown. Run `dvc repro` to train the studies.")
        else:
            per = runs.runs.groupby("study").size()
            overview.text(f"Source: {runs.source}; {len(runs)} runs: "
                          + ", ".join(f"{k} ({v})" for k, v in per.items()) + ".")
            runs_tab = runs.runs.drop(columns=["run_dir", "message"], errors="ignore")
            built_rel = "tables/runs.csv"
            runs_tab.to_csv(stage / built_rel, index=False)
            overview.text(f"All runs with every metric: [{built_rel}]({built_rel}).")
        subtitle = ("Generated by `python -m pipeline.report` from the files of the stages before it "
                    "(no clock in it: the same inputs give the same page).")
        head = [sec for sec in built.sections if sec.key == "headline"]  # the answer first, then the overview
        sections_all = [*head, overview, *[sec for sec in built.sections if sec.key != "headline"]]
        write_text(stage / "index.html", to_html(str(rep["title"]), subtitle, sections_all))
        write_text(stage / "report.md", to_markdown(str(rep["title"]), subtitle, sections_all))
        shutil.rmtree(stage / ".mlflow", ignore_errors=True)  # downloaded artifacts, not the report
    return {"index": str(dest / "index.html"), "seconds": time.perf_counter() - t0,
            "runs": 0 if runs is None else len(runs), "timings": built.timings}


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@user_errors_exit(PROG)
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see the module docstring)."""
    check_boundary(cfg)
    summary = run_report(as_kwargs(cfg))
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings"].items())
    print(f"report: wrote {summary['index']} ({summary['runs']} runs, {summary['seconds']:.1f} s: {timings})")


if __name__ == "__main__":
    from pipeline.cli.entry import run_cli

    run_cli(PROG, main, ReportConfig)
