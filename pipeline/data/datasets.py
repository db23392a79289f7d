"""Data sets as ``Dataset`` records: any IDX data set declared in conf/data/ (MNIST, Fashion-MNIST,
a binary pair of classes, ...) and synthetic regression.

``load_dataset(cfg, seed)`` takes the ``data`` config as a dict (``DataConfig``; a partial dict is
completed from conf/data/<name>.yaml); everything random is drawn from
``numpy.random.default_rng(seed)`` so a (config, seed) pair is reproducible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.memory import MEMORY_GB, budget_bytes, check_memory, synthetic_bytes, table_bytes
from pipeline.core.rows import scaled as scale_inputs  # X = s·P in float64
from pipeline.data.catalog import complete
from pipeline.data.idxsets import SPLITS, IdxSpec, load_idx_set

FORMATS = ("idx", "synthetic_regression")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split, one example per row: ``X (n, d) float64``; ``y`` int64 classes or float64
    targets."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # regression | binary | multiclass
    n_classes: int | None  # None for regression
    name: str
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # JSON-friendly facts (source, class_names, image_shape, w*, ...)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_data_config(cfg: Mapping[str, Any]) -> None:
    """Check the ranges of a ``data`` config (completed from conf/data/ if partial); a bad value is
    a one-line ConfigError."""
    cfg = complete(cfg)
    fmt = cfg.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"data.format={fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    scale = cfg.get("scale", 1.0 / 255.0)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(
            f"data.scale={scale} must be a finite number > 0, e.g. 3.9215686e-3 (1/255)"
        )
    for key in ("n_train", "n_test"):
        v = cfg.get(key)
        if v is not None and not (_is_int(v) and v >= 1):
            raise ConfigError(f"data.{key}={v} must be a positive integer or null (use all)")
    if fmt == "idx":
        validate_idx_config(cfg)
    if fmt == "synthetic_regression":
        n, d = cfg.get("n_samples", 2000), cfg.get("n_features", 20)
        kappa, noise, tf = (
            cfg.get("condition_number", 1.0e2),
            cfg.get("noise", 0.1),
            cfg.get("test_fraction", 0.2),
        )
        if not (_is_int(d) and d >= 1):
            raise ConfigError(f"data.n_features={d} must be an integer >= 1")
        if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa >= 1):
            raise ConfigError(
                f"data.condition_number={kappa} must be a finite number >= 1 (1 = spherical)"
            )
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"data.noise={noise} must be a finite number >= 0")
        if not (isinstance(tf, (int, float)) and 0 < tf < 1):
            raise ConfigError(
                f"data.test_fraction={tf} must lie strictly between 0 and 1, e.g. 2.0e-1"
            )
        if not _is_int(n):
            raise ConfigError(f"data.n_samples={n} must be an integer")
        n_tr, n_te = _split_sizes(int(n), float(tf))
        if n_te < 1 or n_tr < d + 1:
            raise ConfigError(
                f"data.n_samples={n} with test_fraction={tf} leaves {n_tr} training rows for "
                f"{d} features; need at least n_features + 1 = {d + 1} (raise data.n_samples)"
            )


def _split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    n_test = int(round(n * test_fraction))
    return n - n_test, n_test


def _subsample(
    X: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` rows after a seeded shuffle (all rows, unshuffled, when ``n`` is None)."""
    if n is None:
        return X, y
    if n > X.shape[0]:
        raise ConfigError(
            f"data.{key}={n} exceeds the {X.shape[0]} available examples; lower it or use null"
        )
    idx = np.sort(rng.permutation(X.shape[0])[:n])
    return X[idx], y[idx]


