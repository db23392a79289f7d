"""``python -m pipeline.analytic``: the lecture's analytic studies (claims 1–3), computed as a
stage.

    python -m pipeline.analytic [analytic.kappa_sweep.condition_numbers=[1.0,1.0e2]] ...

Claim 1: GD paths on 2-D quadratics for step sizes below, near and above 2/L; claim 2: GD
iterations to tolerance against κ on synthetic least squares, raw vs whitened, and per method
(``kappa_sweep.methods``: gd, heavy ball, Nesterov, L-BFGS, Newton with L and μ exact) the
iterations to ‖∇f‖ ≤ 1e-8 against κ with the fitted log–log slopes (``iterations_<method>.csv``,
``slopes.csv`` beside the study's table); claim 3: convexity
read off the Hessian's smallest eigenvalue (the lecture's exercise functions on a grid, and linear /
logistic / softmax regression on an MNIST subsample); claim 7 (``adam_scaling``): Adam's
effective per-coordinate step η/(√v̂ + δ) against 1/diag ∇²f at Adam's iterates, by Spearman rank
correlation, on a quadratic and on MNIST softmax. The numerics are ``pipeline.core.studies`` and
``pipeline.core.adam_scaling``; this shell writes, per study, ``<paths.analytic_dir>/<study>/``
= ``table.csv`` (typed columns), ``arrays.npz`` (what the report's figures draw) and
``study.json`` (``{name, title, params, metrics, figures, seconds}``), the folder replaced as a
whole, and logs each study as one MLflow run (experiment = the study name) with those files as
artifacts. The report only renders them.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.cli.entry import stage
from pipeline.config.checks import check_boundary, config_keys
from pipeline.config.schemas import (
    AnalyticConfig,
    as_kwargs,
)
from pipeline.core.errors import ConfigError
from pipeline.core.memory import (
    MEMORY_GB,
    check_memory,
    check_memory_gb,
    hessian_bytes,
    prepare_bytes,
    synthetic_bytes,
)
from pipeline.spec import group_id
from pipeline.tracking.sweep import JobContext

PROG = "analytic"


@dataclass
class Study:
    """One computed study: its table, the arrays its figures need, scalar results, and further
    tables (written as ``<key>.csv``)."""

    name: str  # the MLflow experiment and folder name, e.g. claim1_gd_paths
    title: str
    table: pd.DataFrame
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    figures: list[dict[str, Any]] = field(default_factory=list)  # what to draw from ``arrays``
    params: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def validate(a: Mapping[str, Any]) -> None:
    """Range checks Hydra cannot do; a one-line ConfigError naming the key."""
    unknown = sorted(set(a["studies"]) - set(STUDIES))
    if unknown:
        raise ConfigError(f"analytic.studies: unknown {unknown}; choose from {list(STUDIES)}")
    for t in a["gd_paths"]["functions"]:
        if min(float(t["a"]), float(t["b"])) <= 0:
            raise ConfigError(f"analytic.gd_paths: {t.get('name')} needs a, b > 0 (a convex "
                              "quadratic)")
    if int(a["gd_paths"]["n_steps"]) < 1 or int(a["kappa_sweep"]["max_iter"]) < 1:
        raise ConfigError("analytic.gd_paths.n_steps and analytic.kappa_sweep.max_iter must be >= "
                          "1")
    if not float(a["kappa_sweep"]["tol"]) > 0:
        raise ConfigError("analytic.kappa_sweep.tol must be > 0, e.g. 1.0e-6")
    validate_methods(a["kappa_sweep"].get("methods"))
    validate_adam_scaling(a.get("adam_scaling"))
    from pipeline.core.theory import LECTURE_FUNCTIONS

    unknown = [f for f in a["convexity"]["functions"] if f not in LECTURE_FUNCTIONS]
    if unknown:
        raise ConfigError(f"analytic.convexity.functions: unknown {unknown}; choose from "
                          f"{sorted(LECTURE_FUNCTIONS)}")


def validate_methods(m: Mapping[str, Any] | None) -> None:
    """``analytic.kappa_sweep.methods``: known method names, tol > 0, max_iter ≥ 1."""
    if not m:
        return
    from pipeline.core.solvers import METHODS

    unknown = [n for n in m["names"] if n not in METHODS or n in ("sgd", "closed_form")]
    if unknown:
        raise ConfigError(f"analytic.kappa_sweep.methods.names: unknown {unknown}; choose from "
                          f"{[k for k in METHODS if k not in ('sgd', 'closed_form')]}")
    if not float(m["tol"]) > 0 or int(m["max_iter"]) < 1:
        raise ConfigError("analytic.kappa_sweep.methods.tol must be > 0 and "
                          "analytic.kappa_sweep.methods.max_iter >= 1")


def validate_adam_scaling(c: Mapping[str, Any] | None) -> None:
    """``analytic.adam_scaling``: lr > 0, checkpoints ≥ 1, models among the registered ones."""
    if not c:
        return
    from pipeline.core.objectives import MODELS

    if not float(c["lr"]) > 0 or not c["checkpoints"] or min(int(k) for k in c["checkpoints"]) < 1:
        raise ConfigError("analytic.adam_scaling.lr must be > 0 and its checkpoints integers >= 1, "
                          "e.g. lr: 1.0e-3, checkpoints: [10, 100]")
    unknown = [p["model"] for p in c["problems"] if p["model"] not in MODELS]
    if unknown:
        raise ConfigError(f"analytic.adam_scaling.problems: unknown model {unknown}; choose from "
                          f"{sorted(MODELS)}")


def check_study_memory(a: Mapping[str, Any], memory_gb: float) -> None:
    """The κ sweep's synthetic problem and its whitening fit the budget (before any study runs)."""
    if "kappa_sweep" not in a["studies"]:
        return
    from pipeline.data.catalog import complete

    data = complete(dict(a["kappa_sweep"]["data"]))
    n, d = int(data.get("n_samples", 2000)), int(data.get("n_features", 20))
    need = max(synthetic_bytes(n, d), prepare_bytes(n, d) + hessian_bytes(d + 1))
    check_memory(need, f"analytic.kappa_sweep on {n} × {d} synthetic data", memory_gb,
                 "lower analytic.kappa_sweep.data.n_features or n_samples")


