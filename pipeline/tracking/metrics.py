"""The MLflow metrics of a run: names, per-step points with their own clock, suboptimality.

One name per meaning: ``objective`` is f(w) with the penalty (the solver's loss), ``data_loss`` the
training data loss without it (``pipeline.evaluate``), ``subopt`` = f − f* and ``rel_subopt`` =
(f − f*)/|f*| against the reference optimum of the run's objective. A history point at iteration
k is logged at step k with timestamp = run start + the run's own clock ``time_s[k]``, so MLflow's
"Time (Relative)" axis shows the seconds the optimizer took.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# history column → MLflow metric (the loss the solver minimizes is the objective f)
HISTORY_METRICS = {"loss": "objective", "grad_norm": "grad_norm", "step_size": "step_size",
                   "time_s": "time_s", "passes": "passes"}
# final values of metrics.json logged once (the history already holds objective, grad_norm, passes)
FINAL_METRICS = ("train_time_s", "iterations", "train_accuracy", "test_accuracy", "test_loss",
                 "val_accuracy", "val_loss")
SUBOPT, REL_SUBOPT = "subopt", "rel_subopt"


@dataclass(frozen=True)
class Point:
    """One metric value: ``key`` at ``step``, logged at ``timestamp`` (ms since the epoch)."""

    key: str
    value: float
    timestamp: int
    step: int


def history_points(history: Mapping[str, Any], start_ms: int) -> list[Point]:
    """The step metrics of a history: step k at ``start_ms + 1000·time_s[k]`` (ms, rounded)."""
    steps = np.asarray(history["iteration"], dtype=np.int64)
    clock = history.get("time_s")
    secs = np.zeros(len(steps)) if clock is None else np.asarray(clock, dtype=np.float64)
    stamps = [start_ms + (int(round(1000.0 * s)) if math.isfinite(s) else 0) for s in secs]
    return [Point(name, float(v), t, int(k)) for col, name in HISTORY_METRICS.items()
            if col in history
            for k, v, t in zip(steps, np.asarray(history[col], dtype=np.float64), stamps,
                               strict=True)]


def final_points(metrics: Mapping[str, Any], timestamp: int) -> list[Point]:
    """The final values (``FINAL_METRICS`` that are numbers) as one point each at step 0."""
    return [Point(k, float(metrics[k]), timestamp, 0) for k in FINAL_METRICS
            if isinstance(metrics.get(k), int | float | np.number)
            and not isinstance(metrics.get(k), bool)]


def subopt_points(objective: Sequence[Point], f_star: float) -> list[Point]:
    """``subopt`` = f − f* and ``rel_subopt`` = (f − f*)/|f*| (f* ≠ 0) at the steps and times of
    the ``objective`` points; non-finite f is skipped."""
    out: list[Point] = []
    for p in objective:
        if not math.isfinite(p.value):
            continue
        gap = p.value - f_star
        out.append(Point(SUBOPT, gap, p.timestamp, p.step))
        if f_star != 0.0:
            out.append(Point(REL_SUBOPT, gap / abs(f_star), p.timestamp, p.step))
    return out
