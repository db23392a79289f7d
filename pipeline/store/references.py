"""Reference optima f*: ``<paths.reference_dir>/<objective id>.json``, written by the ``reference``
stage (``python -m pipeline.reference``, see its docstring for the fields) and read by the
report. The solve's wall-clock ``seconds`` go to ``<paths.reference_dir>/timing/<objective
id>.json`` (in ``.dvcignore``), so the reference file is the same on every rerun; the reader joins
them back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import DataError
from pipeline.store.reading import damaged, read_file
from pipeline.store.writer import check_writable, write_json

RERUN = "rerun its `python -m pipeline.reference` stage (dvc repro)"
TIMING_DIR = "timing"  # <folder>/timing/<objective id>.json: {"seconds": ...}
TIMING_KEYS = ("seconds",)


def reference_path(folder: str | Path, objective: str) -> Path:
    """``<folder>/<objective id>.json``."""
    return Path(folder) / f"{objective}.json"


def check_reference_writable(folder: str | Path, objective: str) -> Path:
    """The reference file's path, checked writable before the solve."""
    out = reference_path(folder, objective)
    check_writable(out)
    return out


def write_reference(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write one reference record (its ``objective`` names the file); returns the path."""
    out = reference_path(folder, str(record["objective"]))
    kept = {k: v for k, v in record.items() if k not in TIMING_KEYS}
    if isinstance(kept.get("prepared"), str):
        kept["prepared"] = portable_path(kept["prepared"])
    write_json(out, kept)
    write_json(timing_path(out), {k: record.get(k) for k in TIMING_KEYS})
    return out


def timing_path(reference: Path) -> Path:
    """``<folder>/timing/<objective id>.json`` of a reference file."""
    return reference.parent / TIMING_DIR / reference.name


def portable_path(path: str) -> str:
    """A path below the current directory (the project) relative to it, so a file naming it is the
    same in every clone; any other path as given."""
    rel = os.path.relpath(os.path.abspath(path))
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else Path(rel).as_posix()


def read_reference(path: Path) -> Reference:
    """One reference file as a ``Reference``; a damaged file is a one-line DataError."""
    d = read_file(
        path,
        lambda p: json.loads(p.read_text(encoding="utf-8")),
        "unreadable reference optimum",
        RERUN,
        damage=(OSError, ValueError),
    )
    timing = timing_path(Path(path))
    if "seconds" not in d and timing.is_file():
        t = read_file(timing, lambda p: json.loads(p.read_text(encoding="utf-8")),
                      "unreadable timing", RERUN, damage=(OSError, ValueError))
        d["seconds"] = t.get("seconds") if isinstance(t, dict) else None
    try:
        return Reference(
            objective=str(d["objective"]),
            f_star=float(d["f_star"]),
            status=str(d["status"]),
            source=str(d["method"]),
            grad_norm=float(d["grad_norm"]),
            solved_in=d.get("solved_in"),
            iterations=d.get("iterations"),
            seconds=d.get("seconds"),
            coordinates=dict(d.get("coordinates") or {}),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise damaged(path, "unreadable reference optimum", err, RERUN) from None


@dataclass
class Reference:
    """f* = min_w f(w) for one objective, how it was obtained, and the curvature at w* per
    coordinates."""

    objective: str
    f_star: float
    status: str  # converged | max_iter | stalled | ... ; 'best run' when no reference file exists
    source: str  # newton | newton_cg (the reference solve) | best run
    grad_norm: float | None = None
    solved_in: str | None = None
    iterations: int | None = None
    seconds: float | None = None
    coordinates: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # preprocess id -> mu, L_local, kappa, ...
    note: str = ""

    @property
    def certified(self) -> bool:
        """A converged reference solve (not a run's best loss) backs this f*."""
        return self.source != "best run" and self.status == "converged"

    def curvature(self, preprocess: str) -> dict[str, Any]:
        """μ, L_local, κ, L_bound of ∇²f(w*) in a preprocessing's coordinates ({} where not
        computed)."""
        return dict(self.coordinates.get(str(preprocess), {}))


def load_references(folder: str | Path) -> tuple[dict[str, Reference], list[str]]:
    """Every ``<folder>/*.json`` reference keyed by objective id; unreadable files become notes."""
    refs: dict[str, Reference] = {}
    notes: list[str] = []
    root = Path(folder)
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            ref = read_reference(path)
        except DataError as err:
            notes.append(str(err))
            continue
        refs[ref.objective] = ref
    return refs, notes


def reference_table(refs: dict[str, Reference]) -> pd.DataFrame:
    """One row per (objective, coordinates): f*, ‖∇f‖, status of its solve; μ, L, κ of ∇²f(w*)
    there."""
    rows = []
    for oid, r in sorted(refs.items()):
        coords = r.coordinates or {r.solved_in or "": {}}
        for pre, c in coords.items():
            rows.append(
                {
                    "objective": oid,
                    "coordinates": pre,
                    "solved_in": r.solved_in,
                    "method": r.source,
                    "status": r.status,
                    "iterations": r.iterations,
                    "f_star": r.f_star,
                    "grad_norm": r.grad_norm,
                    "f_here": c.get("f"),
                    "grad_norm_here": c.get("grad_norm"),
                    "mu": c.get("mu"),
                    "L_local": c.get("L_local"),
                    "kappa": c.get("kappa"),
                    "L_bound": c.get("L_bound"),
                    "seconds": r.seconds,
                    "note": r.note,
                }
            )
    cols = [
        "objective",
        "coordinates",
        "solved_in",
        "method",
        "status",
        "iterations",
        "f_star",
        "grad_norm",
        "f_here",
        "grad_norm_here",
        "mu",
        "L_local",
        "kappa",
        "L_bound",
        "seconds",
        "note",
    ]
    return pd.DataFrame(rows, columns=cols)
