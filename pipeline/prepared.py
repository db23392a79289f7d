"""The prepared-data files written by ``python -m pipeline.prepare`` and read by the later stages.

``<prepared_dir>/<data.id>-<preprocess.id>.npz`` holds ``X_train, y_train, X_test, y_test``, the
transform's arrays under ``transform/…`` and ``spectrum_before/after`` (eigenvalues, descending,
of the MSE Hessian (1/n) X̃ᵀX̃ before / after the transform); the ``.json`` beside it holds facts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.datasets import Dataset
from pipeline.errors import DataError
from pipeline.preprocessing import Transform

_PREFIX = "transform/"
_ARRAYS = ("X_train", "y_train", "X_test", "y_test", "spectrum_before", "spectrum_after")


def preprocess_id(preprocess_cfg: Mapping[str, Any]) -> str:
    """The preprocessing's short name in file and run names: ``preprocess.id``, else ``preprocess.name``."""
    return str(preprocess_cfg.get("id") or preprocess_cfg.get("name") or "none")


def prepared_stem(data_cfg: Mapping[str, Any], preprocess_cfg: Mapping[str, Any]) -> str:
    """``<data.id>-<preprocess.id>``, e.g. ``mnist-whiten`` (the shared prefix of run names too)."""
    return f"{data_cfg['id']}-{preprocess_id(preprocess_cfg)}"


def prepared_path(
    prepared_dir: str | Path, data_cfg: Mapping[str, Any], preprocess_cfg: Mapping[str, Any]
) -> Path:
    """Path of the ``.npz`` for a (data, preprocess) pair; the facts are ``.with_suffix('.json')``."""
    return Path(prepared_dir) / f"{prepared_stem(data_cfg, preprocess_cfg)}.npz"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mkstemp(target: Path) -> tuple[int, str]:
    """A temp file beside ``target`` with the permissions a plain ``open`` would give (not 0600)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.chmod(name, 0o666 & ~_umask())
    return fd, name


def save_prepared(
    path: str | Path,
    dataset: Dataset,
    transform: Transform,
    spectrum_before: np.ndarray,
    spectrum_after: np.ndarray,
    facts: Mapping[str, Any],
) -> None:
    """Write the ``.npz`` and ``.json`` atomically (temp files in the same folder, then ``os.replace``)."""
    npz = Path(path)
    js = npz.with_suffix(".json")
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "X_train": dataset.X_train,
        "y_train": dataset.y_train,
        "X_test": dataset.X_test,
        "y_test": dataset.y_test,
        "spectrum_before": np.asarray(spectrum_before, dtype=np.float64),
        "spectrum_after": np.asarray(spectrum_after, dtype=np.float64),
    }
    arrays.update({_PREFIX + k: v for k, v in transform.to_arrays().items()})
    text = json.dumps(dict(facts), indent=2, allow_nan=False) + "\n"
    tmps: list[str] = []
    try:
        fd, tmp_npz = _mkstemp(npz)
        tmps.append(tmp_npz)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # a file object: np.savez adds no suffix
        fd, tmp_js = _mkstemp(js)
        tmps.append(tmp_js)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp_npz, npz)
        os.replace(tmp_js, js)
    finally:
        for t in tmps:
            Path(t).unlink(missing_ok=True)


def load_prepared(path: str | Path) -> tuple[Dataset, Transform, dict[str, Any]]:
    """Read a prepared ``.npz`` (or its ``.json``/stem) back as (Dataset, Transform, facts); no pickles."""
    p = Path(path)
    npz, js = p.with_suffix(".npz"), p.with_suffix(".json")
    for f in (npz, js):
        if not f.is_file():
            raise DataError(
                f"{f}: prepared data not found; run `python -m pipeline.prepare` (or `dvc repro`) first"
            )
    try:
        facts = json.loads(js.read_text(encoding="utf-8"))
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(
            f"{npz}: unreadable prepared data ({err}); delete it and rerun `python -m pipeline.prepare`"
        ) from None
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise DataError(
            f"{npz}: lacks array {missing[0]}; delete it and rerun `python -m pipeline.prepare`"
        )
    transform = Transform.from_arrays(
        {k[len(_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
    )
    dataset = Dataset(
        X_train=arrays["X_train"],
        y_train=arrays["y_train"],
        X_test=arrays["X_test"],
        y_test=arrays["y_test"],
        task=str(facts.get("task")),
        n_classes=facts.get("n_classes"),
        name=str(facts.get("data_name", facts.get("data"))),
        meta=dict(facts.get("meta", {})),
    )
    facts["spectrum_before"] = arrays["spectrum_before"]
    facts["spectrum_after"] = arrays["spectrum_after"]
    return dataset, transform, facts
