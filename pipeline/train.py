"""``python -m pipeline.train``: fit one model with one optimizer on prepared data.

Reads ``data/prepared/<data.id>-<preprocess>.npz`` (``python -m pipeline.prepare``), minimizes the
model's objective and writes ``experiments/<study>/<run>/`` = ``config.yaml``, ``history.csv``,
``weights.npz``, ``run.json``, ``timing.json``, ``metrics.json`` (last; the record's three files:
``pipeline.store.rundir``), plus one MLflow run. A diverged run (non-finite
loss/gradient) is saved with ``status: diverged`` and the weights of the last finite iterate,
its MLflow run is FAILED, and the command exits 2 with one line (``fail_on_diverged=false``: 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.cli.entry import stage
from pipeline.cli.progress import IterationBar, show_progress
from pipeline.config.checks import config_keys, validate_train_config
from pipeline.config.schemas import TrainConfig
from pipeline.core.backend import Backend, load_backend, to_numpy
from pipeline.core.errors import NumericalError
from pipeline.core.solvers import check_method_options
from pipeline.spec import RunSpec
from pipeline.store.locks import folder_lock
from pipeline.store.prepared import check_model_fits_data, file_sha256, load_prepared_for
from pipeline.store.rundir import run_dir, write_run
from pipeline.store.writer import check_writable
from pipeline.tracking.sweep import JobContext, record_trial, swept_keys_from_env, trial_name

PROG = "train"


def accuracy(pred: Any, y: Any) -> float:
    """Share of correct class predictions, mean(ŷ = y) (arrays of any backend)."""
    return float(np.mean(to_numpy(pred) == to_numpy(y)))


@config_keys()
def train(
    cfg: DictConfig, ctx: JobContext | None = None, out_dir: Path | None = None
) -> dict[str, Any]:
    """Validate, fit, save and track one run (in ``out_dir``, default the run directory its config
    names); returns the metrics dict (raises CurvlabError)."""
    ctx = ctx or JobContext()
    # the study's budget for this optimizer (the command line wins)
    backend = validate_train_config(cfg)
    spec = RunSpec.from_config(cfg, ctx.overrides)
    check_method_options(spec.solver.method, spec.solver.method_options(spec.seed))
    return train_spec(spec, ctx, run_dir(spec) if out_dir is None else out_dir, backend)


def train_spec(spec: RunSpec, ctx: JobContext, out_dir: Path,
               backend: Backend | None = None) -> dict[str, Any]:
    """Fit the run ``spec`` names on its backend (``spec.backend`` on ``spec.device``, loaded
    when not given), save it in ``out_dir`` and track it; returns its metrics."""
    from pipeline.spec import objective_id, run_objective

    backend = backend or load_backend(spec.backend, spec.device)
    dataset, transform, facts, prep_path = load_prepared_for(spec)
    check_model_fits_data(spec.model.name, dataset.task, spec.data_id)
    dataset = on_backend(backend, dataset)  # the data moved once; numpy: as it is
    # the training inputs become the objective's own matrix (no second copy); read them through it
    objective = run_objective(spec.model, dataset, transform, backend, copy_X=False)
    # the report pairs the run with the reference f* of this id
    obj_id = objective_id(spec, transform)
    rng = np.random.default_rng(spec.seed)
    w0 = objective.init(spec.solver.init, float(spec.solver.init_scale), rng)
    # before an MLflow run exists: a read-only folder is one error, no FAILED run
    check_writable(out_dir)
    tracker, run_id, prep_sha = start_tracking(spec, ctx, out_dir, (prep_path, facts, obj_id),
                                               backend)
    try:
        if tracker is not None:
            log_inputs(tracker, run_id, spec, (prep_path, prep_sha), facts)
        fit_ms, t0 = int(time.time() * 1000), time.perf_counter()
        result = fit(spec, objective, w0, out_dir.name)
        backend.sync()  # the device's queued work is part of the fit's time
        seconds = time.perf_counter() - t0
        val = on_backend_val(backend, facts)
        metrics = summarize(spec, objective, dataset, result, seconds, run_id, val, obj_id)
        metrics |= backend_record(backend)
        with folder_lock(out_dir, PROG):  # an evaluate of the old weights finishes first
            save_run(out_dir, spec, objective, result, metrics)
        if tracker is not None:  # inside the try: a logging failure ends it FAILED
            log_result(tracker, run_id, result, metrics, out_dir, fit_ms)
            log_run_subopt(tracker, run_id, spec, obj_id)
            tracker.end_run(run_id, "FINISHED" if metrics["status"] != "diverged" else "FAILED")
    except BaseException as err:
        if tracker is not None:
            # the store may be what failed: keep the first error
            with contextlib.suppress(Exception):
                tracker.end_run(
                    run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
                )
        raise
    print(summary_line(out_dir, metrics), flush=True)
    if metrics["status"] == "diverged" and spec.fail_on_diverged:
        raise NumericalError(f"run {out_dir.name} diverged: {result.message}; saved with status "
                             f"diverged (weights = last finite iterate) in {out_dir}")
    return metrics


def on_backend(backend: Backend, dataset: Any) -> Any:
    """The data set with its train and test arrays on the backend's device (one host → device
    copy each; numpy's arrays stay as they are)."""
    moved = {k: backend.asarray(getattr(dataset, k))
             for k in ("X_train", "y_train", "X_test", "y_test")}
    return dataclasses.replace(dataset, **moved)


