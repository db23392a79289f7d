"""The prepared-data files written by ``python -m pipeline.prepare`` and read by the later stages.

``<prepared_dir>/<data.id>-<preprocess.id>.npz`` holds the inputs as stored once, compactly
(``inputs_train``, ``inputs_test``: uint8 pixels p with ``input_scale`` s, x = s·p; float64 x
for synthetic data; deflated or raw), the labels ``y_train``, ``y_test``, the validation split
as ``val_rows`` (indices into the training rows; the others are the training split), the fitted
transform's arrays under ``transform/…`` and ``spectrum_before/after`` (eigenvalues, descending,
of the MSE Hessian (1/n) X̃ᵀX̃ before / after the transform); the ``.json`` beside it holds facts.

Loading maps raw inputs (``pipeline.store.npzmap``; deflated ones are inflated) and applies
z = A(s·p) + c in float64 with the same code as preparing did (``Transform.apply``), so the
arrays a stage gets are the ones a float64 copy on disk would hold, bit for bit, at 1/8 of the
disk raw and ≈ 1/30 deflated (MNIST: 55 MB raw, 13 MB deflated, not 440 MB).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.rows import AffineRows, streams
from pipeline.core.transforms import Transform
from pipeline.data.datasets import Dataset, scale_inputs
from pipeline.spec import RunSpec
from pipeline.store.npzmap import npz_arrays
from pipeline.store.reading import damaged, read_file
from pipeline.store.writer import npz_writer, write_group

_PREFIX = "transform/"
_FACTS_DIGEST = "facts_sha256"  # SHA-256 of the .json written together with this .npz
_ARRAYS = ("inputs_train", "y_train", "inputs_test", "y_test", "spectrum_before",
           "spectrum_after")
_SCALE = "input_scale"  # s of x = s·p for stored pixels p; absent: the inputs are x
_VAL_ROWS = "val_rows"  # the validation split: indices into inputs_train
_BLOCK_ROWS = 4096  # rows transformed at a time on loading (bounds the float64 temporaries)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes (a prepared file's identity in MLflow and the reference
    optima)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def prepared_path(prepared_dir: str | Path, stem: str) -> Path:
    """``<prepared_dir>/<stem>.npz`` (stem ``<data.id>-<preprocess.id>``); the facts are
    ``.with_suffix('.json')``."""
    return Path(prepared_dir) / f"{stem}.npz"


def prepared_file(spec: RunSpec) -> Path:
    """The run's prepared ``.npz``, its ids checked to be safe file names."""
    from pipeline.config.checks import check_name

    check_name("data.id", spec.data_id)
    check_name("preprocess.id", spec.preprocess_id)
    return prepared_path(spec.prepared_dir, spec.prepared_stem)


def save_prepared(
    path: str | Path,
    inputs: Dataset,
    transform: Transform,
    spectrum_before: np.ndarray,
    spectrum_after: np.ndarray,
    facts: Mapping[str, Any],
    *,
    scale: float | None = None,
    val_rows: np.ndarray | None = None,
    compress: bool = False,
) -> None:
    """Write the ``.npz`` and ``.json`` atomically as a pair (``store.writer.write_group``).

    ``inputs`` holds the inputs as stored (uint8 pixels p, with ``scale`` s: x = s·p; float64 x
    with ``scale`` None) and every training row; ``val_rows`` (sorted indices into them) is the
    validation split, the other rows the training split. The transform is applied on loading.
    ``compress``: the inputs are deflated (else stored raw, and loading memory-maps them).
    """
    npz = Path(path)
    js = npz.with_suffix(".json")
    arrays: dict[str, np.ndarray] = {
        "inputs_train": inputs.X_train,
        "y_train": inputs.y_train,
        "inputs_test": inputs.X_test,
        "y_test": inputs.y_test,
        "spectrum_before": np.asarray(spectrum_before, dtype=np.float64),
        "spectrum_after": np.asarray(spectrum_after, dtype=np.float64),
    }
    if scale is not None:
        arrays[_SCALE] = np.asarray(scale, dtype=np.float64)
    if val_rows is not None:
        arrays[_VAL_ROWS] = np.asarray(val_rows, dtype=np.int64)
    arrays.update({_PREFIX + k: v for k, v in transform.to_arrays().items()})
    text = json.dumps(dict(facts), indent=2, allow_nan=False) + "\n"
    # the pair belongs together: the .npz carries the digest of the .json written with it
    arrays[_FACTS_DIGEST] = np.asarray(hashlib.sha256(text.encode("utf-8")).hexdigest())
    deflate = ("inputs_train", "inputs_test") if compress else ()
    write_group({npz: npz_writer(arrays, deflate),
                 js: lambda t: t.write_text(text, encoding="utf-8")})


