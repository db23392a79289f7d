"""Run directories: names derived from the config (files are written by ``pipeline.store.writer``).

A run lives in ``experiments/<study>/<data.id>-<preprocess.id>-<model.id>-<optimizer.id>[,key=value...]``
(docs/architecture.md). The ids are the conf/ file names (``optimizer=gd_armijo`` gives
``gd_armijo``; a null id falls back to ``name``); every non-group override that changes the result
(``optimizer.lr=0.1``, ``model.l2=0``, ``seed=3`` ...) is appended as ``,key=value`` in key order,
so the runs of a sweep never overwrite each other. Relative paths are relative to the current
directory (Hydra does not change it), as in ``pipeline.prepare``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config.paths import project_path
from pipeline.core.errors import ConfigError, DataError
from pipeline.spec import group_id, run_name

MAX_NAME_BYTES = 240  # a folder name (most file systems allow 255 bytes)


def run_dir(cfg: Any, overrides: Sequence[str] = ()) -> Path:
    """``<experiments_dir>/<study>/<run name>`` (absolute), checked to be a safe path inside it."""
    from pipeline.config.checks import check_inside, check_name

    root = project_path(cfg.paths.experiments_dir)
    name = run_name(cfg, overrides)
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"the run name {name[:80]}... is {len(name.encode())} bytes, too long for a "
                          f"folder name (max {MAX_NAME_BYTES}); override fewer keys or use shorter ids")
    path = root / check_name("study", cfg.study) / name
    check_inside(path, root, "study / the group ids")
    return path


def prepared_path(cfg: Any) -> Path:
    """``<prepared_dir>/<data.id>-<preprocess.id>.npz`` as written by ``python -m pipeline.prepare``."""
    from pipeline.config.checks import check_name

    data_id = check_name("data.id", cfg.data.id)
    pre_id = check_name("preprocess.id", group_id(cfg.preprocess))
    return project_path(cfg.paths.prepared_dir) / f"{data_id}-{pre_id}.npz"


# ---------------------------------------------------------------- a run's inputs


TASK_OF_MODEL = {"linear": "regression", "logistic": "binary", "logistic_mse": "binary",
                 "softmax": "multiclass"}


def _override(key: str, value: Any) -> str:
    """``key=value`` as a Hydra command-line override (lists without spaces, null, true/false)."""
    def text(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ",".join(text(x) for x in v) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return f"{key}={text(value)}"


def _prepare_cmd(cfg: Any) -> str:
    """The ``prepare`` command that makes the run's prepared file: its data and preprocess choices
    and every ``data.*`` value that differs from ``conf/data/<name>.yaml``."""
    from pipeline.config.schemas import as_kwargs
    from pipeline.data.catalog import data_config

    want = as_kwargs(cfg.data)
    try:
        declared = data_config(str(cfg.data.name))
    except ConfigError:  # a data set declared outside conf/data/ (hydra.searchpath)
        declared = want
    changed = [_override(f"data.{k}", v) for k, v in want.items()
               if k != "name" and declared.get(k) != v]
    return " ".join([f"python -m pipeline.prepare data={cfg.data.name}",
                     f"preprocess={cfg.preprocess.get('id') or cfg.preprocess.name}", *changed])


def load_prepared_for(cfg: Any) -> tuple[Any, Any, dict[str, Any], Path]:
    """The prepared data set named by the config, checked against it, or a DataError saying how to make it."""
    from pipeline.config.schemas import as_kwargs
    from pipeline.store.prepared import load_prepared

    path = prepared_path(cfg)
    if not path.exists():
        raise DataError(f"prepared data {path} not found; run `{_prepare_cmd(cfg)}` "
                        "(with the same preprocess.* and paths.* overrides) first, or `dvc repro`")
    dataset, transform, facts = load_prepared(path)
    for group in ("data", "preprocess"):
        made = facts.get(f"{group}_config") or {}
        want = as_kwargs(cfg[group])
        for key in sorted(set(made) & set(want) - {"root"}):
            if made[key] != want[key]:
                given = "" if group == "data" else f" {_override(f'{group}.{key}', want[key])}"
                raise DataError(
                    f"{path} was prepared with {group}.{key}={made[key]!r} but this run asks for "
                    f"{want[key]!r}; rerun `{_prepare_cmd(cfg)}{given}` (give it its "
                    f"own {group}.id to keep both)")
    if (cfg.data.get("val_fraction") or 0) > 0 and "X_val" not in facts:
        raise DataError(f"{path} has no validation split but data.val_fraction={cfg.data.val_fraction}; "
                        f"rerun `{_prepare_cmd(cfg)}`")
    return dataset, transform, dict(facts), path


def check_model_fits_data(model: str, task: str, data_id: str) -> None:
    """Each model needs its kind of labels (regression targets, two classes, c classes)."""
    want = TASK_OF_MODEL[model]
    if task != want:
        hint = {"regression": "data=synthetic_regression", "binary": "data=mnist_binary",
                "multiclass": "data=mnist"}[want]
        raise ConfigError(f"model={model} needs a {want} data set but data {data_id!r} is {task}; "
                          f"use {hint} or another model")


# ---------------------------------------------------------------- files (written by pipeline.store.writer)


RETRAIN = "retrain the run (python -m pipeline.train with the same overrides) or delete its folder"


def damaged(path: Path | str, what: str, err: BaseException | None = None, fix: str = RETRAIN) -> DataError:
    """The one-line error for a run file that exists but cannot be used."""
    why = f" ({' '.join(str(err).split())[:200] or type(err).__name__})" if err is not None else ""
    return DataError(f"{path}: {what}{why}; {fix}")


def read_json(path: Path | str, fix: str = RETRAIN) -> dict[str, Any]:
    """A JSON object from disk; missing, unreadable or malformed is a one-line DataError."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found; {fix}") from None
    except PermissionError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); make it readable (chmod u+r)") from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise damaged(path, "not a valid UTF-8 JSON file", err, fix) from None
    if not isinstance(data, dict):
        raise damaged(path, f"expected a JSON object, found {type(data).__name__}", None, fix)
    return data


RUN_CONFIG_GROUPS = ("data", "preprocess", "model", "optimizer")


def read_run_config(path: Path | str) -> Any:
    """A run's ``config.yaml`` as a DictConfig with its groups; else a one-line DataError."""
    from omegaconf import DictConfig, OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise DataError(f"{path} not found; {RETRAIN}") from None
    except PermissionError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); make it readable (chmod u+r)") from None
    except Exception as err:  # noqa: BLE001 - yaml.YAMLError, UnicodeDecodeError, OmegaConf errors
        raise damaged(path, "not a valid YAML config", err) from None
    if not isinstance(cfg, DictConfig) or any(not isinstance(cfg.get(g), DictConfig)
                                               for g in RUN_CONFIG_GROUPS):
        raise damaged(path, f"not a run config (needs the groups {', '.join(RUN_CONFIG_GROUPS)})")
    return cfg


def read_weights(path: Path | str) -> Any:
    """The flat weight vector ``w`` of a run's ``weights.npz``; else a one-line DataError."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            w = np.asarray(z["w"])
    except FileNotFoundError:
        raise DataError(f"{path} not found; {RETRAIN}") from None
    except PermissionError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); make it readable (chmod u+r)") from None
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, KeyError, ValueError: damaged
        raise damaged(path, "unreadable weights", err) from None
    if w.ndim != 1 or not np.issubdtype(w.dtype, np.floating) or not np.isfinite(w).all():
        raise damaged(path, f"w must be a finite float vector (found {w.dtype} {w.shape})")
    return w
