"""The MLflow params of a train run: the config keys that apply to its data set, preprocessing,
model and optimizer (a Newton-CG run on MNIST logs no SGD batch size, no synthetic-data keys)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TOP_KEYS = ("study", "seed", "score_test", "sweep_metric")
DATA_KEYS = {"": ("name", "id", "format", "n_train", "n_test", "val_fraction"),
             "idx": ("title", "scale", "classes"),
             "synthetic_regression": ("n_samples", "n_features", "condition_number", "noise",
                                      "test_fraction")}
PREPROCESS_KEYS = {"": ("name", "id", "penalty_space"),
                   "whiten": ("eps", "rel_threshold", "n_components", "explained_variance", "zca",
                              "augment", "ridge")}
OPTIMIZER_KEYS = ("name", "id", "lr", "max_iter", "tol", "time_budget_s", "init", "init_scale",
                  "line_search")
LINE_SEARCH_KEYS = ("armijo_c", "backtrack")
NEWTON_CG_KEYS = ("cg_max_iter", "preconditioner", "hvp_precision")


def _text(value: Any) -> str:
    """An MLflow param value: ``null`` for None, else ``str``."""
    return "null" if value is None else str(value)


def _pick(group: str, node: Mapping[str, Any], keys: Any) -> dict[str, str]:
    """``{"<group>.<key>": value}`` for the keys of ``node`` among ``keys``."""
    return {f"{group}.{k}": _text(node[k]) for k in keys if k in node}


def optimizer_keys(node: Mapping[str, Any]) -> tuple[str, ...]:
    """The optimizer keys its method reads: the loop's, the line search's when on (L-BFGS: always,
    armijo_c is its c1), Newton-CG's inner solve, and the method's own (``METHOD_DEFAULTS``)."""
    from pipeline.core.solvers import METHOD_DEFAULTS

    method = str(node.get("name"))
    keys = list(OPTIMIZER_KEYS)
    if node.get("line_search") or method == "lbfgs":
        keys += LINE_SEARCH_KEYS
    if method == "newton_cg":
        keys += NEWTON_CG_KEYS
    keys += [k for k in METHOD_DEFAULTS.get(method, {}) if k != "seed"]
    return tuple(keys)


def run_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The params of a resolved train config: top-level run keys, the data keys of its format,
    the preprocessing keys of its kind, every model key, the optimizer keys of its method."""
    data = config.get("data") or {}
    pre = config.get("preprocess") or {}
    out = {k: _text(config[k]) for k in TOP_KEYS if k in config}
    out |= _pick("data", data, DATA_KEYS[""] + DATA_KEYS.get(str(data.get("format")), ()))
    out |= _pick("preprocess", pre,
                 PREPROCESS_KEYS[""] + PREPROCESS_KEYS.get(str(pre.get("name")), ()))
    out |= _pick("model", config.get("model") or {}, tuple(config.get("model") or {}))
    opt = config.get("optimizer") or {}
    return out | _pick("optimizer", opt, optimizer_keys(opt))
