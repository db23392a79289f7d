"""``python -m pipeline.train``: fit one model with one optimizer on prepared data.

Reads ``data/prepared/<data.id>-<preprocess>.npz`` (``python -m pipeline.prepare``), minimizes the
model's objective and writes ``experiments/<study>/<run>/`` = ``config.yaml``, ``history.csv``,
``weights.npz``, ``metrics.json`` (last), plus one MLflow run. A diverged run (non-finite
loss/gradient) is saved with ``status: diverged`` and the weights of the last finite iterate,
its MLflow run is FAILED, and the command exits 2 with one line (``fail_on_diverged=false``: 0).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.cli.entry import run_entry
from pipeline.cli.progress import IterationBar, show_progress
from pipeline.config.checks import apply_budget, config_keys, validate_train_config
from pipeline.config.schemas import as_kwargs, register_configs
from pipeline.core.errors import NumericalError
from pipeline.core.solvers import HISTORY_KEYS as HISTORY_COLUMNS
from pipeline.core.solvers import SGD_KEYS, check_sgd_options
from pipeline.spec import group_id
from pipeline.store.prepared import file_sha256
from pipeline.store.rundir import check_model_fits_data, load_prepared_for, run_dir
from pipeline.store.writer import (
    check_writable,
    replace_dir,
    write_csv,
    write_json,
    write_npz,
    write_text,
)
from pipeline.tracking.sweep import JobContext, job_context, record_trial

PROG = "train"
OPTIMIZER_OPTIONS = ("lr", "max_iter", "tol", "time_budget_s", "line_search", "armijo_c",
                     "backtrack", "cg_max_iter")


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Share of correct class predictions, mean(ŷ = y)."""
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