def validate_idx_config(cfg: Mapping[str, Any]) -> None:
    """An IDX data set's declaration: four files with SHA-256s, a folder name, class names and
    mapping."""
    files = cfg.get("files") or {}
    if sorted(files) != sorted(SPLITS):
        raise ConfigError(f"data.files must name exactly {', '.join(SPLITS)} (got "
                          f"{', '.join(files) or 'none'}); "
                          "declare each as {name: <file>, sha256: <digest of the decompressed "
                          "payload>}")
    for split in SPLITS:
        f = files[split] or {}
        if not _SAFE_NAME.fullmatch(str(f.get("name") or "")):
            raise ConfigError(f"data.files.{split}.name={f.get('name')!r} must be a plain file "
                              "name "
                              "(without .gz), e.g. train-images-idx3-ubyte")
        if not _SHA256.fullmatch(str(f.get("sha256") or "")):
            raise ConfigError(f"data.files.{split}.sha256={f.get('sha256')!r} must be 64 hex "
                              "digits, the "
                              "SHA-256 of the decompressed file (sha256sum after gunzip)")
    folder = cfg.get("folder")
    if folder is not None and (
        not _SAFE_NAME.fullmatch(str(folder)) or str(folder).startswith(".")
    ):
        raise ConfigError(f"data.folder={folder!r} names a sub-folder; use letters, digits, '-', "
                          "'_', '.'")
    names = list(cfg.get("class_names") or [])
    classes = list(cfg.get("classes") or [])
    seen: list[int] = []
    for k, entry in enumerate(classes):
        values = entry if isinstance(entry, (list, tuple)) else [entry]
        if not values or not all(_is_int(v) and v >= 0 for v in values):
            raise ConfigError(f"data.classes[{k}]={entry!r} must be a label value >= 0 or a list "
                              "of them, "
                              "e.g. classes: [3, 8]")
        if names and max(values) >= len(names):
            raise ConfigError(f"data.classes[{k}]={entry!r}: label {max(values)} has no entry in "
                              f"data.class_names ({len(names)} names)")
        if set(values) & set(seen):
            raise ConfigError(f"data.classes={classes!r} uses label "
                              f"{sorted(set(values) & set(seen))[0]} twice; "
                              "each label value may belong to one class only")
        seen += [int(v) for v in values]
    if len(classes) == 1:
        raise ConfigError(f"data.classes={classes!r} needs at least two classes, e.g. [3, 8], or "
                          "[] for all labels")


def class_names(cfg: Mapping[str, Any], n_labels: int | None = None) -> list[str]:
    """Names of the classes a ``data`` config yields: class k = ``classes[k]``'s label names joined
    by '+'."""
    names = [str(n) for n in (cfg.get("class_names") or [])]
    classes = list(cfg.get("classes") or [])

    def label(v: int) -> str:
        return names[v] if v < len(names) else str(v)

    if classes:
        return [
            "+".join(label(int(v)) for v in (e if isinstance(e, (list, tuple)) else [e]))
            for e in classes
        ]
    return names if names else [str(v) for v in range(int(n_labels or 0))]


