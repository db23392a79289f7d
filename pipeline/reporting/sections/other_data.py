"""Claim 6 on other IDX data sets (``report.accuracy_data``): accuracy against their baselines."""

from __future__ import annotations

import numpy as np

from pipeline.reporting.context import Context, slug
from pipeline.reporting.render import Section
from pipeline.reporting.sections.accuracy import COLUMNS, best_run_details, table
from pipeline.reporting.sections.common import pct, with_percent, with_run_cells

KEY = "accuracy-data"
NEEDS = "trained"
INTRO = """The homework on {title}: test accuracy of each classifier against the data set's
published linear baseline (its data YAML's reference_accuracy), with the best run's confusion
matrix, per-class accuracy and weight images, classes named as in the data set's YAML."""
TOLERANCE = 0.01


def data_section(ctx: Context, data_id: str) -> Section | None:
    """One data set's section; None when it has no evaluated runs (no empty section)."""
    acc = table(ctx, data_id)
    acc = acc[acc["data"] == data_id]
    if acc.empty:
        return None
    data = ctx.runs.configs.get(str(acc["run_id"].iloc[0]), {}).get("data", {})
    title = str(data.get("title") or data_id) if isinstance(data, dict) else data_id
    s = Section(f"accuracy-{slug(data_id)}", f"Softmax regression on {title}",
                " ".join(INTRO.split()).format(title=title))
    s.table(with_percent(with_run_cells(ctx, acc)), ctx.save_table(acc, f"accuracy-{data_id}"),
            f"Accuracy and loss on {title} per model × optimizer × preprocessing",
            {k: v for k, v in COLUMNS.items() if k != "train_loss"})
    best = acc.sort_values("test_accuracy", ascending=False).iloc[0]
    s.text(f"Best run: `{ctx.label(best['run_id'])}` with test accuracy "
           f"{pct(best['test_accuracy'])}.")
    best_run_details(ctx, s, str(best["run_id"]))
    gap = best["test_minus_reference"]
    if np.isfinite(gap):
        s.verdict(f"{'agrees' if gap >= -TOLERANCE else 'DISAGREES'} — {abs(gap) * 100:.1f} "
                  f"points {'above' if gap >= 0 else 'below'} the published "
                  f"{best['reference']} (threshold: at most 1 point below).")
    return s


def section(ctx: Context) -> list[Section]:
    """A section per data id of ``report.accuracy_data`` that has runs."""
    found = [data_section(ctx, str(d)) for d in ctx.rep.get("accuracy_data") or []]
    return [s for s in found if s is not None]
