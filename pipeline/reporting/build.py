"""Assemble the page: every enabled section of ``sections.ORDER``, in order, from one context."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections import ORDER


@dataclass
class Built:
    sections: list[Section]
    timings: dict[str, float]


def build(ctx: Context, enabled: set[str]) -> Built:
    """The sections of ``ORDER`` whose ``NEEDS`` is enabled (trained-run sections only with runs),
    empty ones left out; seconds per section."""
    out: list[Section] = []
    timings: dict[str, float] = {}
    for mod in ORDER:
        needs = mod.NEEDS
        if needs is not None and needs not in enabled:
            continue
        if needs == "trained" and not ctx.has_runs:
            continue
        t0 = time.perf_counter()
        out += mod.section(ctx)
        timings[mod.KEY] = time.perf_counter() - t0
    return Built(out, timings)