def gd_paths(c: Mapping[str, Any], seed: int, memory_gb: float = MEMORY_GB) -> Study:
    """Claim 1: the GD path per learning rate on each quadratic, and the predicted behaviour."""
    from pipeline.core.studies import study_gd_paths

    figs, table = study_gd_paths(c)
    st = Study(str(c["study"]), "Claim 1 — the learning rate", table)
    for f in figs:
        gx, gy, gf = f["grid"]
        key = str(f["name"])
        st.arrays |= {f"{key}/x": gx, f"{key}/y": gy, f"{key}/f": gf}
        labels = []
        for i, (label, pts) in enumerate(f["paths"]):
            st.arrays[f"{key}/path{i}"] = pts
            labels.append(label)
        st.figures.append({"kind": "gd_paths", "key": key, "title": f["title"], "labels": labels})
    for rec in table.itertuples():
        st.metrics[f"f_end_minus_f_star.{rec.function}.lr_{rec.lr:g}"] = float(
            min(rec.f_end_minus_f_star, 1e300)
        )
    st.metrics["disagreements"] = float(table["predicted"].str.contains("disagrees").sum())
    return st


def kappa_sweep(c: Mapping[str, Any], seed: int, memory_gb: float = MEMORY_GB) -> Study:
    """Claim 2: GD iterations to ‖∇f‖ ≤ tol against κ, raw vs whitened; the log–log slope."""
    from pipeline.core.studies import study_kappa_sweep
    from pipeline.data.datasets import load_dataset

    with_ids = [{**p, "id": group_id(p)} for p in c["preprocess"]]
    load = functools.partial(load_dataset, memory_gb=memory_gb)
    table = study_kappa_sweep({**c, "preprocess": with_ids}, load, seed)
    st = Study(str(c["study"]), "Claim 2 — condition number and whitening", table)
    ids = [group_id(p) for p in c["preprocess"]]
    raw = table[table["preprocess"] == ids[0]]
    # κ ≈ 1 takes one step whatever the tolerance: not the κ·ln(1/tol) regime
    if (raw["kappa_raw"] > 1.5).sum() >= 2:
        raw = raw[raw["kappa_raw"] > 1.5]
    if len(raw) >= 2:
        slope = np.polyfit(np.log(raw["kappa_raw"]), np.log(raw["iterations"].clip(lower=1)), 1)[0]
        st.metrics["loglog_slope_iterations_vs_kappa"] = float(slope)
    white = table[table["preprocess"] == ids[-1]]
    if len(ids) > 1 and len(white):
        st.metrics["whitened_max_iterations"] = float(white["iterations"].max())
        st.metrics["whitened_max_kappa"] = float(white["kappa"].max())
    st.figures.append({"kind": "iterations_vs_kappa", "title": "GD iterations until ‖∇f‖ ≤ "
                                                               f"{float(c['tol']):g} against κ"})
    if c.get("methods"):
        kappa_methods(st, c, load, seed)
    return st


