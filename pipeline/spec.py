"""The objective of a run: built once from its config (``model``, ``preprocess``) and its prepared data.

Every stage that needs "the function this run minimizes" (train, evaluate, the reference optima)
calls ``run_objective``; the rules that turn a config into an objective live here only:
the intercept is fitted unless the model has none or the transform already absorbs the bias.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.core.objectives import LinearModelObjective, make_objective

GROUPS = ("data", "preprocess", "model", "optimizer")
# Overrides that change where or how a run is recorded, not what it computes: no name suffix.
_NOT_IN_NAME = ("study", "progress", "fail_on_diverged", "run_dir", "paths.", "mlflow.", "hydra.",
                "data.root", "experiment")
_SAFE = re.compile(r"[^A-Za-z0-9_.+=-]")


def name_suffix(overrides: Sequence[str]) -> str:
    """``,key=value`` for each non-group override that changes the result, sorted by key."""
    parts: dict[str, str] = {}
    for ov in overrides:
        key, sep, value = str(ov).partition("=")
        key = key.lstrip("+~")
        if not sep or "/" in key or key in GROUPS or key.startswith(_NOT_IN_NAME):
            continue
        parts[key] = _SAFE.sub("_", value.strip().strip("'\""))
    return "".join(f",{k}={parts[k]}" for k in sorted(parts))


def group_id(node: Any) -> str:
    """A group's short name: its ``id``, else its ``name``."""
    return str(node.get("id") or node.get("name"))


def run_name(cfg: Any, overrides: Sequence[str] = ()) -> str:
    """``<data.id>-<preprocess.id>-<model.id>-<optimizer.id>`` + the override suffix."""
    parts = (cfg.data.id, group_id(cfg.preprocess), group_id(cfg.model), group_id(cfg.optimizer))
    return "-".join(str(p) for p in parts) + name_suffix(overrides)


def _get(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` for a dict or DictConfig, ``default`` when absent."""
    try:
        return node.get(key, default)
    except AttributeError:
        return getattr(node, key, default)


def fits_intercept(model_cfg: Mapping[str, Any], absorbs_bias: bool) -> bool:
    """The model fits a separate intercept b: model.fit_intercept and not a bias absorbed into z."""
    return bool(_get(model_cfg, "fit_intercept", True)) and not bool(absorbs_bias)


def penalty_of(transform: Any) -> np.ndarray | None:
    """P of the penalty λ/2 tr(Wᵀ P W) on the prepared coordinates (None = I): A Aᵀ when the penalty
    acts on the input-space weights (``preprocess.penalty_space=input``), so every preprocessing
    keeps the raw data's objective."""
    get = getattr(transform, "penalty_matrix", None)
    return None if get is None else get()


def objective_id(cfg: Mapping[str, Any], transform: Any) -> str:
    """The name of the function a run minimizes: ``<data.id>[-<preprocess.id>]-<model.name>-l2=<λ>[-nobias]``.

    Runs and reference optima with one id minimize one function of the raw inputs: with the penalty
    on the input-space weights (``preprocess.penalty_space=input``, or no transform at all) every
    preprocessing of a data set is the same objective in other coordinates, so the preprocessing is
    not part of the id; with ``penalty_space=transformed`` it is, and so it is for a model without a
    bias on coordinates with an offset (z-scoring's −μ/σ acts as a bias tied to W). A bias absorbed
    into z is a bias.
    """
    m, pre, data = cfg["model"], cfg["preprocess"], cfg["data"]
    has_bias = bool(_get(m, "fit_intercept", True)) or bool(getattr(transform, "absorbs_bias", False))
    own_penalty = (getattr(transform, "penalty_space", "input") == "transformed"
                   and getattr(transform, "kind", "none") != "none")
    # without a bias, an offset c ≠ 0 (z = A x + c, e.g. z-scoring) is a bias cᵀW tied to W: another objective
    offset = getattr(transform, "offset", None)
    tied_bias = not has_bias and offset is not None and bool(np.any(np.asarray(offset) != 0))
    parts = [str(_get(data, "id"))]
    if own_penalty or tied_bias:
        parts.append(str(_get(pre, "id") or _get(pre, "name")))
    parts += [str(_get(m, "name")), f"l2={float(_get(m, 'l2', 0.0)):g}"]
    return "-".join(parts) + ("" if has_bias else "-nobias")


def run_objective(cfg: Mapping[str, Any], dataset: Any, transform: Any) -> LinearModelObjective:
    """f(w) = (1/n) Σ ℓ(y_i, z_iᵀW + b) + λ/2 tr(Wᵀ P W) on the prepared training split (P = penalty_of(transform))."""
    m = cfg["model"]
    name = str(_get(m, "name"))
    return make_objective(
        name,
        dataset.X_train,
        dataset.y_train,
        l2=float(_get(m, "l2", 0.0)),
        fit_intercept=fits_intercept(m, bool(getattr(transform, "absorbs_bias", False))),
        n_classes=dataset.n_classes if name == "softmax" else None,
        dtype=np.dtype(str(_get(m, "dtype", "float64"))),
        penalty=penalty_of(transform),
    )