def on_backend_val(backend: Backend, facts: dict[str, Any]) -> tuple[Any, Any] | None:
    """The validation split (X_val, y_val) of the prepared facts on the backend's device, or
    None when the data has none."""
    if "X_val" not in facts:
        return None
    return backend.asarray(facts["X_val"]), backend.asarray(facts["y_val"])


def backend_record(backend: Backend) -> dict[str, Any]:
    """What a run records of where it computed: the backend, the device's name, the libraries'
    versions."""
    return {"backend": backend.name, "device": backend.device_name,
            "versions": dict(backend.versions)}


def fit(spec: RunSpec, objective: Any, w0: Any, desc: str) -> Any:
    """minimize(objective) from w0 with the run's solver options, behind a progress bar."""
    from pipeline.core.solvers import minimize

    o = spec.solver
    with IterationBar(o.progress_steps(), desc, show_progress(spec.progress)) as cb:
        return minimize(objective, w0, o.method, callback=cb, **o.minimize_kwargs(spec.seed))


def start_tracking(spec: RunSpec, ctx: JobContext, out_dir: Path,
                   inputs: tuple[Path, dict[str, Any], str],
                   backend: Backend) -> tuple[Any, Any, str]:
    """(tracker, run id, SHA-256 of the prepared file) of the run's new MLflow run (``inputs``:
    the prepared file, its facts, the objective id; tags: the backend, device, versions); Nones
    with tracking off."""
    from pipeline.tracking.mlflow import Tracker, git_commit

    if not spec.mlflow.get("enabled", True):
        return None, None, ""
    prep_path, facts, obj_id = inputs
    tracker = Tracker(dict(spec.mlflow))
    prep_sha = file_sha256(prep_path)
    tags = {"curvlab.kind": "train", "curvlab.overrides": " ".join(ctx.overrides),
            "curvlab.run_dir": str(out_dir), "mlflow.source.git.commit": git_commit(),
            "curvlab.prepared": str(prep_path), "curvlab.prepared_sha256": prep_sha,
            "curvlab.fit_intercept": str(spec.fit_intercept), "curvlab.objective": obj_id}
    tags.update(
        {f"curvlab.data_sha256.{k}": str(v) for k, v in (facts.get("sha256") or {}).items()}
    )
    tags.update(backend_tags(backend))
    name = trial_name(out_dir.name, swept_keys_from_env()) if ctx.multirun else out_dir.name
    return tracker, tracker.start_run(spec.study, name, tags, ctx.parent_run_id), prep_sha


def backend_tags(backend: Backend) -> dict[str, str]:
    """The MLflow tags of where a run computed: ``curvlab.backend``, ``curvlab.device``,
    ``curvlab.version.<library>``."""
    tags = {"curvlab.backend": backend.name, "curvlab.device": backend.device_name}
    return tags | {f"curvlab.version.{k}": str(v) for k, v in backend.versions.items()}


def log_inputs(tracker: Any, run_id: str, spec: RunSpec, prepared: tuple[Path, str],
               facts: dict[str, Any]) -> None:
    """The config keys that apply to this run as parameters and the prepared file (path,
    SHA-256) as the training data."""
    from pipeline.tracking.params import run_params

    prep_path, prep_sha = prepared
    tracker.log_params(run_id, run_params(spec.config))
    tracker.log_dataset(run_id, prep_path.stem, prep_sha, prep_path, "train", {
        k: facts.get(k) for k in ("n_train", "n_test", "n_features_out", "n_classes", "task")})


def log_result(tracker: Any, run_id: str, result: Any, metrics: dict[str, Any], out_dir: Path,
               start_ms: int) -> None:
    """History (``objective``, ``grad_norm``, ... per step at ``start_ms`` (the fit's start) + the
    run's own clock), the final values the history lacks, status and the run files."""
    from pipeline.tracking.metrics import final_points

    tracker.log_history(run_id, {k: np.asarray(v) for k, v in result.history.items()}, start_ms)
    tracker.log_points(run_id, final_points(metrics, int(time.time() * 1000)))
    tracker.log_tags(run_id, {"curvlab.status": metrics["status"]})
    tracker.log_artifacts(run_id, [out_dir / name for name in (
        "metrics.json", "run.json", "timing.json", "config.yaml", "history.csv")])


