"""Analytic study files: ``<paths.analytic_dir>/<study>/`` = table.csv, arrays.npz, study.json,
and a study's further tables ``<name>.csv``.

Written by ``python -m pipeline.analytic`` (the folder replaced as a whole), read by the report:
``study.json`` holds ``{name, title, params, metrics, figures, seconds}`` (``tables``: the names
of the further tables, where there are any), ``table.csv`` one row per measurement and
``arrays.npz`` what the figures draw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.store.reading import read_file
from pipeline.store.writer import npz_writer, replace_dir, write_json, write_text

FILES = ("table.csv", "arrays.npz", "study.json")
RERUN = "run `dvc repro` (or `python -m pipeline.analytic`)"


def write_study(
    root: Path,
    name: str,
    table: pd.DataFrame,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """``<root>/<name>/`` = table.csv, arrays.npz, study.json and ``<key>.csv`` per further table,
    replaced as a whole; returns it."""
    dest = root / name
    with replace_dir(dest) as new:
        write_text(new / "table.csv", table.to_csv(index=False))
        for key, extra in (tables or {}).items():
            write_text(new / f"{key}.csv", extra.to_csv(index=False))
        npz_writer(dict(arrays))(new / "arrays.npz")
        write_json(new / "study.json", dict(meta))
    return dest


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}


def read_study_tables(folder: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    """The further tables ``<name>.csv`` of one study folder (``study.json['tables']``); else a
    one-line DataError."""
    return {n: read_file(folder / f"{n}.csv", pd.read_csv, "unreadable study table", RERUN)
            for n in names}


def read_study(folder: Path) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
    """(study.json, table.csv, arrays.npz) of one study folder; else a one-line DataError."""
    meta = read_file(
        folder / "study.json",
        lambda p: json.loads(p.read_text(encoding="utf-8")),
        "unreadable study",
        RERUN,
    )
    table = read_file(folder / "table.csv", pd.read_csv, "unreadable study table", RERUN)
    arrays = read_file(folder / "arrays.npz", _arrays, "unreadable study arrays", RERUN)
    return meta, table, arrays