@config_keys()
def train(cfg: DictConfig, ctx: JobContext | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Validate, fit, save and track one run (in ``out_dir``, default the run directory its config
    names); returns the metrics dict (raises CurvlabError)."""
    from pipeline.core.solvers import minimize
    from pipeline.spec import objective_id, run_objective
    from pipeline.tracking.mlflow import Tracker, flatten, git_commit

    ctx = ctx or JobContext()
    apply_budget(cfg, ctx.overrides)  # the study's budget for this optimizer (the command line wins)
    validate_train_config(cfg)
    if cfg.optimizer.name == "sgd":
        check_sgd_options({k: cfg.optimizer[k] for k in SGD_KEYS} | {"seed": cfg.seed})
    out_dir = run_dir(cfg, ctx.overrides) if out_dir is None else out_dir
    dataset, transform, facts, prep_path = load_prepared_for(cfg)
    check_model_fits_data(cfg.model.name, dataset.task, cfg.data.id)

    o = cfg.optimizer
    objective = run_objective(cfg, dataset, transform)
    obj_id = objective_id(cfg, transform)  # the report pairs the run with the reference f* of this id
    fit_intercept = bool(objective.fit_intercept)
    rng = np.random.default_rng(int(cfg.seed))
    w0 = objective.init(str(o.init), float(o.init_scale), rng)
    opt_cfg = as_kwargs(o)
    options = {k: opt_cfg[k] for k in OPTIMIZER_OPTIONS}
    if o.name == "sgd":  # minibatches drawn from the run's seed
        options |= {k: opt_cfg[k] for k in SGD_KEYS} | {"seed": int(cfg.seed)}

    resolved = as_kwargs(cfg)
    check_writable(out_dir)  # before an MLflow run exists: a read-only folder is one error, no FAILED run
    tracker, run_id = None, None
    if cfg.mlflow.enabled:
        tracker = Tracker(resolved["mlflow"])
        prep_sha = file_sha256(prep_path)
        tags = {"curvlab.kind": "train", "curvlab.overrides": " ".join(ctx.overrides),
                "curvlab.run_dir": str(out_dir), "mlflow.source.git.commit": git_commit(),
                "curvlab.prepared": str(prep_path), "curvlab.prepared_sha256": prep_sha,
                "curvlab.fit_intercept": str(fit_intercept), "curvlab.objective": obj_id}
        tags.update({f"curvlab.data_sha256.{k}": str(v) for k, v in (facts.get("sha256") or {}).items()})
        run_id = tracker.start_run(str(cfg.study), out_dir.name, tags, ctx.parent_run_id)

    try:
        if tracker is not None and run_id is not None:
            tracker.log_params(run_id, flatten(resolved))
            tracker.log_dataset(run_id, prep_path.stem, prep_sha, prep_path, "train", {
                k: facts.get(k) for k in ("n_train", "n_test", "n_features_out", "n_classes", "task")})
        t0 = time.perf_counter()
        desc = f"{out_dir.name}"
        steps = int(o.epochs) if o.name == "sgd" and o.log_every is None else int(o.max_iter)
        with IterationBar(steps, desc, show_progress(cfg.progress)) as cb:
            result = minimize(objective, w0, str(o.name), callback=cb, **options)
        seconds = time.perf_counter() - t0
        val = (facts["X_val"], facts["y_val"]) if "X_val" in facts else None
        metrics = summarize(cfg, objective, dataset, result, fit_intercept, seconds, run_id, val, obj_id)
        save_run(out_dir, cfg, objective, result, metrics)
        if tracker is not None and run_id is not None:  # inside the try: a logging failure ends it FAILED
            history = {k: np.asarray(v) for k, v in result.history.items()}
            tracker.log_history(run_id, history)
            tracker.log_metrics(run_id, {k: metrics[k] for k in (
                "train_loss", "grad_norm", "train_time_s", "train_accuracy", "test_accuracy",
                "test_loss", "iterations", "passes", "val_accuracy", "val_loss")
                if metrics.get(k) is not None})
            tracker.log_tags(run_id, {"curvlab.status": metrics["status"]})
            tracker.log_artifacts(run_id, [out_dir / "metrics.json", out_dir / "config.yaml",
                                           out_dir / "history.csv"])
            tracker.end_run(run_id, "FINISHED" if metrics["status"] != "diverged" else "FAILED")
    except BaseException as err:
        if tracker is not None and run_id is not None:
            with contextlib.suppress(Exception):  # the store may be what failed: keep the first error
                tracker.end_run(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise

    acc = "" if metrics["test_accuracy"] is None else f", test accuracy {metrics['test_accuracy']:.4f}"
    if metrics["val_accuracy"] is not None:
        acc += f", validation accuracy {metrics['val_accuracy']:.4f}"
    print(f"{PROG}: {out_dir.name}: {metrics['status']} after {metrics['iterations']} iterations, "
          f"loss {metrics['train_loss']:.6g}{acc} ({metrics['train_time_s']:.1f} s) -> {out_dir}", flush=True)
    if metrics["status"] == "diverged" and cfg.fail_on_diverged:
        raise NumericalError(f"run {out_dir.name} diverged: {result.message}; saved with status "
                             f"diverged (weights = last finite iterate) in {out_dir}")
    return metrics


def summarize(cfg: DictConfig, objective: Any, dataset: Any, result: Any,
              fit_intercept: bool, seconds: float, run_id: str | None,
              val: tuple[np.ndarray, np.ndarray] | None = None, objective_name: str | None = None) -> dict[str, Any]:
    """The metrics.json fields of docs/architecture.md (val_* from the validation split, if any;
    ``objective`` = ``pipeline.spec.objective_id`` of the run)."""
    has_val = val is not None
    X_val, y_val = val if val is not None else (None, None)
    score_test = bool(cfg.get("score_test", True))
    w = np.asarray(result.w)
    with np.errstate(all="ignore"):  # loss and gradient of exactly the saved w (a diverged run's
        f_w, g_w = objective.value_grad(w)  # history ends with the step that blew up, not w)
    finite = np.isfinite(np.asarray(result.history["loss"], dtype=np.float64))
    last = int(np.flatnonzero(finite)[-1]) if finite.any() else 0
    classify = dataset.task != "regression"
    return {
        "study": str(cfg.study),
        "data": str(cfg.data.id),
        "preprocess": group_id(cfg.preprocess),
        "model": group_id(cfg.model),
        "optimizer": group_id(cfg.optimizer),
        "l2": float(cfg.model.l2),
        "objective": objective_name,
        "lr": None if result.lr is None else float(result.lr),
        "n_params": int(objective.n_params),
        "fit_intercept": bool(fit_intercept),
        "status": str(result.status),
        "converged": result.status == "converged",
        "message": str(result.message),
        "iterations": int(result.n_iter),
        "passes": float(np.asarray(result.history["passes"], dtype=np.float64)[last]),  # work done
        "cg_iterations": int(result.info["cg_iterations"]) if "cg_iterations" in result.info else None,
        "train_loss": float(f_w),
        "grad_norm": float(np.linalg.norm(g_w)),
        "train_time_s": float(seconds),
        "train_accuracy": accuracy(objective.predict(dataset.X_train, w), dataset.y_train) if classify else None,
        "test_accuracy": accuracy(objective.predict(dataset.X_test, w), dataset.y_test)
        if classify and score_test else None,
        "test_loss": float(objective.predict_loss(dataset.X_test, dataset.y_test, w)) if score_test else None,
        "val_accuracy": accuracy(objective.predict(X_val, w), y_val) if classify and has_val else None,
        "val_loss": float(objective.predict_loss(X_val, y_val, w)) if has_val else None,
        "n_val": int(y_val.shape[0]) if has_val else 0,
        "mlflow_run_id": run_id,
    }


def save_run(out_dir: Path, cfg: DictConfig, objective: Any, result: Any, metrics: dict[str, Any]) -> None:
    """Replace the run folder as a whole with config.yaml, history.csv, weights.npz, metrics.json.

    The old folder (and its evaluation.json/confusion.csv, which describe the old weights) stays
    untouched until the new one is complete (``pipeline.store.writer.replace_dir``).
    """
    w = np.asarray(result.w)
    if not np.all(np.isfinite(w)):  # the optimizer contract says never; do not save NaN weights
        raise NumericalError(f"optimizer returned non-finite weights for {out_dir.name}; nothing saved")
    coef, intercept = objective.unpack(w)
    with replace_dir(out_dir) as new:
        write_text(new / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_csv(new / "history.csv", {k: np.asarray(result.history[k]) for k in HISTORY_COLUMNS})
        write_npz(new / "weights.npz", {"w": w, "coef": np.asarray(coef), "intercept": np.asarray(intercept)})
        write_json(new / "metrics.json", metrics)


register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> int | float | None:
    """Hydra entry point (see the module docstring). In a sweep with ``sweep_metric`` set (a
    tuning study) it returns that metric for the sweeper (None when the job failed) and leaves
    ``<sweep dir>/trials/<job>.json`` for ``pipeline.tuning``."""
    ctx = job_context()
    metrics: dict[str, Any] = {}
    code = run_entry(PROG, lambda: metrics.update(train(cfg, ctx)), ctx)
    key = cfg.get("sweep_metric")
    if not key:
        return code
    if metrics:
        record_trial(ctx, metrics)
    value = metrics.get(key)
    return None if value is None else float(value)  # None: the sweeper records a failed trial


if __name__ == "__main__":
    from pipeline.cli.entry import run_cli
    from pipeline.config.schemas import TrainConfig

    run_cli(PROG, main, TrainConfig)