def log_run_subopt(tracker: Any, run_id: str, spec: RunSpec, obj_id: str) -> None:
    """``subopt`` = f − f* per step when the objective's reference optimum exists already (else
    ``pipeline.reference`` adds it when it solves f*)."""
    from pipeline.tracking.subopt import certified_f_star, log_subopt

    f_star = certified_f_star(spec.reference_dir, obj_id)
    if f_star is not None:
        log_subopt(tracker, run_id, f_star)


def summary_line(out_dir: Path, metrics: dict[str, Any]) -> str:
    """``train: <run>: <status> after <n> iterations, loss …, accuracies (seconds) -> <dir>``."""
    acc = (
        ""
        if metrics["test_accuracy"] is None
        else f", test accuracy {metrics['test_accuracy']:.4f}"
    )
    if metrics["val_accuracy"] is not None:
        acc += f", validation accuracy {metrics['val_accuracy']:.4f}"
    return (f"{PROG}: {out_dir.name}: {metrics['status']} after {metrics['iterations']} "
            "iterations, "
            f"loss {metrics['train_loss']:.6g}{acc} ({metrics['train_time_s']:.1f} s) -> {out_dir}")


def summarize(spec: RunSpec, objective: Any, dataset: Any, result: Any, seconds: float,
              run_id: str | None, val: tuple[Any, Any] | None = None,
              objective_name: str | None = None) -> dict[str, Any]:
    """The metrics.json fields of docs/architecture.md (val_* from the validation split, if any;
    ``objective`` = ``pipeline.spec.objective_id`` of the run). The data, the objective and
    ``result.w`` are on the run's backend; every value returned is a Python scalar."""
    has_val = val is not None
    X_val, y_val = val if val is not None else (None, None)
    score_test = spec.score_test
    w = result.w
    with np.errstate(all="ignore"):  # loss and gradient of exactly the saved w (a diverged run's
        f_w, g_w = objective.value_grad(w)  # history ends with the step that blew up, not w)
    finite = np.isfinite(np.asarray(result.history["loss"], dtype=np.float64))
    last = int(np.flatnonzero(finite)[-1]) if finite.any() else 0
    classify = dataset.task != "regression"
    return {
        "study": spec.study,
        "data": spec.data_id,
        "preprocess": spec.preprocess_id,
        "model": spec.model_id,
        "optimizer": spec.optimizer_id,
        "l2": spec.model.l2,
        "objective": objective_name,
        "lr": None if result.lr is None else float(result.lr),
        "n_params": int(objective.n_params),
        "fit_intercept": spec.fit_intercept,
        "status": str(result.status),
        "converged": result.status == "converged",
        "message": str(result.message),
        "iterations": int(result.n_iter),
        "passes": float(np.asarray(result.history["passes"], dtype=np.float64)[last]),  # work done
        "cg_iterations": int(result.info["cg_iterations"])
        if "cg_iterations" in result.info
        else None,
        "train_loss": float(f_w),
        "grad_norm": float(np.linalg.norm(to_numpy(g_w))),
        "train_time_s": float(seconds),
        "train_accuracy": accuracy(objective.predict_train(w), dataset.y_train)
        if classify
        else None,
        "test_accuracy": accuracy(objective.predict(dataset.X_test, w), dataset.y_test)
        if classify and score_test
        else None,
        "test_loss": float(objective.predict_loss(dataset.X_test, dataset.y_test, w))
        if score_test
        else None,
        "val_accuracy": accuracy(objective.predict(X_val, w), y_val)
        if classify and has_val
        else None,
        "val_loss": float(objective.predict_loss(X_val, y_val, w)) if has_val else None,
        "n_val": int(y_val.shape[0]) if has_val else 0,
        "mlflow_run_id": run_id,
    }


def save_run(
    out_dir: Path, spec: RunSpec, objective: Any, result: Any, metrics: dict[str, Any]
) -> None:
    """The run folder (``pipeline.store.rundir.write_run``) of a finished fit, as host numpy
    arrays whatever the backend; never NaN weights."""
    w = to_numpy(result.w)
    if not np.all(np.isfinite(w)):  # the optimizer contract says never; do not save NaN weights
        raise NumericalError(f"optimizer returned non-finite weights for {out_dir.name}; nothing "
                             "saved")
    coef, intercept = objective.unpack(result.w)
    write_run(out_dir, spec.config_yaml, result.history,
              {"w": w, "coef": np.asarray(to_numpy(coef)),
               "intercept": np.asarray(to_numpy(intercept))}, metrics)


def job(cfg: DictConfig, ctx: JobContext) -> float | None:
    """One train job (see the module docstring). In a sweep with ``sweep_metric`` set (a tuning
    study) it returns that metric for the sweeper and leaves ``<sweep dir>/trials/<job>.json``
    for ``pipeline.tuning``."""
    metrics = train(cfg, ctx)
    key = cfg.get("sweep_metric")
    if not key:
        return None
    record_trial(ctx, metrics)
    value = metrics.get(key)
    return None if value is None else float(value)  # None: the sweeper records a failed trial


main = stage(PROG, TrainConfig)(job)

if __name__ == "__main__":
    main()
