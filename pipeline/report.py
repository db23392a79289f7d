"""``python -m pipeline.report``: gather finished runs into one DataFrame and write the report.

Sources: the run directories under ``experiments/`` (``report.source=dirs``, default; what DVC
tracks) or one MLflow experiment (``report.source=mlflow report.experiment=<study>``), the
reference optima (``paths.reference_dir``, the ``reference`` stage), the analytic studies
(``paths.analytic_dir``, the ``analytic`` stage) and the prepared facts. It only reads files and
renders: nothing is solved or trained here. Writes ``reports/index.html`` (opens from disk),
``reports/report.md``, ``reports/figures/*.png``, ``reports/tables/*.csv`` (typed columns) and
``reports/plots/convergence-<problem>.csv`` (f − f* per run of the headline study, for DVC). The
page is built in a staging folder and moved into place only when complete, so a failure never
leaves a half-written report.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.cli.entry import stage
from pipeline.config.checks import check_boundary
from pipeline.config.paths import project_path
from pipeline.config.schemas import (
    REPORT_SECTIONS,
    ReportConfig,
    as_kwargs,
)
from pipeline.core.errors import ConfigError
from pipeline.tracking.sweep import JobContext

PROG = "report"
# what each report replaces
REPORT_FILES = ("index.html", "report.md", "figures", "tables", "plots")


def validate(cfg: dict[str, Any]) -> None:
    """Range checks Hydra cannot do; a one-line ConfigError."""
    rep = cfg["report"]
    if rep["source"] not in ("dirs", "mlflow"):
        raise ConfigError(f"report.source={rep['source']!r} is invalid: use dirs or mlflow")
    if rep["source"] == "mlflow" and not rep.get("experiment"):
        raise ConfigError("report.source=mlflow needs report.experiment=<MLflow experiment "
                          "(study) name>")
    unknown = sorted(set(rep["sections"]) - set(REPORT_SECTIONS))
    if unknown:
        choose = list(REPORT_SECTIONS)
        raise ConfigError(f"report.sections: unknown {unknown}; choose from {choose}")
    tols = rep["tolerances"]
    if not tols or not all(0.0 < float(t) < 1.0 for t in tols):
        raise ConfigError(f"report.tolerances={tols} is invalid: give relative tolerances in (0, "
                          "1)")
    missing = sorted({"claim1", "claim2", "claim3"} - set(rep["analytic"] or {}))
    if missing:
        raise ConfigError(f"report.analytic lacks {missing}: name each claim's study folder, e.g. "
                          "report.analytic.claim1=claim1_gd_paths")


SCRATCH_STUDIES = ("scratch",)  # hand runs: in the page only when report.studies names them


def gather(cfg: dict[str, Any], stage_dir: Path) -> Any:
    """The RunSet named by report.source, or None when the experiments folder has no runs yet."""
    from pipeline.reporting.gather import NoRuns, gather_dirs, gather_mlflow

    rep = cfg["report"]
    if rep["source"] == "mlflow":
        from pipeline.tracking.mlflow import reading_store

        uri = reading_store(cfg["mlflow"])  # never creates a store
        return gather_mlflow(str(rep["experiment"]), uri, stage_dir / ".mlflow",
                             local_experiments=project_path(cfg["paths"]["experiments_dir"]))
    exp = project_path(cfg["paths"]["experiments_dir"])
    try:
        return gather_dirs(exp, rep["studies"], exclude=SCRATCH_STUDIES)
    except NoRuns:
        if rep["studies"]:
            raise
        return None  # a fresh project: the analytic studies only


def provenance(cfg: dict[str, Any], runs: Any) -> dict[str, Any]:
    """The git commit, the tracking URI and MLflow UI the run links point into, and each study's
    presets (``conf/experiment/<study>[_*].yaml``, linked relative to the report folder)."""
    import os

    from pipeline.config.paths import PROJECT_ROOT
    from pipeline.tracking.mlflow import git_commit, is_server, tracking_uri
    from pipeline.tracking.query import ui_base

    uri = tracking_uri(cfg["mlflow"])
    reports = Path(cfg["paths"]["reports_dir"])
    presets: dict[str, list[tuple[str, str]]] = {}  # study → (preset file, link from reports/)
    conf = PROJECT_ROOT / "conf" / "experiment"
    for study in [] if runs is None else sorted(set(runs.runs["study"].astype(str))):
        files = sorted({*conf.glob(f"{study}.yaml"), *conf.glob(f"{study}_*.yaml")})
        presets[study] = [(f.relative_to(PROJECT_ROOT).as_posix(),
                           Path(os.path.relpath(f, reports)).as_posix()) for f in files]
    return {"git_commit": git_commit(), "tracking_uri": uri, "mlflow_ui": ui_base(uri),
            "ui_is_server": is_server(uri), "presets": presets}


def run_report(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate, gather, build in a staging folder, publish; returns a summary."""
    from pipeline.reporting.build import build
    from pipeline.reporting.context import build_context
    from pipeline.reporting.convergence import write_plot_files
    from pipeline.reporting.render import to_html, to_markdown
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
        if runs is not None and runs.skipped:
            from pipeline.reporting.gather import warn_skipped

            warn_skipped(PROG, runs.skipped)
        shown = runs if "trained" in rep["sections"] else None
        ctx = build_context(stage, cfg, shown, provenance(cfg, runs))
        (stage / "figures").mkdir(parents=True, exist_ok=True)
        (stage / "tables").mkdir(parents=True, exist_ok=True)
        built = build(ctx, set(rep["sections"]))
        write_plot_files(ctx, stage / "plots")
        subtitle = ("Generated by `python -m pipeline.report` from the files of the stages before "
                    f"it, at git commit `{ctx.provenance['git_commit']}` (no clock in it: the "
                    "same inputs give the same page).")
        write_text(stage / "index.html", to_html(str(rep["title"]), subtitle, built.sections))
        write_text(stage / "report.md", to_markdown(str(rep["title"]), subtitle, built.sections))
        shutil.rmtree(stage / ".mlflow", ignore_errors=True)  # downloaded artifacts, not the report
    return {"index": str(dest / "index.html"), "seconds": time.perf_counter() - t0,
            "runs": 0 if runs is None else len(runs), "timings": built.timings}


def job(cfg: DictConfig, _ctx: JobContext) -> None:
    """Hydra job (see the module docstring)."""
    check_boundary(cfg)
    summary = run_report(as_kwargs(cfg))
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings"].items())
    print(f"report: wrote {summary['index']} ({summary['runs']} runs, {summary['seconds']:.1f} s: "
          f"{timings})")


main = stage(PROG, ReportConfig)(job)

if __name__ == "__main__":
    main()