def kappa_methods(st: Study, c: Mapping[str, Any], load: Callable[..., Any], seed: int) -> None:
    """Claim 2 per method: ``iterations_<method>.csv`` and ``slopes.csv`` beside the GD table, the
    slopes as metrics ``loglog_slope.<method>``."""
    from pipeline.core.studies import study_kappa_methods

    tables, slopes = study_kappa_methods(c, load, seed)
    st.tables = {f"iterations_{n}": t for n, t in tables.items()} | {"slopes": slopes}
    for rec in slopes.itertuples():
        if np.isfinite(rec.slope):
            st.metrics[f"loglog_slope.{rec.method}"] = float(rec.slope)
    st.figures.append({"kind": "iterations_vs_kappa_methods", "tables": list(st.tables),
                       "title": "Iterations until ‖∇f‖ ≤ "
                                f"{float(c['methods']['tol']):g} against κ, per method"})


def convexity(c: Mapping[str, Any], seed: int, memory_gb: float = MEMORY_GB) -> Study:
    """Claim 3: λ_min of the Hessian on the exercise functions' grid and of each model on real
    data."""
    from pipeline.core.studies import study_convexity_functions, study_convexity_models
    from pipeline.data.datasets import load_dataset

    maps, ftab = study_convexity_functions(c)
    load = functools.partial(load_dataset, memory_gb=memory_gb)
    models = study_convexity_models(c, load, seed, memory_gb=memory_gb)
    table = pd.concat([ftab, models], ignore_index=True)
    st = Study(str(c["study"]), "Claim 3 — convexity", table)
    titles = []
    for i, (label, gx, gy, lam) in enumerate(maps):
        st.arrays |= {f"map{i}/x": gx, f"map{i}/y": gy, f"map{i}/lambda_min": lam}
        titles.append(label)
    st.figures.append({"kind": "min_eig_maps", "labels": titles,
                       "title": "λ_min of the Hessian (blue ≥ 0: convex there; red < 0: not)"})
    for rec in table.itertuples():
        st.metrics[f"min_eig.{rec.problem}"] = float(rec.min_eig_min)
    return st


def adam_scaling(c: Mapping[str, Any], seed: int, memory_gb: float = MEMORY_GB) -> Study:
    """Claim 7: Adam's effective step η/(√v̂ + δ) against 1/diag ∇²f at Adam's own iterates, by
    Spearman rank correlation over the coordinates, per problem and checkpoint."""
    from pipeline.core.adam_scaling import study_adam_scaling
    from pipeline.data.datasets import load_dataset

    load = functools.partial(load_dataset, memory_gb=memory_gb)
    table, arrays = study_adam_scaling(c, load, seed)
    st = Study(str(c["study"]), "Claim 7 — Newton inspired Adam", table, arrays)
    for rec in table.itertuples():
        st.metrics[f"spearman.{rec.problem}.it{rec.iteration}"] = float(
            rec.spearman_step_vs_inv_hess_diag)
    st.figures.append({"kind": "adam_step_vs_inv_hess_diag",
                       "keys": sorted({k.rsplit("/", 1)[0] for k in arrays}),
                       "title": "Adam's step η/(√v̂ + δ) against 1/diag ∇²f, per coordinate"})
    return st


