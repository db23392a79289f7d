"""The validation split: a seeded (and, for classification, stratified) part of the training rows,
held out before any preprocessing is fitted."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.core.errors import ConfigError


def check_val_fraction(value: Any) -> float:
    """data.val_fraction as a float in [0, 1), or a one-line ConfigError."""
    if value is None:
        return 0.0
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value < 1.0):
        raise ConfigError(f"data.val_fraction={value!r} must be a number in [0, 1), e.g. 1.0e-1 "
                          "(0 = no validation split)")
    return float(value)


def validation_split(y: NDArray[Any], fraction: float, seed: int,
                     stratify: bool) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(train rows, validation rows), both sorted: round(fraction·n_k) random rows of every class k
    (stratified) or round(fraction·n) of all rows, drawn with ``default_rng(seed)``."""
    y = np.asarray(y)
    n = y.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    if stratify:
        order = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, random within
        classes, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
        n_val = np.rint(fraction * counts).astype(np.intp)
        rank = np.arange(n) - np.repeat(starts, counts)
        is_val = rank < np.repeat(n_val, counts)
        val = np.sort(order[is_val])
    else:
        val = np.sort(perm[: int(round(fraction * n))])
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    if val.size == 0 or not mask.any():
        raise ConfigError(f"data.val_fraction={fraction} leaves {val.size} validation and "
                          f"{int(mask.sum())} training rows of {n}; choose a fraction that keeps "
                          "both")
    return np.flatnonzero(mask), val
