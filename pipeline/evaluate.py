"""``python -m pipeline.evaluate``: score a trained run on both splits of its prepared data.

The overrides name the run exactly as for ``train`` (or ``run_dir=...`` names it directly); the
model is rebuilt from the run's own ``config.yaml`` and ``weights.npz``. Writes
``evaluation.json`` (accuracies, unpenalized mean losses, class names, per-class accuracy) and,
for classifiers, ``confusion.csv`` (c×c counts; row i = true class i, column j = predicted class j,
header = the class names from the data set's config) beside the weights, and logs ``eval_*`` metrics
to the train run's
MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.cli.entry import stage
from pipeline.config.checks import check_boundary, config_keys
from pipeline.config.paths import project_path
from pipeline.config.schemas import EvaluateConfig
from pipeline.core.errors import CurvlabError, DataError
from pipeline.spec import RunSpec
from pipeline.store.locks import folder_lock
from pipeline.store.prepared import file_sha256, load_prepared_for, prepared_file
from pipeline.store.rundir import (
    load_weight_arrays,
    read_run_config,
    read_run_record,
    read_weights,
    run_dir,
    write_evaluation,
)
from pipeline.tracking.sweep import JobContext

PROG = "evaluate"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """C[i, j] = #{k : y_k = i, ŷ_k = j} (int64, rows = true class)."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_accuracy(conf: np.ndarray) -> list[float | None]:
    """Recall of each class, C[i, i] / Σ_j C[i, j] (None for a class absent from the split)."""
    support = conf.sum(axis=1)
    return [float(conf[i, i] / s) if s else None for i, s in enumerate(support)]


def class_names_of(meta: dict[str, Any], n_classes: int) -> list[str]:
    """The prepared data's class names (``meta['class_names']``), else the class indices; unique,
    one per class."""
    names = [str(n) for n in (meta.get("class_names") or [])]
    if len(names) != n_classes or len(set(names)) != n_classes:
        names = [str(k) for k in range(n_classes)]
    return names


# evaluation.json key → MLflow metric (one name per meaning: the train run's ``objective`` is f
# with the penalty, ``data_loss`` the training data loss without it)
EVAL_METRICS = {"train_loss": "data_loss", "test_loss": "test_loss",
                "train_accuracy": "train_accuracy", "test_accuracy": "test_accuracy"}


def locate_run(spec: RunSpec, given: str | None) -> Path:
    """The run directory: ``run_dir`` if given, else the one ``train`` derives from the
    overrides."""
    overrides = [o for o in spec.overrides if not o.startswith("run_dir=")]
    out = project_path(given) if given else run_dir(spec)
    for f in ("weights.npz", "config.yaml", "metrics.json"):
        if not (out / f).is_file():
            raise DataError(f"{out / f} not found; train this run first with `python -m "
                            "pipeline.train "
                            f"{' '.join(overrides)}` (the same overrides), or pass run_dir=<dir>")
    return out


@config_keys()
def evaluate(cfg: DictConfig, ctx: JobContext | None = None) -> dict[str, Any]:
    """Score the run; write evaluation.json (+ confusion.csv); returns the evaluation dict."""
    ctx = ctx or JobContext()
    check_boundary(cfg)
    spec = RunSpec.from_config(cfg, ctx.overrides)
    out = locate_run(spec, cfg.get("run_dir"))
    with folder_lock(out, PROG):  # a retrain of this run waits: the scores stay with the weights
        result, mlflow_run_id = score_run(out)
    log_to_mlflow(spec, mlflow_run_id, result, out)
    acc = result["test_accuracy"]
    acc_text = "" if acc is None else f"test accuracy {acc:.4f}, "
    print(f"{PROG}: {out.name}: {acc_text}test loss {result['test_loss']:.6g} -> "
          f"{out / 'evaluation.json'}", flush=True)
    return result


# the last job's scoring inputs: a sweep's jobs run one prepared set after another, so its jobs on
# the same set (same file bytes, same configs) share one load and one objective
_LAST_SCORING: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}


