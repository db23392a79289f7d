"""``python -m pipeline.reference``: the reference optimum f* of a run's objective, as its own stage.

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
seconds, coordinates: {<preprocess id>: {f, grad_norm, iterations, mu, L_local, kappa, L_bound}}}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.cli.entry import user_errors_exit
from pipeline.config.checks import check_boundary, check_name, config_keys
from pipeline.config.paths import project_path
from pipeline.config.schemas import ReferenceConfig, as_kwargs, register_configs
from pipeline.core.errors import ConfigError, DataError
from pipeline.spec import group_id
from pipeline.store.rundir import check_model_fits_data, load_prepared_for
from pipeline.store.writer import check_writable, write_json

PROG = "reference"
NONCONVEX = ("logistic_mse",)  # no global optimum to certify
SAME_F_RTOL = 1.0e-9  # f at w* mapped into kappa_in coordinates vs f*: rounding only


def validate(cfg: Any) -> None:
    """The reference options, checked before any work (a one-line ConfigError naming the key)."""
    from pipeline.core.solvers import PRECONDITIONERS

    r = cfg.reference
    if not (r.tol > 0):
        raise ConfigError(f"reference.tol={r.tol} must be > 0, e.g. 1.0e-9 (the solve stops at ‖∇f‖ ≤ tol)")
    if r.max_iter < 1 or r.cg_max_iter < 1 or r.dense_max < 0:
        raise ConfigError("reference.max_iter and reference.cg_max_iter must be >= 1, reference.dense_max >= 0")
    if r.preconditioner not in PRECONDITIONERS:
        raise ConfigError(f"reference.preconditioner={r.preconditioner!r} is unknown; use one of "
                          f"{', '.join(PRECONDITIONERS)}")
    for other in r.kappa_in:
        check_name("reference.kappa_in", other)
    if cfg.model.name in NONCONVEX:
        raise ConfigError(f"model={cfg.model.name} is not convex: it has no certified reference optimum; "
                          "use a convex model (linear, logistic, softmax)")


def _other_coordinates(cfg: Any, pre_id: str) -> DictConfig:
    """The run config with the preprocessing of ``<data.id>-<pre_id>`` (from that file's facts)."""
    from pipeline.store.prepared import prepared_path

    facts_path = prepared_path(project_path(cfg.paths.prepared_dir), cfg.data, {"id": pre_id}).with_suffix(".json")
    try:
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
        pre = dict(facts["preprocess_config"])
    except FileNotFoundError:
        raise DataError(f"{facts_path} not found (reference.kappa_in={pre_id}); run `python -m pipeline.prepare "
                        f"data={cfg.data.name} preprocess={pre_id}` first") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{facts_path}: unreadable prepared facts ({err}); rerun `python -m pipeline.prepare`") from None
    other = OmegaConf.create(as_kwargs(cfg))
    other.preprocess = pre
    return other


@config_keys()
def reference(cfg: DictConfig) -> dict[str, Any]:
    """Solve the run's objective to the reference tolerance and write its JSON; returns the record."""
    from pipeline.core.optima import curvature, map_weights, solve
    from pipeline.spec import objective_id, run_objective
    from pipeline.store.prepared import file_sha256

    check_boundary(cfg)
    validate(cfg)
    r = cfg.reference
    dataset, transform, facts, path = load_prepared_for(cfg)
    check_model_fits_data(cfg.model.name, dataset.task, cfg.data.id)
    objective = run_objective(cfg, dataset, transform)
    oid = objective_id(cfg, transform)
    out = project_path(cfg.paths.reference_dir) / f"{oid}.json"
    check_writable(out)
    opts = {"tol": float(r.tol), "max_iter": int(r.max_iter), "dense_max": int(r.dense_max),
            "cg_max_iter": int(r.cg_max_iter), "preconditioner": str(r.preconditioner)}
    solved_in = group_id(cfg.preprocess)
    dense = objective.n_params <= int(r.dense_max)
    others = []  # every kappa_in is checked before the solve, also where κ is not computed (not dense)
    for other in r.kappa_in:
        if other == solved_in:
            continue
        ocfg = _other_coordinates(cfg, str(other))
        ods, otr, _ofacts, opath = load_prepared_for(ocfg)
        if objective_id(ocfg, otr) != oid:
            raise ConfigError(f"reference.kappa_in={other}: {opath.name} has objective {objective_id(ocfg, otr)}, "
                              f"not {oid} (its penalty acts on the transformed weights); list only "
                              "preprocessings with preprocess.penalty_space=input")
        if dense:
            others.append((str(other), run_objective(ocfg, ods, otr), otr))
        del ods  # not held during the solve where κ is not computed
    t0 = time.perf_counter()
    s = solve(objective, **opts)
    seconds = time.perf_counter() - t0
    coords: dict[str, dict[str, Any]] = {}
    if dense:
        coords[solved_in] = {"f": s.f_star, "grad_norm": s.grad_norm, "iterations": 0,
                             **curvature(objective, s.w)}
    for other, oobj, otr in others:
        w0 = map_weights(s.w, objective, transform, oobj, otr)
        f0 = float(oobj.value(w0))  # the same predictions and penalty: the same f, else not the same objective
        if not abs(f0 - s.f_star) <= SAME_F_RTOL * abs(s.f_star) + float(r.tol) ** 2:
            raise ConfigError(f"reference.kappa_in={other}: w* mapped into {other} coordinates has f = {f0:.15g}, "
                              f"not f* = {s.f_star:.15g}: {other} and {solved_in} are not one objective (e.g. a "
                              "model without intercept on inputs with an offset); drop it from reference.kappa_in")
        polished = solve(oobj, w0=w0, **opts)  # w* mapped is the optimum there too: 0-2 steps
        coords[str(other)] = {"f": polished.f_star, "grad_norm": polished.grad_norm,
                              "iterations": polished.iterations, **curvature(oobj, polished.w)}
    record = {
        "objective": oid, "data": str(cfg.data.id), "model": str(cfg.model.name), "l2": float(cfg.model.l2),
        "fit_intercept": bool(cfg.model.fit_intercept), "solved_in": solved_in, "prepared": str(path),
        "prepared_sha256": file_sha256(path), "method": s.method, "status": s.status,
        "converged": s.status == "converged", "message": s.message, "iterations": s.iterations,
        "cg_iterations": s.cg_iterations, "tol": float(r.tol), "f_star": s.f_star, "grad_norm": s.grad_norm,
        "n_params": int(objective.n_params), "n_train": int(dataset.X_train.shape[0]), "seconds": seconds,
        "coordinates": coords,
    }
    write_json(out, record)
    kappas = ", ".join(f"κ({k}) = {v['kappa']:.3g}" for k, v in coords.items())
    print(f"{PROG}: {oid}: f* = {s.f_star:.15g}, ‖∇f‖ = {s.grad_norm:.1e} ({s.status} after {s.iterations} "
          f"{s.method} steps in {solved_in} coordinates, {seconds:.1f} s){'; ' + kappas if kappas else ''} -> {out}",
          flush=True)
    if s.status != "converged":
        print(f"{PROG}: warning: {oid}: {s.message}; the report will not certify this f* "
              "(raise reference.max_iter or reference.tol)", file=sys.stderr)
    return record


register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="reference")
@user_errors_exit(PROG)
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see the module docstring)."""
    reference(cfg)


if __name__ == "__main__":
    from pipeline.cli.entry import run_cli

    run_cli(PROG, main, ReferenceConfig)