STUDIES: dict[str, Callable[[Mapping[str, Any], int, float], Study]] = {
    "gd_paths": gd_paths, "kappa_sweep": kappa_sweep, "convexity": convexity,
    "adam_scaling": adam_scaling}


def _metric_name(key: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:250]


def write_study(root: Path, st: Study, seconds: float) -> Path:
    """``<root>/<name>/`` = table.csv, arrays.npz, study.json (``pipeline.store.studies``)."""
    from pipeline.store.studies import write_study as write

    meta = {"name": st.name, "title": st.title, "params": st.params, "metrics": st.metrics,
            "figures": st.figures, "seconds": seconds}
    if st.tables:
        meta["tables"] = list(st.tables)
    return write(root, st.name, st.table, st.arrays, meta, st.tables)


def log_study(cfg: Mapping[str, Any], st: Study, dest: Path) -> str:
    """One MLflow run per study (experiment = its name) with params, metrics and its files."""
    from pipeline.tracking.mlflow import Tracker, flatten, git_commit

    tracker = Tracker(cfg["mlflow"])
    run_id = tracker.start_run(st.name, "analytic", {"curvlab.kind": "analytic-study",
                                                     "mlflow.source.git.commit": git_commit()})
    try:
        tracker.log_params(run_id, flatten(st.params))
        tracker.log_metrics(run_id, {_metric_name(k): v for k, v in st.metrics.items()})
        tracker.log_artifacts(
            run_id, [dest / "table.csv", dest / "arrays.npz", dest / "study.json",
                     *(dest / f"{key}.csv" for key in st.tables)]
        )
    except BaseException:
        with contextlib.suppress(Exception):
            tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return run_id


@config_keys()
def run_analytic(cfg: Mapping[str, Any]) -> list[Path]:
    """Compute every selected study, then write and log them; returns their folders."""
    from pipeline.config.paths import project_path
    from pipeline.store.writer import check_writable

    a = cfg["analytic"]
    validate(a)
    memory_gb = check_memory_gb((cfg.get("limits") or {}).get("memory_gb", MEMORY_GB))
    check_study_memory(a, memory_gb)
    root = project_path(cfg["paths"]["analytic_dir"])
    check_writable(root)
    computed = []
    for key in a["studies"]:  # every study first: a bad value found in a later one replaces nothing
        t0 = time.perf_counter()
        st = STUDIES[key](a[key], int(cfg["seed"]), memory_gb)
        st.params = {k: v for k, v in a[key].items() if k != "study"}
        computed.append((st, time.perf_counter() - t0))
    out = []
    for st, seconds in computed:
        dest = write_study(root, st, seconds)
        if cfg["mlflow"]["enabled"]:
            try:
                log_study(cfg, st, dest)
            except Exception as err:  # noqa: BLE001 - the study is written; tracking is an extra
                msg = " ".join(str(err).split())[:300]
                print(f"{PROG}: warning: MLflow logging of {st.name} failed ({msg}); its files "
                      "are complete",
                      file=sys.stderr)
        print(f"{PROG}: {st.name}: {len(st.table)} rows, {seconds:.1f} s -> {dest}", flush=True)
        out.append(dest)
    return out


def job(cfg: DictConfig, _ctx: JobContext) -> None:
    """Hydra job (see the module docstring)."""
    check_boundary(cfg)
    run_analytic(as_kwargs(cfg))


main = stage(PROG, AnalyticConfig)(job)

if __name__ == "__main__":
    main()
