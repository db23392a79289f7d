"""The run folder: ``experiments/<study>/<run name>/`` and its files, each writer beside its reader.

``train`` writes, as one folder swap: ``config.yaml`` (the resolved config), ``history.csv`` (one
row per iteration), ``weights.npz`` (``w``, ``coef``, ``intercept``), and the run's record in three
files: ``metrics.json`` (a few numbers, what ``dvc metrics show`` lists), ``run.json`` (the rest:
ids, status, message, ...) and ``timing.json`` (wall-clock seconds, per run and per iteration, and
the MLflow run id). Every file but ``timing.json`` is the same on a rerun of the same code and data,
so DVC hashes them; ``timing.json`` is in ``.dvcignore``. ``read_json`` of a ``metrics.json`` and
``read_history`` join the three back: callers see one record and a history with ``time_s``.
``evaluation.json`` and ``confusion.csv`` (c×c counts, rows = true class, header = class names)
by ``evaluate``. The run name is ``<data.id>-<preprocess.id>-<model.id>-<optimizer.id>`` plus
``,key=value`` for each non-group override (``pipeline.spec``), so the runs of a sweep never
overwrite each other. Every reader fails with one line (``pipeline.store.reading``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.solvers import HISTORY_KEYS
from pipeline.spec import RunSpec
from pipeline.store.reading import damaged, read_file
from pipeline.store.writer import (
    csv_text,
    json_text,
    npz_writer,
    replace_dir,
    update_dir,
    write_csv,
    write_json,
    write_npz,
    write_text,
)

MAX_NAME_BYTES = 240  # a folder name (most file systems allow 255 bytes)
RETRAIN = "retrain the run (python -m pipeline.train with the same overrides) or delete its folder"
REEVALUATE = "rerun `python -m pipeline.evaluate`"
RUN_CONFIG_GROUPS = ("data", "preprocess", "model", "optimizer")
INPUT_WEIGHTS = "input_weights.npz"  # evaluate: the weights in the raw inputs' coordinates
HISTORY_COLUMNS = HISTORY_KEYS  # iteration, time_s, loss, grad_norm, step_size, passes
CLOCK_COLUMN = "time_s"  # the one history column kept in timing.json, not history.csv
HISTORY_FILE_COLUMNS = tuple(c for c in HISTORY_COLUMNS if c != CLOCK_COLUMN)
METRICS_FILE, RECORD_FILE, TIMING_FILE = "metrics.json", "run.json", "timing.json"
# metrics.json: the few numbers of a run DVC shows (``dvc metrics show``, ``dvc exp show``)
DVC_METRICS = ("train_loss", "iterations", "passes", "test_accuracy")
# written for DVC only (its tables round 4.7e-9 to 0.0), dropped when read: grad_norm is in run.json
DERIVED_METRICS = ("log10_grad_norm",)
TIMING_KEYS = ("train_time_s", "mlflow_run_id")  # differ on every rerun: timing.json


def run_dir(spec: RunSpec) -> Path:
    """``<experiments_dir>/<study>/<run name>`` (absolute), checked to be a safe path inside it."""
    from pipeline.config.checks import check_inside, check_name

    root, name = spec.experiments_dir, spec.run_name
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(
            f"the run name {name[:80]}... is {len(name.encode())} bytes, too long for a "
            f"folder name (max {MAX_NAME_BYTES}); override fewer keys or use shorter ids"
        )
    path = root / check_name("study", spec.study) / name
    check_inside(path, root, "study / the group ids")
    return path


# ---------------------------------------------------------------- writers


def write_run(
    out_dir: Path,
    config_yaml: str,
    history: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    metrics: Mapping[str, Any],
) -> None:
    """Replace the run folder as a whole with config.yaml, history.csv, weights.npz, metrics.json.

    The old folder (and its evaluation.json/confusion.csv, which describe the old weights) stays
    untouched until the new one is complete (``pipeline.store.writer.replace_dir``).
    """
    numbers, record, timing = split_record(metrics)
    if CLOCK_COLUMN in history:
        timing[CLOCK_COLUMN] = np.asarray(history[CLOCK_COLUMN], dtype=np.float64).tolist()
    with replace_dir(out_dir) as new:
        write_text(new / "config.yaml", config_yaml)
        write_csv(new / "history.csv", {k: np.asarray(history[k]) for k in HISTORY_FILE_COLUMNS})
        write_npz(new / "weights.npz", dict(weights))
        write_json(new / RECORD_FILE, record)
        write_json(new / TIMING_FILE, timing)
        write_json(new / METRICS_FILE, numbers)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def split_record(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                      dict[str, Any]]:
    """(metrics.json, run.json, timing.json) of a run's record: the ``DVC_METRICS`` that are
    numbers (+ log10 ‖∇f‖), the ``TIMING_KEYS``, and everything else."""
    numbers = {k: metrics[k] for k in DVC_METRICS if _is_number(metrics.get(k))}
    g = metrics.get("grad_norm")
    if _is_number(g) and 0 < g < float("inf"):
        numbers["log10_grad_norm"] = float(np.log10(g))
    timing = {k: metrics[k] for k in TIMING_KEYS if k in metrics}
    record = {k: v for k, v in metrics.items() if k not in numbers and k not in timing}
    return numbers, record, timing


def write_evaluation(out: Path, result: Mapping[str, Any], confusion: np.ndarray | None,
                     input_weights: Mapping[str, np.ndarray] | None = None) -> None:
    """evaluation.json (+ confusion.csv, columns = the class names; + input_weights.npz, the
    weights mapped to the raw inputs ``coef`` = W_x = Aᵀ W, ``intercept`` = b_x = cᵀ W + b) in one
    swap of the run folder (stale ones go with the old folder)."""
    files: dict[str, Any] = {"evaluation.json": _text_writer(json_text(dict(result)))}
    if confusion is not None:
        files["confusion.csv"] = _text_writer(csv_text(
            dict(zip(result["class_names"], confusion.T, strict=True))
        ))
    if input_weights is not None:
        files[INPUT_WEIGHTS] = npz_writer(dict(input_weights))
    update_dir(out, files, drop=("confusion.csv", INPUT_WEIGHTS))


def _text_writer(text: str) -> Any:
    """A ``write(path)`` function writing ``text`` as UTF-8."""
    return lambda p: p.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- readers


def read_json(path: Path | str, fix: str = RETRAIN) -> dict[str, Any]:
    """A JSON object from disk; missing, unreadable or malformed is a one-line DataError (a run's
    whole record: ``read_run_record``)."""
    return read_object(path, fix)


def read_run_record(path: Path | str, fix: str = RETRAIN) -> dict[str, Any]:
    """A run's record from its ``metrics.json`` path: metrics.json ∪ run.json ∪ timing.json of its
    folder (log10 ‖∇f‖ dropped); without timing.json (a run pulled from a DVC remote, which does
    not carry it) its keys are None; a folder without run.json: metrics.json as it is."""
    folder = Path(path).parent
    if not (folder / RECORD_FILE).exists():
        return read_object(path, fix)
    record = read_object(folder / RECORD_FILE, fix)
    numbers = read_object(path, fix)
    timing_path = folder / TIMING_FILE
    timing = read_object(timing_path, fix) if timing_path.exists() else dict.fromkeys(TIMING_KEYS)
    merged = {**record, **{k: v for k, v in numbers.items() if k not in DERIVED_METRICS}}
    merged.update({k: v for k, v in timing.items() if k in TIMING_KEYS})
    return merged


def read_clock(folder: Path, n_rows: int) -> np.ndarray:
    """The seconds column of a run's history (timing.json ``time_s``); NaN when absent or not one
    value per history row (a timing.json left from another run)."""
    path = folder / TIMING_FILE
    secs = read_object(path, "rerun train for this run").get(CLOCK_COLUMN) if path.exists() \
        else None
    if not isinstance(secs, list) or len(secs) != n_rows:
        return np.full(n_rows, np.nan)
    return np.asarray([v if _is_number(v) else np.nan for v in secs], dtype=np.float64)


def read_object(path: Path | str, fix: str = RETRAIN) -> dict[str, Any]:
    """One JSON object file as is; missing, unreadable or malformed is a one-line DataError."""
    data = read_file(
        path,
        lambda p: json.loads(p.read_bytes().decode("utf-8")),
        "not a valid UTF-8 JSON file",
        fix,
        damage=(OSError, ValueError),
    )
    if not isinstance(data, dict):
        raise damaged(path, f"expected a JSON object, found {type(data).__name__}", None, fix)
    return data


def read_run_config(path: Path | str) -> Any:
    """A run's ``config.yaml`` as a DictConfig with its groups; else a one-line DataError."""
    from omegaconf import DictConfig, OmegaConf

    cfg = read_file(path, OmegaConf.load, "not a valid YAML config", RETRAIN)
    if not isinstance(cfg, DictConfig) or any(
        not isinstance(cfg.get(g), DictConfig) for g in RUN_CONFIG_GROUPS
    ):
        raise damaged(
            path,
            f"not a run config (needs the groups {', '.join(RUN_CONFIG_GROUPS)})",
            None,
            RETRAIN,
        )
    return cfg


