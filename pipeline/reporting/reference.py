"""Reference optima f* per objective (data, preprocess, model, λ): a tight Newton solve, cached as JSON."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import CurvlabError, DataError

CACHE_VERSION = 1


@dataclass
class Reference:
    """f* = min_w f(w) for one objective, how it was obtained, and the curvature at w*."""

    f_star: float
    source: str  # 'newton' | 'newton_cg' | 'best run' (no reference solve was possible)
    status: str
    grad_norm: float | None = None
    mu: float | None = None  # λ_min(∇²f(w*)): local strong convexity
    L_local: float | None = None  # λ_max(∇²f(w*))
    L_global: float | None = None  # the smoothness bound the objective reports (GD's lr='auto' = 1/L)
    n_params: int | None = None
    seconds: float = 0.0
    key: str = ""
    note: str = ""

    @property
    def kappa(self) -> float | None:
        """κ = L/μ of the Hessian at the optimum (∞ when μ ≤ 0)."""
        if self.mu is None or self.L_local is None:
            return None
        return float(self.L_local / self.mu) if self.mu > 0 else float("inf")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(data_sha: str, model: str, l2: float, fit_intercept: bool) -> str:
    """Key of one objective: hash of the prepared file's digest + model + λ + intercept."""
    text = f"v{CACHE_VERSION}|{data_sha}|{model}|{float(l2)!r}|{bool(fit_intercept)}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    from pipeline.writer import write_json

    write_json(path, obj)


class TooLarge(CurvlabError):
    """The objective is larger than ``reference.max_work`` allows (n_train × n_params)."""


def solve_reference(objective: Any, *, w0: np.ndarray | None = None, tol: float = 1.0e-10,
                    max_iter: int = 100, dense_max: int = 2500, cg_max_iter: int = 500,
                    preconditioner: str = "jacobi", time_budget_s: float | None = 60.0) -> Reference:
    """Minimize with damped Newton (Armijo): dense H⁻¹∇f up to ``dense_max`` parameters, else Newton-CG.

    ``w0`` (e.g. the best run's weights) is a warm start; the minimizer does not depend on it.
    """
    from pipeline.optimizers import minimize

    n = int(objective.n_params)
    method = "newton" if n <= dense_max else "newton_cg"
    t0 = time.perf_counter()
    if w0 is None or np.shape(w0) != (n,) or not np.all(np.isfinite(w0)):
        w0 = np.zeros(n, dtype=np.float64)
    w0 = np.asarray(w0, dtype=np.float64)
    res = minimize(objective, w0, method, lr=1.0, max_iter=max_iter, tol=tol, line_search=True,
                   armijo_c=1.0e-4, backtrack=0.5, cg_max_iter=cg_max_iter,
                   time_budget_s=time_budget_s, preconditioner=preconditioner)
    f = float(objective.value(res.w))
    g = float(np.linalg.norm(objective.grad(res.w)))
    mu = L_local = None
    if n <= dense_max:
        eig = np.linalg.eigvalsh(np.asarray(objective.hessian(res.w), dtype=np.float64))
        mu, L_local = float(eig[0]), float(eig[-1])
    try:
        L_global = float(objective.lipschitz())
    except Exception:  # noqa: BLE001 - a missing bound only removes a column
        L_global = None
    if not np.isfinite(f):
        raise CurvlabError(f"reference solve ({method}) gave f*={f}; check the prepared data")
    return Reference(f_star=f, source=method, status=str(res.status), grad_norm=g, mu=mu,
                     L_local=L_local, L_global=L_global, n_params=n,
                     seconds=time.perf_counter() - t0)


def reference_for(prepared_path: str | Path, model: str, l2: float, fit_intercept: bool,
                  cache_dir: str | Path, *, w0: np.ndarray | None = None, max_work: float = float("inf"),
                  **solve_opts: Any) -> Reference:
    """f* for (prepared file, model, λ, intercept), from ``cache_dir`` or a fresh reference solve.

    Raises TooLarge when n_train × n_params exceeds ``max_work`` (the caller falls back to the best run).
    """
    from pipeline.objective import fits_intercept, run_objective
    from pipeline.prepared import load_prepared

    path = Path(prepared_path)
    if not path.exists():
        raise DataError(f"{path}: prepared data missing; run `dvc repro` (prepare) first")
    facts_path = path.with_suffix(".json")
    if facts_path.exists():  # size check from the facts, before hashing/loading a large file
        try:
            facts = json.loads(facts_path.read_text(encoding="utf-8"))
            outputs = int(facts["n_classes"] or 1) if model == "softmax" else 1
            bias = int(fits_intercept({"fit_intercept": fit_intercept}, bool(facts.get("absorbs_bias"))))
            work = float(facts["n_train"]) * (int(facts["n_features_out"]) + bias) * outputs
        except (OSError, ValueError, KeyError, TypeError):
            work = 0.0
        if work > max_work:
            raise TooLarge(f"n_train × n_params = {work:.2g} > report.reference.max_work = {max_work:.2g}")
    digest = file_sha256(path)
    key = cache_key(digest, model, l2, fit_intercept)
    cpath = Path(cache_dir) / f"fstar-{key}.json"
    if cpath.exists():
        try:
            with open(cpath, encoding="utf-8") as fh:
                d = json.load(fh)
            d.pop("kappa", None)
            d.pop("prepared", None)
            return Reference(**d)
        except (OSError, ValueError, TypeError):
            pass  # a damaged cache entry is recomputed
    ds, transform, _facts = load_prepared(path)
    model_cfg = {"name": model, "l2": float(l2), "fit_intercept": bool(fit_intercept), "dtype": "float64"}
    obj = run_objective({"model": model_cfg}, ds, transform)
    work = float(ds.X_train.shape[0]) * float(obj.n_params)
    if work > max_work:
        raise TooLarge(f"n_train × n_params = {work:.2g} > report.reference.max_work = {max_work:.2g}")
    ref = solve_reference(obj, w0=w0, **solve_opts)
    ref.key = key
    _write_json_atomic(cpath, {**asdict(ref), "kappa": ref.kappa, "prepared": str(path)})
    return ref
