"""The read-only context every report section is a function of, built once from the store's readers.

``Context`` holds the configuration, the gathered runs, the reference optima matched to them, the
speed table (computed once, here) and the output folder; sections read it and return ``Section``s.
Figure and table paths come from ``figure_path`` / ``save_table`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.reporting import analysis
from pipeline.reporting.gather import RunSet
from pipeline.store.references import Reference, load_references

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def slug(*parts: Any) -> str:
    """A file-name-safe name from parts."""
    return _SAFE.sub("_", "-".join(str(p) for p in parts)).strip("_")


def figure_path(out: Path, name: str) -> tuple[Path, str]:
    """(absolute path, path relative to the report folder) of the figure ``name``."""
    rel = f"figures/{slug(name)}.png"
    return out / rel, rel


def short_label(data: Any, preprocess: Any, optimizer: Any) -> str:
    """A run as a reader names it: ``data · preprocess · optimizer``."""
    return f"{data} · {preprocess} · {optimizer}"


@dataclass(frozen=True)
class Context:
    """Everything a section may read; sections never write into it."""

    out: Path
    cfg: Mapping[str, Any]
    runs: RunSet | None = None
    all_refs: Mapping[str, Reference] = field(default_factory=dict)
    refs: Mapping[str, Reference] = field(default_factory=dict)
    ref_notes: Sequence[str] = ()
    speed: pd.DataFrame = field(default_factory=pd.DataFrame)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rep(self) -> Mapping[str, Any]:
        """The ``report`` options."""
        return self.cfg["report"]

    @property
    def paths(self) -> Mapping[str, Any]:
        """The ``paths`` options (absolute)."""
        return self.cfg["paths"]

    @property
    def tols(self) -> list[float]:
        """The relative tolerances of the speed tables."""
        return [float(t) for t in self.rep["tolerances"]]

    @property
    def has_runs(self) -> bool:
        """Whether any trained run was gathered."""
        return self.runs is not None and len(self.runs) > 0

    def figure(self, name: str) -> tuple[Path, str]:
        """``figure_path`` in this report's folder."""
        return figure_path(self.out, name)

    def save_table(self, df: pd.DataFrame, name: str) -> str:
        """Write ``df`` as ``tables/<name>.csv`` (typed columns, no index); its relative path."""
        rel = f"tables/{slug(name)}.csv"
        (self.out / "tables").mkdir(parents=True, exist_ok=True)
        df.to_csv(self.out / rel, index=False)
        return rel

    def label(self, run_id: str) -> str:
        """The short label of a gathered run."""
        r = self.runs.runs.loc[run_id] if self.runs is not None else {}
        return short_label(r["data"], r["preprocess"], r["optimizer"])

    def mlflow_link(self, run_id: str) -> str | None:
        """The run's MLflow page (``provenance['mlflow_ui']`` + the run's MLflow id), if known."""
        base = self.provenance.get("mlflow_ui")
        if not base or self.runs is None or run_id not in self.runs.runs.index:
            return None
        mid = self.runs.runs.loc[run_id].get("mlflow_run_id")
        return f"{base}/#/runs/{mid}" if isinstance(mid, str) and mid else None


def build_context(out: Path, cfg: Mapping[str, Any], runs: RunSet | None,
                  provenance: Mapping[str, Any] | None = None) -> Context:
    """Read the reference optima, match them to the runs, compute the speed table once."""
    if runs is None or len(runs) == 0:
        all_refs, notes = load_references(cfg["paths"]["reference_dir"])
        return Context(out, cfg, runs, all_refs, {}, tuple(notes), pd.DataFrame(),
                       dict(provenance or {}))
    all_refs, notes = load_references(cfg["paths"]["reference_dir"])
    matched, more = analysis.match_references(runs, all_refs)
    tols = [float(t) for t in cfg["report"]["tolerances"]]
    speed = analysis.speed_table(runs, matched, tols)
    return Context(out, cfg, runs, all_refs, matched, tuple(notes + more), speed,
                   dict(provenance or {}))
