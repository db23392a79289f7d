"""The report's sections in page order: each module has ``KEY``, ``NEEDS`` (the
``report.sections`` entry that enables it, None = always) and ``section(ctx) -> list[Section]``
(empty: nothing to show). Adding a section = one module + one entry in ``ORDER``."""

from __future__ import annotations

from types import ModuleType

from pipeline.reporting.sections import (
    abstract,
    accuracy,
    claim1,
    claim2,
    claim3,
    claim4,
    claim5,
    claim7,
    conditioning,
    headline,
    homework,
    other_data,
    overview,
    provenance,
    references,
    speed,
    zscore,
)

ORDER: list[ModuleType] = [
    abstract,      # the answers in numbers, from the headline table
    headline,      # optimizer × preprocessing → cost to each tolerance
    overview,      # the runs the page is built from
    claim1,        # learning rate
    claim2,        # condition number κ
    conditioning,  # spectra raw / z-scored / whitened
    zscore,        # why z-scoring slows GD (measured)
    claim3,        # convexity
    claim4,        # bad initialization
    claim5,        # Newton vs GD
    accuracy,      # claim 6: MNIST accuracy
    other_data,    # claim 6 on report.accuracy_data
    claim7,        # Newton inspired Adam
    homework,      # tuned SGD
    speed,         # every other run's convergence, the speed table
    references,    # f* per objective
    provenance,    # commit, presets, MLflow
]