def _file_identity(path: Path) -> tuple[int, ...]:
    """(device, inode, size, mtime in ns) of a file: a rewritten file gets a new identity."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def scoring_inputs(run: RunSpec) -> tuple[Any, Any, Any]:
    """(dataset, transform, f) of the run's prepared data and model (``load_prepared_for``,
    ``run_objective``), reused from the previous call when the prepared .npz and .json are the
    same files and the data, preprocess and model configs are equal."""
    from pipeline.spec import run_objective

    npz = prepared_file(run)
    js = npz.with_suffix(".json")
    if not (npz.is_file() and js.is_file()):
        _LAST_SCORING.clear()
        dataset, transform, _facts, _ = load_prepared_for(run)  # raises the missing-file error
        return dataset, transform, run_objective(run.model, dataset, transform)
    key = (str(npz.resolve()), _file_identity(npz), _file_identity(js), repr(run.model),
           repr(sorted(run.group_config("data").items())),
           repr(sorted(run.group_config("preprocess").items())))
    if key not in _LAST_SCORING:
        _LAST_SCORING.clear()
        dataset, transform, _facts, _ = load_prepared_for(run)
        _LAST_SCORING[key] = (dataset, transform, run_objective(run.model, dataset, transform))
    return _LAST_SCORING[key]


def score_run(out: Path) -> tuple[dict[str, Any], str | None]:
    """Score the weights of the run folder ``out``, write evaluation.json (+ confusion.csv);
    returns the evaluation and the run's MLflow run id."""
    run_cfg = read_run_config(out / "config.yaml")
    metrics = read_run_record(out / "metrics.json")
    weights_sha = file_sha256(out / "weights.npz")
    w = read_weights(out / "weights.npz")
    run = RunSpec.from_config(run_cfg)  # the run as trained: its own prepared data and model
    dataset, transform, objective = scoring_inputs(run)
    if w.shape != (objective.n_params,):
        raise DataError(f"{out / 'weights.npz'}: w has shape {w.shape}, the model needs "
                        f"({objective.n_params},); retrain the run")
    result: dict[str, Any] = {
        "run": out.name,
        "status": metrics.get("status"),
        "train_loss": float(objective.predict_loss(dataset.X_train, dataset.y_train, w)),
        "test_loss": float(objective.predict_loss(dataset.X_test, dataset.y_test, w)),
        "n_train": int(dataset.X_train.shape[0]),
        "n_test": int(dataset.X_test.shape[0]),
        "train_accuracy": None,
        "test_accuracy": None,
        "class_names": None,
        "per_class_accuracy": None,
        "weights_sha256": weights_sha,
    }
    conf = None
    if dataset.task != "regression":
        c = int(dataset.n_classes or 2)
        pred_train = np.asarray(objective.predict(dataset.X_train, w))
        pred_test = np.asarray(objective.predict(dataset.X_test, w))
        conf = confusion_matrix(dataset.y_test, pred_test, c)
        result["train_accuracy"] = float(np.mean(pred_train == dataset.y_train))
        result["test_accuracy"] = float(np.trace(conf) / conf.sum())
        result["class_names"] = class_names_of(dataset.meta, c)
        result["per_class_accuracy"] = per_class_accuracy(conf)
    write_evaluation(out, result, conf, input_space_weights(out / "weights.npz", transform))
    return result, metrics.get("mlflow_run_id")


def input_space_weights(weights: Path, transform: Any) -> dict[str, np.ndarray] | None:
    """``coef`` = W_x = Aᵀ W and ``intercept`` = b_x = cᵀ W + b: the run's weights on the raw inputs
    (None when weights.npz has no ``coef``)."""
    arrays = load_weight_arrays(weights)
    if "coef" not in arrays:
        return None
    W = np.asarray(arrays["coef"], dtype=np.float64)
    b = arrays.get("intercept", np.zeros(W.shape[1:] or ()))
    W_x, b_x = transform.input_weights(W, b)
    return {"coef": np.asarray(W_x, dtype=np.float64), "intercept": np.asarray(b_x, np.float64)}


def log_to_mlflow(spec: RunSpec, run_id: str | None, result: dict[str, Any], out: Path) -> None:
    """``data_loss`` (the training data loss, without the penalty), the test loss and accuracies
    the train run has not logged, and evaluation.json onto the train run (a warning if it is not
    in this store)."""
    if not spec.mlflow.get("enabled", True) or not run_id:
        return
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.mlflow import Tracker, with_retry

    tracker = Tracker(dict(spec.mlflow))
    try:
        logged = with_retry(lambda: tracker.client.get_run(run_id)).data.metrics
        values = {EVAL_METRICS[k]: v for k, v in result.items()
                  if k in EVAL_METRICS and v is not None and EVAL_METRICS[k] not in logged}
        tracker.log_metrics(run_id, values)
        tracker.log_artifacts(run_id, [out / "evaluation.json", out / "confusion.csv"])
    except (MlflowException, CurvlabError) as err:
        print(f"{PROG}: warning: MLflow run {run_id} not updated ({str(err).splitlines()[0]})",
              file=sys.stderr)


def job(cfg: DictConfig, ctx: JobContext) -> None:
    """One evaluate job (see the module docstring)."""
    evaluate(cfg, ctx)


main = stage(PROG, EvaluateConfig)(job)

if __name__ == "__main__":
    main()
