"""Launcher and sweeper settings of a multirun, checked before any job, MLflow run or study
starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


# ---------------------------------------------------------------- what a sweep varies

# the config groups/keys a prepared file depends on (the rest of a sweep trains on the same file)
PREPARED_BY = ("data", "preprocess")


def override_key(override: str) -> str:
    """The key of a ``key=value`` override (``+``/``~`` dropped)."""
    return str(override).partition("=")[0].lstrip("+~")


def swept(overrides: Sequence[str], sweeper_params: Mapping[str, Any] | None) -> dict[str, str]:
    """Key → values of every swept key of a multirun: the preset's ``hydra.sweeper.params``, then
    the command line's sweep overrides (``optimizer=gd,newton_cg``; they win)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = {str(k): str(v) for k, v in (sweeper_params or {}).items()}
    texts = [str(o) for o in overrides]
    for text, ov in zip(texts, OverridesParser.create().parse_overrides(texts), strict=True):
        key = ov.get_key_element()
        if ov.is_sweep_override():
            found[key] = text.partition("=")[2]
        else:
            found.pop(key, None)  # a fixed value on the command line replaces the preset's sweep
    return found


def sweep_title(study: str, sweeps: Mapping[str, str]) -> str:
    """``<study>: key=v1,v2 × key=...`` (the sweep's parent run name), ``<study>: sweep``
    without swept keys."""
    body = " × ".join(f"{k}={v.replace(' ', '')}" for k, v in sweeps.items())
    return f"{study}: {body or 'sweep'}"


def prepared_variants(overrides: Sequence[str], sweeper_params: Mapping[str, Any] | None,
                      retrain_data_ids: Sequence[str] = ()) -> list[list[str]]:
    """The extra overrides of every prepared file a preset's sweep reads: the product of its swept
    ``data``/``preprocess`` values (finite sweeps only), each also with ``data.id=<id>
    data.val_fraction=0.0`` for a retrain on ``<id>``; ``[[]]`` when it sweeps none of them."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = {override_key(o) for o in overrides}
    parser = OverridesParser.create()
    axes = []
    for key, values in swept([], sweeper_params).items():
        if key.split(".")[0] not in PREPARED_BY or key in given:
            continue
        ov = parser.parse_override(f"{key}={values}")
        try:
            axes.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        except Exception:  # noqa: BLE001 - an interval() sweep: no finite list of files
            continue
    combos = [list(c) for c in itertools.product(*axes)]
    retrains = [[f"data.id={d}", "data.val_fraction=0.0"] for d in retrain_data_ids
                if "data.id" not in given]
    return combos + [c + r for r in retrains for c in combos]
