"""Helpers the sections share: tolerance and number text, run cells, the analytic studies'
files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.context import Context
from pipeline.reporting.render import Cell, Section, sig
from pipeline.store.reading import DataError  # the store's read error
from pipeline.store.studies import read_study


def tol_text(tol: float) -> str:
    """A tolerance as a reader writes it: 1e-4, 1e-8."""
    exp = math.log10(tol)
    return f"1e{int(round(exp))}" if abs(exp - round(exp)) < 1e-9 else f"{tol:g}"


def pct(v: Any) -> str:
    """An accuracy as a percentage with two decimals: 91.74 %."""
    return "–" if v is None or not np.isfinite(float(v)) else f"{100.0 * float(v):.2f} %"


def cost_text(value: Any, basis: str) -> str:
    """A cost to a tolerance as shown on the page: measured as is (3 significant digits, grouped),
    projected as '≈ n', 'never' where the fitted rate does not converge."""
    if basis == "never":
        return "never (rate ≥ 1)"
    if basis == "stochastic":
        return "– (stochastic: no linear rate)"
    if value is None or not math.isfinite(float(value)):
        return "–"
    shown = sig(float(value), 3)
    return f"≈ {shown}" if basis == "projected" else shown


def speed_display(df: pd.DataFrame, tols: Sequence[float],
                  kinds: Sequence[str] = ("iters", "passes", "seconds")) -> pd.DataFrame:
    """The typed ``<kind>_to_<tol>`` columns as page text (``cost_text`` by the row's
    ``basis_<tol>``)."""
    out = df.copy()
    for tol in tols:
        t = analysis.tol_key(tol)
        basis = f"basis_{t}"
        for kind in kinds:
            col = f"{kind}_to_{t}"
            if col in out and basis in out:
                out[col] = [cost_text(v, b) for v, b in zip(out[col], out[basis], strict=True)]
    return out


def devices_in(table: pd.DataFrame) -> int:
    """How many devices the seconds of a speed table were measured on (its ``device`` column)."""
    return int(table["device"].nunique()) if "device" in table else 1


def device_columns(devices: int) -> dict[str, str]:
    """A speed table's ``device`` column → header, where its seconds come from several devices."""
    return {"device": "device (of the seconds)"} if devices > 1 else {}


def seconds_header(tol: float, devices: int) -> str:
    """The header of the seconds to ``tol``: 's to 1e-8', naming the run's device where the seconds
    of several devices share the column."""
    return f"s to {tol_text(tol)}" + (" on the run's device" if devices > 1 else "")


def one_device_as_before(table: pd.DataFrame) -> pd.DataFrame:
    """A speed table's CSV: without the ``device`` column when every run used one device (the
    file as it was before runs recorded a device), with it when seconds of several devices mix."""
    return table if devices_in(table) > 1 else table.drop(columns="device", errors="ignore")


def run_cell(ctx: Context, run_id: str) -> Cell:
    """A run as a table cell: its short label, the full id as tooltip, a link to its MLflow page."""
    if ctx.runs is None or run_id not in ctx.runs.runs.index:
        return Cell(str(run_id), str(run_id))
    return Cell(ctx.label(run_id), run_id, ctx.mlflow_link(run_id))


def with_run_cells(ctx: Context, df: pd.DataFrame, column: str = "run_id") -> pd.DataFrame:
    """``df`` with its run-id column shown as ``run_cell``s (the CSV keeps the full ids)."""
    out = df.copy()
    out[column] = [run_cell(ctx, str(r)) for r in out[column]]
    return out


def with_percent(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every ``*accuracy`` column shown as a percentage."""
    out = df.copy()
    for c in out.columns:
        if str(c).endswith("accuracy"):
            out[c] = [Cell(pct(v), numeric=True) for v in out[c]]
    return out


def analytic_study(ctx: Context, key: str, s: Section
                   ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]] | None:
    """(study.json, table.csv, arrays.npz) of the analytic study ``report.analytic.<key>``; None,
    with a note in ``s``, when it has not been computed."""
    folder = Path(ctx.paths["analytic_dir"]) / str(ctx.rep["analytic"][key])
    try:
        return read_study(folder)
    except DataError as err:
        s.note(f"Not computed yet ({err}).")
        return None
