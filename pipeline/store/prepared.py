"""The prepared-data files written by ``python -m pipeline.prepare`` and read by the later stages.

``<prepared_dir>/<data.id>-<preprocess.id>.npz`` holds ``X_train, y_train, X_test, y_test``, the
transform's arrays under ``transform/…`` and ``spectrum_before/after`` (eigenvalues, descending,
of the MSE Hessian (1/n) X̃ᵀX̃ before / after the transform); the ``.json`` beside it holds facts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.transforms import Transform
from pipeline.data.datasets import Dataset
from pipeline.store.writer import npz_writer, write_group

_PREFIX = "transform/"
_FACTS_DIGEST = "facts_sha256"  # SHA-256 of the .json written together with this .npz
_ARRAYS = ("X_train", "y_train", "X_test", "y_test", "spectrum_before", "spectrum_after")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes (a prepared file's identity in MLflow and the reference optima)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def save_prepared(
    path: str | Path,
    dataset: Dataset,
    transform: Transform,
    spectrum_before: np.ndarray,
    spectrum_after: np.ndarray,
    facts: Mapping[str, Any],
    extra: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write the ``.npz`` and ``.json`` atomically as a pair (``pipeline.store.writer.write_group``);
    ``extra`` arrays (the validation split ``X_val``, ``y_val``) are stored beside the splits."""
    npz = Path(path)
    js = npz.with_suffix(".json")
    arrays: dict[str, np.ndarray] = {
        "X_train": dataset.X_train,
        "y_train": dataset.y_train,
        "X_test": dataset.X_test,
        "y_test": dataset.y_test,
        "spectrum_before": np.asarray(spectrum_before, dtype=np.float64),
        "spectrum_after": np.asarray(spectrum_after, dtype=np.float64),
    }
    arrays.update({_PREFIX + k: v for k, v in transform.to_arrays().items()})
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    text = json.dumps(dict(facts), indent=2, allow_nan=False) + "\n"
    # the pair belongs together: the .npz carries the digest of the .json written with it
    arrays[_FACTS_DIGEST] = np.asarray(hashlib.sha256(text.encode("utf-8")).hexdigest())
    write_group({npz: npz_writer(arrays), js: lambda t: t.write_text(text, encoding="utf-8")})


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


VAL_ARRAYS = ("X_val", "y_val")


def load_prepared(path: str | Path) -> tuple[Dataset, Transform, dict[str, Any]]:
    """Read a prepared ``.npz`` (or its ``.json``/stem) back as (Dataset, Transform, facts); no pickles."""
    p = Path(path)
    npz, js = p.with_suffix(".npz"), p.with_suffix(".json")
    for f in (npz, js):
        if not f.is_file():
            raise DataError(
                f"{f}: prepared data not found; run `python -m pipeline.prepare` (or `dvc repro`) first"
            )
    redo = "delete it and rerun `python -m pipeline.prepare` (or `dvc repro`)"
    try:
        raw = js.read_bytes()
        facts = json.loads(raw.decode("utf-8"))
    except PermissionError as err:
        raise DataError(f"{js}: cannot read it ({err.strerror}); make it readable (chmod u+r)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{js}: unreadable prepared facts ({_short(err)}); {redo}") from None
    if not isinstance(facts, dict):
        raise DataError(f"{js}: expected a JSON object of facts, found {type(facts).__name__}; {redo}")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except PermissionError as err:
        raise DataError(f"{npz}: cannot read it ({err.strerror}); make it readable (chmod u+r)") from None
    except Exception as err:  # noqa: BLE001 - BadZipFile, zlib/EOF/ValueError: a damaged file
        raise DataError(f"{npz}: unreadable prepared data ({_short(err)}); {redo}") from None
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"{npz}: lacks array {missing[0]}; {redo}")
    digest = arrays.pop(_FACTS_DIGEST, None)
    if digest is not None and str(digest) != hashlib.sha256(raw).hexdigest():
        raise DataError(f"{js} does not belong to {npz} (written by different prepare runs); {redo}")
    X_tr, y_tr, X_te, y_te = (arrays[k] for k in ("X_train", "y_train", "X_test", "y_test"))
    if (X_tr.ndim != 2 or X_te.ndim != 2 or y_tr.shape != (X_tr.shape[0],)
            or y_te.shape != (X_te.shape[0],) or X_tr.shape[1] != X_te.shape[1]):
        raise DataError(f"{npz}: inconsistent array shapes X_train {X_tr.shape}, y_train {y_tr.shape}, "
                        f"X_test {X_te.shape}, y_test {y_te.shape}; {redo}")
    try:
        transform = Transform.from_arrays(
            {k[len(_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
        )
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise DataError(f"{npz}: damaged transform arrays ({_short(err)}); {redo}") from None
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
    for k in VAL_ARRAYS:  # the validation split, when data.val_fraction > 0
        if k in arrays:
            facts[k] = arrays[k]
    return dataset, transform, facts