VAL_ARRAYS = ("X_val", "y_val")
REDO = "delete it and rerun `python -m pipeline.prepare` (or `dvc repro`)"


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    return npz_arrays(path, mapped=("inputs_train", "inputs_test"))


def _facts_of(js: Path, raw: bytes) -> dict[str, Any]:
    """The facts object of a ``.json``'s bytes; else a one-line DataError."""
    try:
        facts = json.loads(raw.decode("utf-8"))
    except ValueError as err:
        raise damaged(js, "unreadable prepared facts", err, REDO) from None
    if not isinstance(facts, dict):
        raise DataError(f"{js}: expected a JSON object of facts, found {type(facts).__name__}; "
                        f"{REDO}")
    return facts


def read_facts(path: str | Path, missing: str | None = None) -> dict[str, Any]:
    """The facts ``.json`` of a prepared pair (``path``: its ``.npz``, ``.json`` or stem)."""
    js = Path(path).with_suffix(".json")
    return _facts_of(js, read_file(js, lambda f: f.read_bytes(), "unreadable prepared facts", REDO,
                                   missing=missing))



def load_prepared(path: str | Path) -> tuple[Dataset, Transform, dict[str, Any]]:
    """Read a prepared ``.npz`` (or its ``.json``/stem) back as (Dataset, Transform, facts), the
    transform applied to the stored inputs (``prepared_rows``); no pickles."""
    p = Path(path)
    npz, js = p.with_suffix(".npz"), p.with_suffix(".json")
    for f in (npz, js):
        if not f.is_file():
            raise DataError(
                f"{f}: prepared data not found; run `python -m pipeline.prepare` (or `dvc repro`) "
                "first"
            )
    raw = read_file(js, lambda f: f.read_bytes(), "unreadable prepared facts", REDO)
    facts = _facts_of(js, raw)
    arrays = read_file(npz, _npz_arrays, "unreadable prepared data", REDO)
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"{npz}: lacks array {missing[0]}; {REDO}")
    digest = arrays.pop(_FACTS_DIGEST, None)
    if digest is not None and str(digest) != hashlib.sha256(raw).hexdigest():
        raise DataError(f"{js} does not belong to {npz} (written by different prepare runs); "
                        f"{REDO}")
    _check_shapes(npz, arrays)
    try:
        transform = Transform.from_arrays(
            {k[len(_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
        )
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise damaged(npz, "damaged transform arrays", err, REDO) from None
    dataset, val = _expand(npz, arrays, transform, facts)
    facts["spectrum_before"] = arrays["spectrum_before"]
    facts["spectrum_after"] = arrays["spectrum_after"]
    if val is not None:  # the validation split, when data.val_fraction > 0
        facts.update(zip(VAL_ARRAYS, val, strict=True))
    return dataset, transform, facts


def _check_shapes(npz: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Inputs two-dimensional with a label per row and the same features; else a DataError."""
    P_tr, y_tr, P_te, y_te = (arrays[k] for k in ("inputs_train", "y_train", "inputs_test",
                                                  "y_test"))
    if (P_tr.ndim != 2 or P_te.ndim != 2 or y_tr.shape != (P_tr.shape[0],)
            or y_te.shape != (P_te.shape[0],) or P_tr.shape[1] != P_te.shape[1]):
        raise DataError(f"{npz}: inconsistent array shapes inputs_train {P_tr.shape}, y_train "
                        f"{y_tr.shape}, inputs_test {P_te.shape}, y_test {y_te.shape}; {REDO}")


def _split_rows(npz: Path, arrays: Mapping[str, np.ndarray]) -> tuple[Any, Any]:
    """(training rows, validation rows) of ``inputs_train``: (None, None) without a split."""
    if _VAL_ROWS not in arrays:
        return None, None
    n = arrays["inputs_train"].shape[0]
    val = np.asarray(arrays[_VAL_ROWS])
    if (val.ndim != 1 or val.dtype.kind not in "iu" or val.size == 0
            or not (np.all(np.diff(val) > 0) and val[0] >= 0 and val[-1] < n)):
        raise DataError(f"{npz}: {_VAL_ROWS} are not sorted row indices below {n}; {REDO}")
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def prepared_rows(transform: Transform, P: np.ndarray, scale: float | None,
                  rows: np.ndarray | None = None) -> np.ndarray | AffineRows:
    """Z = (s·P[rows]) Aᵀ + cᵀ in float64. Elementwise maps (none, zscore) go block by block (the
    same bits, peak Z plus a block) — or, for stored pixels past ``core.rows.streams``'s size,
    ``AffineRows`` (P kept as stored, rows made float64 when a product reads them: memory bounded
    by the stored size); a dense A is one product over all rows, as when prepared (BLAS sums in an
    order that depends on the shape, so blocks could move the last bit)."""
    if transform.matrix is not None:
        return transform.apply(scale_inputs(P if rows is None else P[rows], scale))
    n = P.shape[0] if rows is None else rows.shape[0]
    if streams(n, transform.n_features_out, scale):
        return AffineRows(np.ascontiguousarray(P if rows is None else P[rows]), scale, transform)
    Z = np.empty((n, transform.n_features_out), dtype=np.float64)
    for i in range(0, n, _BLOCK_ROWS):
        block = P[i : i + _BLOCK_ROWS] if rows is None else P[rows[i : i + _BLOCK_ROWS]]
        Z[i : i + _BLOCK_ROWS] = transform.apply(scale_inputs(block, scale))
    return Z


def _expand(npz: Path, arrays: Mapping[str, np.ndarray], transform: Transform,
            facts: Mapping[str, Any]) -> tuple[Dataset, tuple[np.ndarray, np.ndarray] | None]:
    """The prepared data set (and validation split) from the stored inputs and the transform."""
    scale = float(arrays[_SCALE]) if _SCALE in arrays else None
    rows, val_rows = _split_rows(npz, arrays)
    P, y = arrays["inputs_train"], arrays["y_train"]
    dataset = Dataset(
        X_train=prepared_rows(transform, P, scale, rows),
        y_train=y if rows is None else y[rows],
        X_test=prepared_rows(transform, arrays["inputs_test"], scale),
        y_test=arrays["y_test"],
        task=str(facts.get("task")),
        n_classes=facts.get("n_classes"),
        name=str(facts.get("data_name", facts.get("data"))),
        meta=dict(facts.get("meta", {})),
    )
    if val_rows is None:
        return dataset, None
    return dataset, (prepared_rows(transform, P, scale, val_rows), y[val_rows])


def load_spectra(path: str | Path) -> dict[str, np.ndarray]:
    """``spectrum_before`` / ``spectrum_after`` of a prepared ``.npz`` (those it holds), float64."""
    keys = ("spectrum_before", "spectrum_after")
    with np.load(Path(path).with_suffix(".npz"), allow_pickle=False) as z:
        return {k: np.asarray(z[k], dtype=np.float64) for k in keys if k in z.files}


def load_transform_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The ``transform/…`` arrays of a prepared ``.npz`` (``scale``, ``offset``, ``matrix``, …) as
    plain arrays, keyed without the prefix."""
    with np.load(Path(path).with_suffix(".npz"), allow_pickle=False) as z:
        return {k[len(_PREFIX):]: np.asarray(z[k]) for k in z.files if k.startswith(_PREFIX)}


def load_transform(path: str | Path) -> Transform:
    """Only the transform of a prepared ``.npz`` (its ``transform/…`` arrays)."""
    with np.load(Path(path).with_suffix(".npz"), allow_pickle=False) as z:
        return Transform.from_arrays(
            {k[len(_PREFIX) :]: z[k] for k in z.files if k.startswith(_PREFIX)}
        )


# ---------------------------------------------------------------- the prepared data of a run


TASK_OF_MODEL = {"linear": "regression", "logistic": "binary", "logistic_mse": "binary",
                 "softmax": "multiclass"}


def _override(key: str, value: Any) -> str:
    """``key=value`` as a Hydra command-line override (lists without spaces, null, true/false)."""
    def text(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ",".join(text(x) for x in v) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return f"{key}={text(value)}"


def _prepare_cmd(spec: RunSpec) -> str:
    """The ``prepare`` command that makes the run's prepared file: its data and preprocess choices
    and every ``data.*`` value that differs from ``conf/data/<name>.yaml``."""
    from pipeline.data.catalog import data_config

    want = spec.group_config("data")
    try:
        declared = data_config(spec.data_name)
    except ConfigError:  # a data set declared outside conf/data/ (hydra.searchpath)
        declared = want
    changed = [_override(f"data.{k}", v) for k, v in want.items()
               if k != "name" and declared.get(k) != v]
    return " ".join([f"python -m pipeline.prepare data={spec.data_name}",
                     f"preprocess={spec.preprocess_id}", *changed])


def load_prepared_for(spec: RunSpec) -> tuple[Dataset, Transform, dict[str, Any], Path]:
    """The prepared data set the run names, checked against its config, or a DataError saying how to
    make it."""
    path = prepared_file(spec)
    if not path.exists():
        raise DataError(f"prepared data {path} not found; run `{_prepare_cmd(spec)}` "
                        "(with the same preprocess.* and paths.* overrides) first, or `dvc repro`")
    dataset, transform, facts = load_prepared(path)
    for group in ("data", "preprocess"):
        made = facts.get(f"{group}_config") or {}
        want = spec.group_config(group)
        for key in sorted(set(made) & set(want) - {"root"}):
            if made[key] != want[key]:
                given = "" if group == "data" else f" {_override(f'{group}.{key}', want[key])}"
                raise DataError(
                    f"{path} was prepared with {group}.{key}={made[key]!r} but this run asks for "
                    f"{want[key]!r}; rerun `{_prepare_cmd(spec)}{given}` (give it its "
                    f"own {group}.id to keep both)")
    val_fraction = spec.group_config("data").get("val_fraction")
    if (val_fraction or 0) > 0 and "X_val" not in facts:
        raise DataError(f"{path} has no validation split but data.val_fraction={val_fraction}; "
                        f"rerun `{_prepare_cmd(spec)}`")
    return dataset, transform, dict(facts), path


def check_model_fits_data(model: str, task: str, data_id: str) -> None:
    """Each model needs its kind of labels (regression targets, two classes, c classes)."""
    want = TASK_OF_MODEL[model]
    if task != want:
        hint = {"regression": "data=synthetic_regression", "binary": "data=mnist_binary",
                "multiclass": "data=mnist"}[want]
        raise ConfigError(f"model={model} needs a {want} data set but data {data_id!r} is {task}; "
                          f"use {hint} or another model")