def read_config_dict(path: Path | str) -> dict[str, Any]:
    """A run's ``config.yaml`` as a plain dict ({} when absent), as the report reads it."""
    import yaml

    if not Path(path).exists():
        return {}

    def load(p: Path) -> Any:
        with open(p, encoding="utf-8") as fh:
            return yaml.safe_load(fh)

    fix = "rerun train for this run"
    cfg = read_file(
        path, load, "unreadable config", fix, damage=(OSError, yaml.YAMLError, ValueError)
    )
    if cfg is not None and not isinstance(cfg, dict):
        raise DataError(f"{path}: not a run config (a YAML mapping); {fix}")
    return cfg or {}


def read_weights(path: Path | str) -> np.ndarray:
    """The flat weight vector ``w`` of a run's ``weights.npz``; else a one-line DataError."""
    w = read_file(path, lambda p: load_weight_arrays(p)["w"], "unreadable weights", RETRAIN)
    if w.ndim != 1 or not np.issubdtype(w.dtype, np.floating) or not np.isfinite(w).all():
        raise damaged(
            path, f"w must be a finite float vector (found {w.dtype} {w.shape})", None, RETRAIN
        )
    return w


def load_weight_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``weights.npz`` (``w``, ``coef``, ``intercept``); no pickles."""
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}


def load_weights(run_dir: Path) -> dict[str, np.ndarray] | None:
    """weights.npz of a run (``w``, ``coef``, ``intercept``) or None when absent."""
    path = Path(run_dir) / "weights.npz"
    if not path.exists():
        return None
    return read_file(path, load_weight_arrays, "unreadable weights", RETRAIN)


def load_input_weights(run_dir: Path) -> dict[str, np.ndarray] | None:
    """input_weights.npz of a run (``coef`` = W_x, ``intercept`` = b_x in the raw inputs'
    coordinates, written by evaluate) or None when absent."""
    path = Path(run_dir) / INPUT_WEIGHTS
    if not path.exists():
        return None
    return read_file(path, load_weight_arrays, "unreadable input-space weights", REEVALUATE)


def read_history(path: Path | str) -> Any:
    """history.csv → DataFrame with float64 columns iteration, time_s (from timing.json), loss,
    grad_norm, step_size, passes."""
    import pandas as pd

    fix = "rerun train for this run"
    df = read_file(
        path,
        pd.read_csv,
        "unreadable history",
        fix,
        damage=(OSError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError),
    )
    if CLOCK_COLUMN not in df.columns and "iteration" in df.columns:  # history.csv + timing.json
        df.insert(min(1, len(df.columns)), CLOCK_COLUMN, read_clock(Path(path).parent, len(df)))
    missing = [c for c in HISTORY_COLUMNS[:4] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: history lacks columns {missing}; {fix}")
    for c in HISTORY_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    if df.empty or df["iteration"].isna().any():
        raise DataError(f"{path}: history has no rows or non-numeric iterations; {fix}")
    return df


def class_names(run_dir: Path, n_classes: int) -> list[str]:
    """The class names evaluate wrote (evaluation.json ``class_names``), else the class indices."""
    path = Path(run_dir) / "evaluation.json"
    names = (
        read_json(path, fix="rerun the stage that wrote it").get("class_names")
        if path.exists()
        else None
    )
    if isinstance(names, list) and len(names) == n_classes:
        return [str(n) for n in names]
    return [str(k) for k in range(n_classes)]


def _numeric(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def load_confusion(run_dir: Path) -> np.ndarray | None:
    """confusion.csv (c×c counts, rows = true class; a header row / label column is dropped) or
    None."""
    path = Path(run_dir) / "confusion.csv"
    if not path.exists():
        return None
    text = read_file(
        path,
        lambda p: p.read_text(encoding="utf-8"),
        "unreadable",
        REEVALUATE,
        damage=(OSError, ValueError),
    )
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if rows and (not all(_numeric(x) for x in rows[0]) or len(rows) == len(rows[0]) + 1):
        rows = rows[1:]  # a header row: names, or the class indices 0..c-1
    try:
        m = np.asarray([[float(x) for x in r] for r in rows], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path}: not a numeric matrix ({err}); {REEVALUATE}") from err
    if m.ndim == 2 and m.shape[1] == m.shape[0] + 1:  # a leading label column
        m = m[:, 1:]
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"{path}: confusion matrix is {m.shape}, not square; {REEVALUATE}")
    return m.astype(np.int64)
