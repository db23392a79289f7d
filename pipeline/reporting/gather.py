"""Gather finished runs (run directories or an MLflow experiment) into one pandas DataFrame."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.store.prepared import file_sha256
from pipeline.store.reading import DataError  # the store's read error
from pipeline.store.rundir import (
    load_confusion,
    read_config_dict,
    read_history,
    read_json,
    read_run_record,
    read_weights,
)

METRIC_KEYS = (
    "study", "data", "preprocess", "model", "optimizer", "objective", "l2", "lr", "n_params",
    "status", "converged", "message", "iterations", "passes", "cg_iterations", "train_loss",
    "grad_norm", "train_time_s", "train_accuracy", "test_accuracy", "test_loss", "mlflow_run_id",
)  # fmt: skip
EVAL_KEYS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "n_train", "n_test")
# the documented types of metrics.json / evaluation.json values (docs/architecture.md); null is
# allowed everywhere, other keys are not checked
TEXT_KEYS = ("study", "data", "preprocess", "model", "optimizer", "objective", "status", "message",
             "mlflow_run_id", "run")
FLAG_KEYS = ("converged", "fit_intercept")
NUMBER_KEYS = ("l2", "lr", "n_params", "iterations", "passes", "cg_iterations", "train_loss",
               "grad_norm", "train_time_s", "train_accuracy", "test_accuracy", "test_loss",
               "val_accuracy", "val_loss", "n_val", "n_train", "n_test")


class NoRuns(DataError):
    """The experiments folder exists but holds no finished run."""


@dataclass
class RunSet:
    """Runs as a DataFrame (index = ``run_id`` ``<study>/<run>``) plus per-run histories and
    files."""

    runs: pd.DataFrame
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run id, why) of damaged runs
    stale: list[str] = field(default_factory=list)  # run ids of an earlier sweep, left out

    def __len__(self) -> int:
        return len(self.runs)


def _kind(value: Any) -> str | None:
    """'text', 'flag' or 'number' for a JSON scalar; None for lists, objects."""
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else None


def _read_json(path: Path, reader: Any = read_json) -> dict[str, Any]:
    """A run file (read by ``reader``) whose documented keys have their documented types; else a
    one-line DataError."""
    from pipeline.store.reading import damaged

    data = reader(path, fix="rerun the stage that wrote it")
    for keys, kind in ((TEXT_KEYS, "text"), (FLAG_KEYS, "flag"), (NUMBER_KEYS, "number")):
        for k in keys:
            value = data.get(k)
            if value is not None and _kind(value) != kind:
                shown = " ".join(repr(value).split())[:60]
                raise damaged(path, f"{k!r} is {shown}, not a {kind}", None,
                              "rerun the stage that wrote it")
    return data


def _check_weights(run_dir: Path, eval_dir: Path | None = None) -> None:
    """A run's weights.npz and confusion.csv, when present, are readable (the report shows them),
    and its evaluation.json (in ``eval_dir``, default ``run_dir``) scored these weights."""
    weights = run_dir / "weights.npz"
    if weights.exists():
        read_weights(weights)
        check_scored(weights, (eval_dir or run_dir) / "evaluation.json")
    load_confusion(run_dir)


def check_scored(weights: Path, evaluation: Path) -> None:
    """evaluation.json's ``weights_sha256`` (when it has one) is the SHA-256 of ``weights``; else a
    one-line DataError (the evaluation belongs to other weights)."""
    if not evaluation.exists():
        return
    scored = _read_json(evaluation).get("weights_sha256")
    if scored is not None and scored != file_sha256(weights):
        raise DataError(f"{evaluation}: scored other weights than {weights} (weights_sha256 "
                        f"{str(scored)[:12]}… differs); rerun `python -m pipeline.evaluate`")


def _read_run(run_dir: Path, run_id: str, art_dir: Path | None = None) -> tuple[
        dict[str, Any], pd.DataFrame | None, dict[str, Any]]:
    """(row, history or None, config) of one run; a DataError names the damaged file."""
    src = art_dir or run_dir
    row = _row_from_dir(src, run_id)
    history = read_history(src / "history.csv") if (src / "history.csv").exists() else None
    config = read_config_dict(src / "config.yaml")
    _check_weights(run_dir)
    return row, history, config


def warn_skipped(prog: str, skipped: list[tuple[str, str]]) -> None:
    """One stderr warning line per damaged run the report left out."""
    import sys

    for _run_id, why in skipped:
        print(f"{prog}: warning: skipped run: {' '.join(why.split())}", file=sys.stderr)


def _row_from_dir(run_dir: Path, run_id: str) -> dict[str, Any]:
    """One row: metrics.json, completed from evaluation.json where metrics.json lacks a value."""
    metrics = _read_json(run_dir / "metrics.json", read_run_record)
    row: dict[str, Any] = {k: metrics.get(k) for k in METRIC_KEYS}
    row.update({k: v for k, v in metrics.items() if k not in row})
    if isinstance(row.get("versions"), dict):  # one table cell: "numpy 2.1.3, torch 2.5.1"
        row["versions"] = ", ".join(f"{k} {v}" for k, v in row["versions"].items())
    eval_path = run_dir / "evaluation.json"
    row["evaluated"] = eval_path.exists()
    if eval_path.exists():
        ev = _read_json(eval_path)
        for k in EVAL_KEYS:
            if row.get(k) is None and ev.get(k) is not None:
                row[k] = ev[k]
    row["run_id"] = run_id
    row["run"] = run_dir.name
    row["run_dir"] = str(run_dir)
    if row.get("study") is None:
        row["study"] = run_dir.parent.name
    return row


def _finish(rows: list[dict[str, Any]], histories: dict[str, pd.DataFrame],
            configs: dict[str, dict[str, Any]], dirs: dict[str, Path], source: str,
            skipped: list[tuple[str, str]] | None = None) -> RunSet:
    df = pd.DataFrame(rows).set_index("run_id", drop=False).sort_index()
    for c in ("l2", "lr", "passes", "cg_iterations", "train_loss", "grad_norm", "train_time_s",
              "train_accuracy", "test_accuracy", "test_loss"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    df["iterations"] = pd.to_numeric(df["iterations"], errors="coerce").astype("Int64")
    df["l2"] = df["l2"].fillna(0.0)
    return RunSet(df, histories, configs, dirs, source, list(skipped or []))


def _listing(folder: Path) -> list[str] | None:
    """The names in a folder, None when it cannot be listed (permissions, I/O error)."""
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return None


def _run_folders(root: Path, wanted: set[str] | None, skipped: list[tuple[str, str]]) -> list[Path]:
    """``<root>/<study>/<run>`` folders holding a metrics.json (dot-names aside, sorted); a study or
    run folder that cannot be listed is added to ``skipped``, named."""
    found = []
    for study in _listing(root) or []:
        if study.startswith(".") or (wanted is not None and study not in wanted):
            continue
        if not (root / study).is_dir():
            continue
        runs = _listing(root / study)
        if runs is None:
            skipped.append((study, f"{root / study}: cannot read this study folder; make it "
                                   "readable (chmod u+rx)"))
            continue
        for run in runs:
            if run.startswith(".") or not (root / study / run).is_dir():
                continue
            names = _listing(root / study / run)
            if names is None:
                skipped.append((f"{study}/{run}", f"{root / study / run}: cannot read this run "
                                                  "folder; make it readable (chmod u+rx)"))
            elif "metrics.json" in names:
                found.append(root / study / run)
    return sorted(found)


def sweep_trials(study_dir: Path) -> set[frozenset[str]] | None:
    """The trials of the latest sweep of a tuning study: each row of its ``trials.csv`` as the set
    of its swept ``key=value`` overrides (the same text its run folder's name ends with), or None
    when the study has no trials file."""
    path = study_dir / "trials.csv"
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    keys = [c for c in table.columns if "." in c]  # the swept config keys (model.l2, ...)
    if not keys:
        return None
    return {frozenset(f"{k}={row[k]}" for k in keys if row[k] != "")
            for _, row in table.iterrows()}


def is_stale(run_name: str, row: dict[str, Any], sweep: set[frozenset[str]] | None) -> bool:
    """A trial of an earlier sweep: its study lists this sweep's trials and the swept values in
    the run folder's name (``<run>,key=value,...``) are none of them."""
    return (sweep is not None and row.get("val_accuracy") is not None
            and frozenset(run_name.split(",")[1:]) not in sweep)


def gather_dirs(experiments_dir: str | Path, studies: Iterable[str] | None = None,
                exclude: Iterable[str] = ()) -> RunSet:
    """Every ``<experiments_dir>/<study>/<run>/metrics.json`` (optionally only the given studies;
    never the ``exclude``d ones); trials of an earlier sweep of a tuning study are left out (listed
    in ``stale``)."""
    root = Path(experiments_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no experiments directory; run `dvc repro` (or pipeline.train) "
                        "first")
    wanted = None if studies is None else set(studies)
    if wanted is None and exclude:
        wanted = {n for n in (_listing(root) or []) if n not in set(exclude)}
    rows, histories, configs, dirs, skipped, stale = [], {}, {}, {}, [], []
    sweeps: dict[Path, set[frozenset[str]] | None] = {}
    if _listing(root) is None:
        raise DataError(f"{root}: cannot read the experiments folder; make it readable "
                        "(chmod u+rx)")
    for run_dir in _run_folders(root, wanted, skipped):
        run_id = f"{run_dir.parent.name}/{run_dir.name}"
        try:
            row, history, config = _read_run(run_dir, run_id)
        except DataError as err:  # a damaged run is left out (and listed), the rest rendered
            skipped.append((run_id, str(err)))
            continue
        if run_dir.parent not in sweeps:
            sweeps[run_dir.parent] = sweep_trials(run_dir.parent)
        if is_stale(run_dir.name, row, sweeps[run_dir.parent]):
            stale.append(run_id)
            continue
        rows.append(row)
        if history is not None:
            histories[run_id] = history
        configs[run_id] = config
        dirs[run_id] = run_dir
    if not rows and skipped:
        raise NoRuns(f"{root}: every run is damaged (first: {skipped[0][1]})")
    if not rows:
        which = "" if wanted is None else f" for studies {sorted(wanted)}"
        raise NoRuns(f"{root}: no finished runs{which}; run `dvc repro` (or pipeline.train) first")
    found = _finish(rows, histories, configs, dirs, f"run directories under {root}", skipped)
    found.stale = stale
    return found


def gather_mlflow(experiment: str, tracking_uri: str | None = None,
                  download_dir: str | Path | None = None,
                  local_experiments: str | Path | None = None) -> RunSet:
    """Runs of one MLflow experiment via ``mlflow.search_runs``; their run-directory files are
    artifacts.

    Runs without a ``metrics.json`` artifact (sweep parents, report runs) are skipped. Weights and
    the confusion matrix are read from the local run directory when it still exists.
    """
    from pipeline.tracking.query import download_run, train_runs

    found = train_runs(experiment, tracking_uri)
    base = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="curvlab-mlflow-"))
    rows, histories, configs, dirs, skipped = [], {}, {}, {}, []
    for _, r in found.iterrows():
        rid = str(r["run_id"])
        local = download_run(rid, base / rid)
        mfiles = sorted(local.rglob("metrics.json"))
        if not mfiles:
            continue
        art_dir = mfiles[0].parent
        try:
            row = _row_from_dir(art_dir, "")
        except DataError as err:
            skipped.append((rid, f"MLflow run {rid}: {err}"))
            continue
        run_name = str(r.get("tags.mlflow.runName") or art_dir.name)
        study = str(row.get("study") or experiment)
        run_id = f"{study}/{run_name}"
        if run_id in dirs or any(s[0] == run_id for s in skipped):
            continue  # an older run of the same name: only the latest counts
        for k in EVAL_KEYS:  # evaluate logs eval_<key> metrics to the train run
            col = f"metrics.eval_{k}"
            if row.get(k) is None and col in found.columns and pd.notna(r[col]):
                row[k] = float(r[col])
        local_dir = Path(local_experiments) / study / run_name if local_experiments else None
        run_dir = local_dir if local_dir is not None and local_dir.is_dir() else art_dir
        row.update(run_id=run_id, run=run_name, mlflow_run_id=rid, run_dir=str(run_dir))
        try:
            history = (
                read_history(art_dir / "history.csv")
                if (art_dir / "history.csv").exists()
                else None
            )
            config = read_config_dict(art_dir / "config.yaml")
            _check_weights(run_dir, art_dir)
        except DataError as err:
            skipped.append((run_id, f"MLflow run {rid}: {err}"))
            continue
        rows.append(row)
        if history is not None:
            histories[run_id] = history
        configs[run_id] = config
        dirs[run_id] = run_dir
    if not rows:
        raise DataError(f"MLflow experiment {experiment!r} has no runs with a metrics.json "
                        "artifact; "
                        "train some (python -m pipeline.train study=...) first")
    return _finish(rows, histories, configs, dirs, f"MLflow experiment {experiment!r}", skipped)