def _map_labels(
    labels: np.ndarray, classes: list[Any], n_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class index of each label (int64) and the mask of examples kept (labels in no class are
    dropped)."""
    lut = np.full(n_labels, -1, dtype=np.int64)
    for k, entry in enumerate(classes):
        lut[np.asarray(entry if isinstance(entry, (list, tuple)) else [entry], dtype=np.int64)] = k
    y = lut[labels.astype(np.int64)]
    return y, y >= 0


def check_labels(source: str, title: str, train_labels: np.ndarray, test_labels: np.ndarray,
                 names: list[Any], classes: list[Any]) -> int:
    """The number of label values 0..top; a DataError when a split has no rows or ``class_names`` do
    not match the labels (a label without a name, or names beyond the largest label)."""
    for split, labels in (("training", train_labels), ("test", test_labels)):
        if labels.size == 0:
            raise DataError(f"{source}: {title} has no {split} rows; replace its {split} files "
                            "with good copies")
    top = int(max(train_labels.max(), test_labels.max()))
    if names and top >= len(names):
        raise DataError(f"{source}: {title} has label value {top} but data.class_names lists only "
                        f"{len(names)} names; add the missing names to its conf/data YAML")
    if names and not classes and len(names) > top + 1:
        raise DataError(f"{source}: data.class_names lists {len(names)} names but {title}'s "
                        f"labels take the values 0..{top} ({top + 1} classes); remove the extra "
                        "names from its conf/data YAML (or pick the classes with data.classes)")
    return max(len(names), top + 1)


def check_classes(source: str, title: str, y: np.ndarray, names: list[str]) -> None:
    """Every class has a training example (else its weights are never fitted)."""
    counts = np.bincount(y, minlength=len(names))
    empty = [f"{k} ({names[k]})" for k in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{source}: {title}'s class {', '.join(empty)} has no training example; "
                        "fix data.classes or data.class_names, or the label files")


def _idx(cfg: Mapping[str, Any], rng: np.random.Generator, memory_gb: float) -> Dataset:
    """The IDX data set with its pixels as read (uint8 for images) as X: x = data.scale · p."""
    raw = load_idx_set(IdxSpec.from_config(cfg), cfg.get("root"), budget_bytes(memory_gb))
    scale = float(cfg.get("scale", 1.0 / 255.0))
    title = str(cfg.get("title") or cfg["name"])
    names, classes = list(cfg.get("class_names") or []), list(cfg.get("classes") or [])
    n_labels = check_labels(raw.source, title, raw.train_labels, raw.test_labels, names, classes)
    Xtr = raw.train_images.reshape(raw.train_images.shape[0], -1)
    Xte = raw.test_images.reshape(raw.test_images.shape[0], -1)
    if classes:
        ytr, mtr = _map_labels(raw.train_labels, classes, n_labels)
        yte, mte = _map_labels(raw.test_labels, classes, n_labels)
        Xtr, ytr, Xte, yte = Xtr[mtr], ytr[mtr], Xte[mte], yte[mte]
        n_classes = len(classes)
    else:
        ytr = raw.train_labels.astype(np.int64)
        yte = raw.test_labels.astype(np.int64)
        n_classes = n_labels
    if n_classes < 2 or ytr.size == 0:
        raise DataError(f"{raw.source}: {title} yields {n_classes} class(es) and {ytr.size} "
                        "training "
                        "examples; a classifier needs two classes or more (check data.classes)")
    check_classes(raw.source, title, ytr, class_names(cfg, n_labels))
    task = "binary" if n_classes == 2 else "multiclass"
    meta: dict[str, Any] = {
        "source": raw.source, "sha256": dict(raw.sha256), "scale": scale, "title": title,
        "class_names": class_names(cfg, n_labels), "classes": classes,
        "image_shape": [int(s) for s in raw.train_images.shape[1:]],
    }
    Xtr, ytr = _subsample(Xtr, ytr, cfg.get("n_train"), rng, "n_train")
    Xte, yte = _subsample(Xte, yte, cfg.get("n_test"), rng, "n_test")
    if np.unique(ytr).size < 2:
        raise DataError(f"{raw.source}: the {ytr.size} training rows of "
                        f"data.n_train={cfg.get('n_train')} hold a single class of {title}; "
                        "raise data.n_train")
    return Dataset(Xtr, ytr, Xte, yte, task, n_classes, str(cfg["name"]), meta)


def as_float(ds: Dataset, scale: float | None, memory_gb: float = MEMORY_GB) -> Dataset:
    """The data set of stored inputs with float64 inputs x = s·p (``scale_inputs``), checked
    against the memory budget first; ``scale`` None: returned as it is."""
    if scale is None:
        return ds
    (n_tr, d), n_te = ds.X_train.shape, ds.X_test.shape[0]
    title = str(ds.meta.get("title", ds.name))
    check_memory(table_bytes(n_tr + n_te, d), f"{title} as float64 ({n_tr} + {n_te} rows × {d})",
                 memory_gb, "lower data.n_train / data.n_test")
    # uint8 -> float64 and scaling in one pass each (no Python loop over images)
    return replace(ds, X_train=scale_inputs(ds.X_train, scale),
                   X_test=scale_inputs(ds.X_test, scale))


def synthetic_regression(
    n_samples: int,
    n_features: int,
    condition_number: float,
    noise: float,
    test_fraction: float,
    rng: np.random.Generator,
) -> Dataset:
    """Linear regression y = X w* + b* + σ·ε whose training second moment (1/n) XᵀX = V diag(λ) Vᵀ
    has cond κ exactly.

    λ_i are geometrically spaced from 1 down to 1/κ (κ = 1: spherical level sets). The training
    inputs are X = √n · Q diag(√λ) Vᵀ with Q (n×d) orthonormal columns orthogonal to the constant
    vector, so the columns have mean 0 and the bias-augmented Hessian (1/n) X̃ᵀX̃ = diag(V Λ Vᵀ, 1)
    has the same condition number κ. Test inputs are drawn from N(0, V Λ Vᵀ) (same second moment).
    """
    d = n_features
    n_train, n_test = _split_sizes(n_samples, test_fraction)
    lam = np.geomspace(1.0, 1.0 / condition_number, num=d) if d > 1 else np.ones(1)
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    G = rng.standard_normal((n_train, d))
    G -= G.mean(axis=0)  # orthogonal to the constant vector
    Q, R = np.linalg.qr(G)
    Q *= np.sign(np.diag(R))  # a deterministic sign convention
    X_train = math.sqrt(n_train) * (Q * np.sqrt(lam)) @ V.T
    X_test = (rng.standard_normal((n_test, d)) * np.sqrt(lam)) @ V.T
    w_star = rng.standard_normal(d)
    b_star = float(rng.standard_normal())
    y_train = X_train @ w_star + b_star + noise * rng.standard_normal(n_train)
    y_test = X_test @ w_star + b_star + noise * rng.standard_normal(n_test)
    meta = {
        "condition_number": float(condition_number),
        "eigenvalues": lam.tolist(),
        "w_star": w_star.tolist(),
        "b_star": b_star,
        "noise": float(noise),
    }
    return Dataset(
        X_train, y_train, X_test, y_test, "regression", None, "synthetic_regression", meta
    )


def load_dataset(cfg: Mapping[str, Any], seed: int | None = None,
                 memory_gb: float = MEMORY_GB) -> Dataset:
    """Load the data set a ``data`` config names; ``seed`` (else ``cfg['seed']``, else 0) fixes all
    randomness; reads and arrays beyond ``memory_gb`` (limits.memory_gb) are refused up front."""
    return as_float(*load_inputs(cfg, seed, memory_gb), memory_gb)


def load_inputs(cfg: Mapping[str, Any], seed: int | None = None,
                memory_gb: float = MEMORY_GB) -> tuple[Dataset, float | None]:
    """``load_dataset`` with the inputs as stored, and the s of x = s·p: IDX pixels stay as read
    (uint8 for images), s = data.scale; synthetic inputs are float64 already (s None)."""
    cfg = complete(cfg)
    validate_data_config(cfg)
    if seed is None:
        seed = int(cfg.get("seed", 0) or 0)
    rng = np.random.default_rng(seed)
    if cfg["format"] == "idx":
        return _idx(cfg, rng, memory_gb), float(cfg.get("scale", 1.0 / 255.0))
    n, d = int(cfg.get("n_samples", 2000)), int(cfg.get("n_features", 20))
    check_memory(synthetic_bytes(n, d), f"synthetic data of data.n_samples={n} × "
                 f"data.n_features={d}", memory_gb, "lower data.n_features or data.n_samples")
    ds = synthetic_regression(
        int(cfg.get("n_samples", 2000)),
        int(cfg.get("n_features", 20)),
        float(cfg.get("condition_number", 1.0e2)),
        float(cfg.get("noise", 0.1)),
        float(cfg.get("test_fraction", 0.2)),
        rng,
    )
    Xtr, ytr = _subsample(ds.X_train, ds.y_train, cfg.get("n_train"), rng, "n_train")
    Xte, yte = _subsample(ds.X_test, ds.y_test, cfg.get("n_test"), rng, "n_test")
    return Dataset(Xtr, ytr, Xte, yte, ds.task, None, ds.name, ds.meta), None
