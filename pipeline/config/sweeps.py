"""Launcher and sweeper settings of a multirun, checked before any job, MLflow run or study
starts."""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import ConfigError

# (key under hydra., the smallest allowed value, what to write instead)
COUNTS = (
    ("launcher.n_jobs", None, "a positive number of parallel jobs, or -1 for one per CPU core"),
    ("sweeper.n_trials", 1, "at least 1 trial, e.g. hydra.sweeper.n_trials=20"),
    ("sweeper.n_jobs", 1, "at least 1 trial at a time, e.g. hydra.sweeper.n_jobs=2"),
)


def _select(cfg: Any, dotted: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key in a DictConfig or mapping."""
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get") or part not in node:
            return False, None
        node = node.get(part)
    return True, node


def check_sweep_settings(hydra_cfg: Any) -> None:
    """Every count the launcher and sweeper take is an integer in range (``n_jobs`` ≠ 0, counts
    ≥ 1); else a one-line ConfigError naming the key."""
    for key, least, fix in COUNTS:
        present, value = _select(hydra_cfg, key)
        if not present or value is None:
            continue
        bad = isinstance(value, bool) or not isinstance(value, int)
        bad = bad or (value == 0 if least is None else value < least)
        if bad:
            raise ConfigError(f"hydra.{key}={value!r} is not allowed (use {fix})")
