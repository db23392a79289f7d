"""``python -m pipeline.reference``: the reference optimum f* of a run's objective, as its own
stage.

    python -m pipeline.reference experiment=default_softmax preprocess=none

The overrides name a run exactly as for ``train`` (data, preprocess, model, presets); the stage
loads the prepared data they name, builds that run's objective (``pipeline.spec``), minimizes
it with damped Newton to ‖∇f‖ ≤ ``reference.tol`` (``pipeline.core.optima.solve``: it stops on the
tolerance and ``reference.max_iter`` only, never on wall-clock time) and writes
``<paths.reference_dir>/<objective id>.json``. With ``preprocess.penalty_space=input`` every
preprocessing of a data set has the same objective id, so one solve serves all of them; for each
preprocess id in ``reference.kappa_in`` w* is mapped into those coordinates
(``Transform.transformed_weights``), checked to be the optimum there too, and μ, L, κ of the
Hessian in those coordinates are added (where the Hessian fits densely).

File: ``{objective, data, model, l2, fit_intercept, solved_in, prepared, prepared_sha256, method,
status, converged, message, iterations, cg_iterations, tol, f_star, grad_norm, n_params, n_train,
seconds, coordinates: {<preprocess id>: {f, grad_norm, iterations, mu, L_local, kappa, L_bound,
rate_gd, rate_gd_lr_auto, rate_heavy_ball, rate_nesterov}}, init}`` (the predicted linear rates of
``core.theory.predicted_rates``, null where μ ≤ 0; ``reference.init``: the weights the solve
started from, null: 0).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.cli.entry import stage
from pipeline.config.checks import check_boundary, check_name, config_keys
from pipeline.config.schemas import ReferenceConfig
from pipeline.core.errors import ConfigError, DataError
from pipeline.spec import RunSpec, objective_id, prepared_stem, run_objective
from pipeline.store.prepared import (
    check_model_fits_data,
    file_sha256,
    load_prepared_for,
    prepared_path,
    read_facts,
)
from pipeline.store.references import check_reference_writable, write_reference
from pipeline.store.rundir import read_weights
from pipeline.tracking.sweep import JobContext

PROG = "reference"
NONCONVEX = ("logistic_mse",)  # no global optimum to certify
SAME_F_RTOL = 1.0e-9  # f at w* mapped into kappa_in coordinates vs f*: rounding only


def validate(cfg: Any) -> None:
    """The reference options, checked before any work (a one-line ConfigError naming the key)."""
    from pipeline.core.solvers import PRECONDITIONERS

    r = cfg.reference
    if not (r.tol > 0):
        raise ConfigError(f"reference.tol={r.tol} must be > 0, e.g. 1.0e-9 (the solve stops at "
                          "‖∇f‖ ≤ tol)")
    if r.max_iter < 1 or r.cg_max_iter < 1 or r.dense_max < 0:
        raise ConfigError("reference.max_iter and reference.cg_max_iter must be >= 1, "
                          "reference.dense_max >= 0")
    if r.preconditioner not in PRECONDITIONERS:
        raise ConfigError(f"reference.preconditioner={r.preconditioner!r} is unknown; use one of "
                          f"{', '.join(PRECONDITIONERS)}")
    for other in r.kappa_in:
        check_name("reference.kappa_in", other)
    if cfg.model.name in NONCONVEX:
        raise ConfigError(f"model={cfg.model.name} is not convex: it has no certified reference "
                          "optimum; "
                          "use a convex model (linear, logistic, softmax)")


# the overrides of a reference command that also name its prepared data for ``prepare``
PREPARE_GROUPS = ("experiment", "data", "model", "seed")


def _names_data(override: str) -> bool:
    """The override sets the preset, data, model, seed or prepared folder."""
    key = override.partition("=")[0].lstrip("+~")
    return key.split(".")[0] in PREPARE_GROUPS or key == "paths.prepared_dir"


def prepare_command(spec: RunSpec, pre_id: str) -> str:
    """The ``prepare`` command making ``<data.id>-<pre_id>``: the run's preset, data, model, seed
    and prepared-folder overrides with ``preprocess=<pre_id>``."""
    keep = [o for o in spec.overrides if _names_data(o)]
    return " ".join(["python -m pipeline.prepare", *keep, f"preprocess={pre_id}"])


def other_coordinates(spec: RunSpec, pre_id: str) -> RunSpec:
    """The run with the preprocessing of ``<data.id>-<pre_id>`` (from that file's facts)."""
    facts_path = prepared_path(spec.prepared_dir, prepared_stem(spec.data_id, pre_id)).with_suffix(
        ".json"
    )
    facts = read_facts(facts_path, missing=(
        f"reference.kappa_in={pre_id}: run `{prepare_command(spec, pre_id)}` first"))
    pre = facts.get("preprocess_config")
    if not isinstance(pre, dict):
        raise DataError(f"{facts_path}: unreadable prepared facts (no preprocess_config); rerun "
                        "`python -m pipeline.prepare`")
    other = OmegaConf.create(dict(spec.config))
    other.preprocess = pre
    return RunSpec.from_config(other, spec.overrides)


def kappa_objectives(spec: RunSpec, oid: str, dense: bool) -> list[tuple[str, Any, Any]]:
    """(preprocess id, objective, transform) of every ``reference.kappa_in`` coordinates, checked to
    be the same objective (also where κ is not computed: not dense)."""
    others = []
    for other in spec.config["reference"]["kappa_in"]:
        if other == spec.preprocess_id:
            continue
        ospec = other_coordinates(spec, str(other))
        ods, otr, _ofacts, opath = load_prepared_for(ospec)
        if objective_id(ospec, otr) != oid:
            raise ConfigError(f"reference.kappa_in={other}: {opath.name} has objective "
                              f"{objective_id(ospec, otr)}, not {oid} (its penalty acts on the "
                              "transformed "
                              "weights); list only preprocessings with "
                              "preprocess.penalty_space=input")
        if dense:
            others.append((str(other), run_objective(ospec.model, ods, otr), otr))
        del ods  # not held during the solve where κ is not computed
    return others


def initial_weights(init: Any, n_params: int, pre_id: str) -> np.ndarray | None:
    """The solve's start w0: the ``w`` of the weights.npz ``reference.init`` names (None: 0).

    A warm start from a run that nearly solved the objective saves most Newton steps; the solve
    still stops on ``reference.tol`` only, so f* stays certified (f − f* ≤ ‖∇f‖²/(2μ)).
    """
    if init is None:
        return None
    path = Path(str(init))
    if not path.is_file():
        raise ConfigError(f"reference.init={init}: no such weights file; train that run first "
                          "(or `dvc repro`), or set reference.init=null to start at 0")
    w = read_weights(path)
    if w.shape != (n_params,):
        raise ConfigError(f"reference.init={init} holds {w.size} weights but the objective has "
                          f"{n_params}; name the weights.npz of a run of this objective in "
                          f"{pre_id} coordinates, or set reference.init=null")
    return w


@config_keys()
def reference(cfg: DictConfig, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Solve the run's objective to the reference tolerance and write its JSON (and, converged,
    ``subopt`` onto the finished MLflow runs of that objective); returns the record."""
    from pipeline.core.optima import solve

    check_boundary(cfg)
    validate(cfg)
    spec = RunSpec.from_config(cfg, overrides)
    r = spec.config["reference"]
    dataset, transform, _facts, path = load_prepared_for(spec)
    check_model_fits_data(spec.model.name, dataset.task, spec.data_id)
    objective = run_objective(spec.model, dataset, transform)
    oid = objective_id(spec, transform)
    out = check_reference_writable(spec.reference_dir, oid)
    opts = {
        "tol": float(r["tol"]),
        "max_iter": int(r["max_iter"]),
        "dense_max": int(r["dense_max"]),
        "cg_max_iter": int(r["cg_max_iter"]),
        "preconditioner": str(r["preconditioner"]),
    }
    dense = objective.n_params <= opts["dense_max"]
    others = kappa_objectives(spec, oid, dense)
    w0 = initial_weights(r.get("init"), int(objective.n_params), spec.preprocess_id)
    t0 = time.perf_counter()
    s = solve(objective, w0=w0, **opts)
    seconds = time.perf_counter() - t0
    coords = coordinates(spec, s, (objective, transform), others, opts, dense)
    record = {
        "objective": oid, "data": spec.data_id, "model": spec.model.name, "l2": spec.model.l2,
        "fit_intercept": spec.model.fit_intercept, "solved_in": spec.preprocess_id,
        "prepared": str(path), "prepared_sha256": file_sha256(path), "method": s.method,
        "status": s.status, "converged": s.status == "converged", "message": s.message,
        "iterations": s.iterations, "cg_iterations": s.cg_iterations, "tol": opts["tol"],
        "f_star": s.f_star, "grad_norm": s.grad_norm, "n_params": int(objective.n_params),
        "n_train": int(dataset.X_train.shape[0]), "seconds": seconds, "coordinates": coords,
        "init": r.get("init"),
    }
    write_reference(spec.reference_dir, record)
    annotated = 0
    if s.status == "converged":
        from pipeline.tracking.subopt import subopt_of_finished_runs

        annotated = subopt_of_finished_runs(dict(spec.mlflow), oid, s.f_star, PROG)
    kappas = ", ".join(f"κ({k}) = {v['kappa']:.3g}" for k, v in coords.items())
    print(f"{PROG}: {oid}: f* = {s.f_star:.15g}, ‖∇f‖ = {s.grad_norm:.1e} ({s.status} after "
          f"{s.iterations} "
          f"{s.method} steps in {spec.preprocess_id} coordinates, {seconds:.1f} s)"
          f"{'; ' + kappas if kappas else ''} -> {out}"
          f"{f'; subopt logged on {annotated} MLflow run(s)' if annotated else ''}", flush=True)
    if s.status != "converged":
        print(f"{PROG}: warning: {oid}: {s.message}; the report will not certify this f* "
              "(raise reference.max_iter or reference.tol)", file=sys.stderr)
    return record


def coordinates(spec: RunSpec, s: Any, solved: tuple[Any, Any], others: list[tuple[str, Any, Any]],
                opts: dict[str, Any], dense: bool) -> dict[str, dict[str, Any]]:
    """f, ‖∇f‖ and μ, L, κ of ∇²f(w*) in the solve's coordinates and each ``kappa_in`` one (w*
    mapped there, checked to give the same f, then polished)."""
    from pipeline.core.optima import curvature, map_weights, solve

    objective, transform = solved
    coords: dict[str, dict[str, Any]] = {}
    if dense:
        coords[spec.preprocess_id] = {"f": s.f_star, "grad_norm": s.grad_norm, "iterations": 0,
                                      **curvature(objective, s.w)}
    for other, oobj, otr in others:
        w0 = map_weights(s.w, objective, transform, oobj, otr)
        # the same predictions and penalty: the same f, else not the same objective
        f0 = float(oobj.value(w0))
        if not abs(f0 - s.f_star) <= SAME_F_RTOL * abs(s.f_star) + opts["tol"] ** 2:
            raise ConfigError(f"reference.kappa_in={other}: w* mapped into {other} coordinates has "
                              "f = "
                              f"{f0:.15g}, not f* = {s.f_star:.15g}: {other} and "
                              f"{spec.preprocess_id} are "
                              "not one objective (e.g. a model without intercept on inputs with an "
                              "offset); "
                              "drop it from reference.kappa_in")
        polished = solve(oobj, w0=w0, **opts)  # w* mapped is the optimum there too: 0-2 steps
        coords[other] = {"f": polished.f_star, "grad_norm": polished.grad_norm,
                         "iterations": polished.iterations, **curvature(oobj, polished.w)}
    return coords


def job(cfg: DictConfig, ctx: JobContext) -> None:
    """Hydra job (see the module docstring)."""
    reference(cfg, ctx.overrides)


main = stage(PROG, ReferenceConfig)(job)

if __name__ == "__main__":
    main()
