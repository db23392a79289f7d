"""Analytic study files: ``<paths.analytic_dir>/<study>/`` = table.csv, arrays.npz, study.json,
and a study's further tables ``<name>.csv``.

Written by ``python -m pipeline.analytic`` (the folder replaced as a whole), read by the report:
``study.json`` holds ``{name, title, params, metrics, figures, seconds}`` (``tables``: the names
of the further tables, where there are any), ``table.csv`` one row per measurement and
``arrays.npz`` what the figures draw. Wall-clock seconds (study.json ``seconds``, a ``seconds``
column of the table) are kept in ``timing.json`` beside them (in ``.dvcignore``), so the files are
the same on every rerun; ``read_study`` joins them back.
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
TIMING_FILE = "timing.json"  # {"seconds": s, "columns": {name: [index, values]}}
TIMING_KEYS = ("seconds",)
TIMING_COLUMNS = ("seconds",)
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
    clock = [c for c in TIMING_COLUMNS if c in table.columns]
    timing = {
        **{k: meta.get(k) for k in TIMING_KEYS},
        "columns": {c: [table.columns.get_loc(c), table[c].tolist()] for c in clock},
    }
    with replace_dir(dest) as new:
        write_text(new / "table.csv", table.drop(columns=clock).to_csv(index=False))
        for key, extra in (tables or {}).items():
            write_text(new / f"{key}.csv", extra.to_csv(index=False))
        npz_writer(dict(arrays))(new / "arrays.npz")
        write_json(new / "study.json", {k: v for k, v in meta.items() if k not in TIMING_KEYS})
        write_json(new / TIMING_FILE, timing)
    return dest


def join_timing(meta: dict[str, Any], table: pd.DataFrame, timing: Any) -> None:
    """Put timing.json's seconds back into study.json's dict and the table (in place; a column
    whose length is not the table's is left out)."""
    if not isinstance(timing, dict) or not isinstance(meta, dict):
        return
    for k in TIMING_KEYS:
        meta.setdefault(k, timing.get(k))
    for col, entry in (timing.get("columns") or {}).items():
        if col not in table.columns and isinstance(entry, list) and len(entry) == 2 \
                and isinstance(entry[1], list) and len(entry[1]) == len(table):
            table.insert(min(int(entry[0]), len(table.columns)), col, entry[1])


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
    timing: Any = dict.fromkeys(TIMING_KEYS)  # absent, e.g. pulled from a DVC remote
    if (folder / TIMING_FILE).is_file():
        timing = read_file(folder / TIMING_FILE,
                           lambda p: json.loads(p.read_text(encoding="utf-8")),
                           "unreadable study timing", RERUN)
    join_timing(meta, table, timing)
    return meta, table, arrays
