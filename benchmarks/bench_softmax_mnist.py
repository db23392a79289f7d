"""Benchmark: softmax regression on MNIST — curvlab's Newton-CG (raw and ridge-whitened) vs
scikit-learn.

Problem: 60 000 training images, pixels scaled to [0, 1], λ = 1e-4 (sklearn C = 1/(λ n)), bias
fitted, float64.  Every solver is timed to the same target, a relative suboptimality
(f − f*)/|f*| ≤ 1e-8 of the *raw-pixel* objective, checked by evaluating each returned model with
curvlab's float64 objective on the raw pixels.

* f* comes from a tight curvlab solve; its ‖∇f‖ ≤ 1e-10 certifies f − f* ≤ ‖∇f‖²/(2λ) ≈ 5e-17.
* Time to target is measured the same way for every solver, benchopt's way: the solver is rerun
  with max_iter = 1, 2, 3, … (tolerance 0, so only max_iter stops it) and the first run whose
  result reaches the target is the one timed (that run is then repeated for the timing).
* ``curvlab newton_cg (ridge-whitened)`` solves the *same* objective in ridge-whitened
  coordinates z = T x̃, T = Λ^-1/2 Φᵀ of (1/n) X̃ᵀX̃ + λ[I 0; 0 0], with the penalty λ/2 tr(W_zᵀ P
  W_z),
  P = A Aᵀ (= λ/2 ‖W_x‖²); its time includes fitting the whitening and transforming X, and its
  weights are mapped back (W_x = Aᵀ W_z, b = cᵀ W_z) before the suboptimality check.
* The L-BFGS rows (``curvlab lbfgs``, ``sklearn lbfgs``, both from zeros with memory 10) are
  timed to the looser target ``LBFGS_TARGET`` = 1e-6, the same benchopt way, but the scan is one
  untimed run per solver: both decrease f monotonically and stop only on max_iter at tolerance 0,
  so a run capped at k iterations is the first k iterations of the uncapped one, and k is read
  off the scan's losses (curvlab's history; scikit-learn's from a scipy callback, which stops the
  scan once the target is reached — scikit-learn runs as long as it needs, up to
  ``--lbfgs-max-iter``). curvlab lbfgs is also timed to ``TARGET`` = 1e-8.
* Timed runs alternate between solvers ``--repeats`` times (median reported), in one process with
  BLAS/OpenMP threads fixed by threadpoolctl (``--threads``, same for all).

Last lines: ``ratio_lbfgs_vs_sklearn_lbfgs=<curvlab lbfgs time / sklearn lbfgs time to 1e-6>``
(unless ``--skip-lbfgs``) and ``ratio_vs_sklearn_newton_cg=<best curvlab time / sklearn
newton-cg time> test_accuracy=<its>`` (unless ``--lbfgs-only``).

Usage: ``CURVLAB_DATA_DIR=../shared/data/mnist python benchmarks/bench_softmax_mnist.py [--quick]
[--lbfgs-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import pipeline  # noqa: E402,F401  (before numpy: curvlab's numpy page setting)
import numpy as np  # noqa: E402
# isort: on
from pipeline.cli.entry import exit_with  # noqa: E402
from pipeline.core.errors import CurvlabError  # noqa: E402
from pipeline.core.objectives import make_objective  # noqa: E402
from pipeline.core.solvers import minimize  # noqa: E402

PROG = "bench_softmax_mnist"
LAM = 1.0e-4
TARGET = 1.0e-8
LBFGS_TARGET = 1.0e-6  # scikit-learn's lbfgs needs ~330 iterations for 1e-6 (f64, m = 10)
Fit = Callable[[int], tuple[np.ndarray, float, dict]]  # max_iter -> (raw-space w, seconds, info)


def _load(n_train: int | None) -> Any:
    from pipeline.data.datasets import load_dataset

    cfg = {"name": "mnist", "id": "mnist", "root": None, "scale": 1.0 / 255.0, "n_train": n_train}
    return load_dataset(cfg, seed=0)


def _curvlab_fit(X: np.ndarray, y: np.ndarray, max_iter: int) -> tuple[np.ndarray, float, dict]:
    t0 = time.perf_counter()
    obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=10)
    res = minimize(
        obj, obj.init("zeros"), "newton_cg", tol=0.0, max_iter=max_iter, line_search=True
    )
    dt = time.perf_counter() - t0
    return res.w, dt, {"iterations": res.n_iter, "status": res.status, **res.info}


def _curvlab_whitened_fit(
    X: np.ndarray, y: np.ndarray, max_iter: int
) -> tuple[np.ndarray, float, dict]:
    """Ridge-whiten (timed), solve the same objective in z, map the weights back to the pixels."""
    from pipeline.core.transforms import fit_preprocess

    t0 = time.perf_counter()
    tr = fit_preprocess({"name": "whiten", "ridge": LAM, "penalty_space": "input"}, X)
    Z = tr.apply(X)
    obj = make_objective("softmax", Z, y, l2=LAM, fit_intercept=False, n_classes=10,
                         penalty=tr.penalty_matrix())
    # preconditioner='auto' as on the raw pixels: whitening makes (1/n) X̃ᵀX̃ + λ·I_W the identity,
    # but near w* the softmax curvature p(1 − p) varies over the examples and plain CG needs many
    # steps
    res = minimize(
        obj, obj.init("zeros"), "newton_cg", tol=0.0, max_iter=max_iter, line_search=True
    )
    W_x, b_x = tr.input_weights(obj.unpack(res.w)[0], 0.0)
    dt = time.perf_counter() - t0
    w = np.vstack([W_x, np.asarray(b_x)[None, :]]).ravel()
    return w, dt, {"iterations": res.n_iter, "status": res.status, **res.info}


def _sklearn_fit(X: np.ndarray, y: np.ndarray, solver: str, tol: float,
                 max_iter: int) -> tuple[np.ndarray, float, dict]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0 / (LAM * X.shape[0]), solver=solver, tol=tol, max_iter=max_iter)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at tol 0 / capped max_iter
        clf.fit(X, y)
    dt = time.perf_counter() - t0
    w = np.vstack([clf.coef_.T, clf.intercept_[None, :]]).ravel()
    return w, dt, {"iterations": int(np.max(clf.n_iter_))}


def first_reaching(fit: Fit, rel_gap: Callable[[np.ndarray], float], label: str,
                   max_k: int = 64) -> int:
    """Smallest max_iter whose run reaches the target: benchopt's scan, max_iter = 1, 2, 3, …

    (A doubling search would overshoot: with tol = 0 a run past convergence keeps paying for
    inner solves at a tiny forcing tolerance, so an overshooting run costs more than the scan.)"""
    for k in range(1, max_k + 1):
        w, dt, _ = fit(k)
        gap = rel_gap(w)
        print(f"  {label}: max_iter={k} -> rel. suboptimality {gap:.2e} ({dt:.1f} s, "
              "untimed)", flush=True)
        if gap <= TARGET:
            return k
    raise CurvlabError(f"{label} did not reach the target {TARGET:g} within max_iter={max_k}")


def _curvlab_lbfgs_fit(X: np.ndarray, y: np.ndarray, max_iter: int) -> tuple[np.ndarray, float,
                                                                              dict]:
    """curvlab's L-BFGS from zeros at tolerance 0 (only max_iter stops it), timed."""
    t0 = time.perf_counter()
    obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=10)
    res = minimize(obj, obj.init("zeros"), "lbfgs", tol=0.0, max_iter=max_iter)
    dt = time.perf_counter() - t0
    return res.w, dt, {"iterations": res.n_iter, "status": res.status,
                       "line_search_evals": res.info.get("line_search_evals")}


def _sklearn_lbfgs_losses(X: np.ndarray, y: np.ndarray, stop: Callable[[float], bool],
                          max_iter: int) -> list[float]:
    """f after each scikit-learn lbfgs iteration (its objective is curvlab's: mean loss +
    λ/2‖W‖² with λ = 1/(C n)), read by a scipy callback that ends the run once ``stop(f)``."""
    import sklearn.linear_model._logistic as sk_logistic
    from scipy import optimize

    losses: list[float] = []

    def record(intermediate_result: Any) -> None:
        losses.append(float(intermediate_result.fun))
        if stop(losses[-1]):
            raise StopIteration

    class _Recording:
        def __getattr__(self, key: str) -> Any:
            return getattr(optimize, key)

        @staticmethod
        def minimize(fun: Any, x0: Any, **kw: Any) -> Any:
            return optimize.minimize(fun, x0, **{**kw, "callback": record})

    sk_logistic.optimize = _Recording()  # type: ignore[assignment]
    try:
        _sklearn_fit(X, y, "lbfgs", 0.0, max_iter)
    finally:
        sk_logistic.optimize = optimize
    return losses


def first_below(losses: Any, f_star: float, target: float, offset: int = 0) -> int | None:
    """The first iteration whose loss has (f − f*)/|f*| ≤ target (index + offset), or None."""
    gaps = (np.asarray(losses, dtype=np.float64) - f_star) / abs(f_star)
    hit = np.flatnonzero(gaps <= target)
    return int(hit[0]) + offset if hit.size else None


class _Reached(Exception):
    """Ends a scan once its target is reached."""


def _curvlab_lbfgs_losses(X: np.ndarray, y: np.ndarray, stop: Callable[[float], bool],
                          max_iter: int) -> list[float]:
    """f at iterations 0, 1, 2, … of curvlab's lbfgs (tol 0), until ``stop(f)`` or max_iter."""
    losses: list[float] = []

    def record(_it: int, row: dict[str, float]) -> None:
        losses.append(row["loss"])
        if stop(row["loss"]):
            raise _Reached

    obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=10)
    try:
        minimize(obj, obj.init("zeros"), "lbfgs", tol=0.0, max_iter=max_iter, callback=record)
    except _Reached:
        pass
    return losses


def lbfgs_rows(X: np.ndarray, y: np.ndarray, f_star: float,
               max_iter: int) -> tuple[dict[str, Fit], dict[str, int], dict[str, Any]]:
    """The L-BFGS fits and the max_iter at which each first reaches ``LBFGS_TARGET`` (one untimed
    scan run each, ended at its target), plus curvlab's iterations to ``TARGET``."""
    def below(target: float) -> Callable[[float], bool]:
        return lambda f: (f - f_star) / abs(f_star) <= target

    t0 = time.perf_counter()
    losses = _curvlab_lbfgs_losses(X, y, below(TARGET), max_iter)
    k6, k8 = first_below(losses, f_star, LBFGS_TARGET), first_below(losses, f_star, TARGET)
    print(f"  curvlab lbfgs: scan of {len(losses) - 1} iterations ({time.perf_counter() - t0:.1f}"
          f" s, untimed): {LBFGS_TARGET:g} at {k6}, {TARGET:g} at {k8}", flush=True)
    t0 = time.perf_counter()
    sk_losses = _sklearn_lbfgs_losses(X, y, below(LBFGS_TARGET), max_iter)
    k_sk = first_below(sk_losses, f_star, LBFGS_TARGET, offset=1)  # [0] is after iteration 1
    print(f"  sklearn lbfgs: scan of {len(sk_losses)} iterations ({time.perf_counter() - t0:.1f}"
          f" s, untimed): {LBFGS_TARGET:g} at {k_sk}", flush=True)
    if k6 is None or k_sk is None:
        raise CurvlabError(f"lbfgs did not reach {LBFGS_TARGET:g} within {max_iter} iterations "
                           f"(curvlab at {k6}, sklearn at {k_sk}); raise --lbfgs-max-iter")
    fits: dict[str, Fit] = {
        "curvlab lbfgs": lambda k: _curvlab_lbfgs_fit(X, y, k),
        "sklearn lbfgs": lambda k: _sklearn_fit(X, y, "lbfgs", 0.0, k),
    }
    return fits, {"curvlab lbfgs": k6, "sklearn lbfgs": k_sk}, {"curvlab_iterations_to_1e-8": k8}


def timed(fits: dict[str, Fit], ks: dict[str, int],
          repeats: int) -> tuple[dict[str, list[float]], dict[str, tuple[np.ndarray, dict]]]:
    """Each fit at its max_iter, ``repeats`` times, alternating between solvers."""
    times: dict[str, list[float]] = {name: [] for name in fits}
    last: dict[str, tuple[np.ndarray, dict]] = {}
    for r in range(repeats):
        for name, fit in fits.items():
            w, dt, info = fit(ks[name])
            times[name].append(dt)
            last[name] = (w, info)
        print(f"  repeat {r + 1}/{repeats}: "
              + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    return times, last


def reference_optimum(obj: Any) -> float:
    """f* from a Newton-CG solve to ‖∇f‖ ≤ 1e-10 (certifies f − f* ≤ ‖∇f‖²/(2λ) ≤ 5e-17)."""
    t0 = time.perf_counter()
    ref = minimize(obj, obj.init("zeros"), "newton_cg", tol=1e-10, max_iter=100, line_search=True)
    if not ref.converged:
        raise CurvlabError(f"reference solve failed: {ref.message}")
    f_star = float(obj.value(ref.w))
    print(f"f* = {f_star:.15f} (‖∇f‖ = {ref.history['grad_norm'][-1]:.1e}, {ref.n_iter} Newton "
          f"steps, {time.perf_counter() - t0:.1f} s)", flush=True)
    return f_star


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--help``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed runs per solver (median reported)")
    ap.add_argument("--quick", action="store_true",
                    help="10 000 training images, 1 repeat, no lbfgs")
    ap.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads for every solver")
    ap.add_argument("--lbfgs-max-iter", type=int, default=5000,
                    help="cap for the lbfgs scans (both solvers)")
    ap.add_argument("--skip-lbfgs", action="store_true", help="no lbfgs rows")
    ap.add_argument("--lbfgs-only", action="store_true", help="only the lbfgs rows")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.lbfgs_max_iter < 1:
        raise CurvlabError("--repeats, --threads and --lbfgs-max-iter must be ≥ 1")
    if args.skip_lbfgs and args.lbfgs_only:
        raise CurvlabError("--skip-lbfgs and --lbfgs-only exclude each other; give one")
    return args


def run(args: argparse.Namespace) -> tuple[Any, Any, float, dict[str, list[float]],
                                           dict[str, tuple[np.ndarray, dict]], dict[str, Any],
                                           dict[str, Any]]:
    """Load, solve f*, scan and time every solver: (data, objective, f*, times, last results,
    stop rule per solver, extras)."""
    from threadpoolctl import threadpool_limits

    repeats = 1 if args.quick else args.repeats
    with threadpool_limits(limits=args.threads):
        ds = _load(10_000 if args.quick else None)
        X, y = ds.X_train, ds.y_train
        print(f"MNIST softmax: n={X.shape[0]} d={X.shape[1]} λ={LAM:g} float64, target (f-f*)/|f*| "
              f"≤ {TARGET:g} (lbfgs rows: {LBFGS_TARGET:g}), threads={args.threads}, "
              f"NUMPY_MADVISE_HUGEPAGE={os.environ.get('NUMPY_MADVISE_HUGEPAGE')}", flush=True)
        obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=10)
        f_star = reference_optimum(obj)

        def rel_gap(w: np.ndarray) -> float:
            return (obj.value(w) - f_star) / abs(f_star)

        fits: dict[str, Fit] = {}
        ks: dict[str, int] = {}
        extra: dict[str, Any] = {}
        if not args.lbfgs_only:
            fits = {
                "curvlab newton_cg": lambda k: _curvlab_fit(X, y, k),
                "curvlab newton_cg (ridge-whitened)": lambda k: _curvlab_whitened_fit(X, y, k),
                "sklearn newton-cg": lambda k: _sklearn_fit(X, y, "newton-cg", 0.0, k),
            }
            ks = {name: first_reaching(fit, rel_gap, name) for name, fit in fits.items()}
        if not (args.quick or args.skip_lbfgs):
            lfits, lks, extra = lbfgs_rows(X, y, f_star, args.lbfgs_max_iter)
            fits, ks = {**fits, **lfits}, {**ks, **lks}
        times, last = timed(fits, ks, repeats)
        k8 = extra.get("curvlab_iterations_to_1e-8")
        if k8 is not None:  # curvlab lbfgs to the Newton rows' target, once
            _w, dt, _info = _curvlab_lbfgs_fit(X, y, k8)
            extra["curvlab_lbfgs_seconds_to_1e-8"] = dt
            print(f"  curvlab lbfgs to {TARGET:g}: max_iter={k8}, {dt:.2f} s", flush=True)
    return ds, obj, f_star, times, last, {n: f"max_iter={k}" for n, k in ks.items()}, extra


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and the ratio lines; returns the results."""
    args = parse(argv)
    ds, obj, f_star, times, last, tols, extra = run(args)
    rows = []
    for name, ts in times.items():
        w, info = last[name]
        gap = (obj.value(w) - f_star) / abs(f_star)
        target = LBFGS_TARGET if "lbfgs" in name else TARGET
        rows.append({"solver": name, "stop": tols[name], "median_s": statistics.median(ts),
                     "times_s": ts, "iterations": info.get("iterations"),
                     "cg_iterations": info.get("cg_iterations"), "target": target,
                     "rel_suboptimality": gap, "reached": bool(gap <= target),
                     "test_accuracy": float(np.mean(obj.predict(ds.X_test, w) == ds.y_test))})
    print()
    print(f"{'solver':<36} {'stop':>13} {'median s':>9} {'runs':>5} {'iters':>6} "
          f"{'rel. subopt':>12} {'target':>8} {'reached':>8} {'test acc':>9}")
    for row in rows:
        print(f"{row['solver']:<36} {row['stop']:>13} {row['median_s']:>9.2f} "
              f"{len(row['times_s']):>5} {row['iterations']!s:>6} "
              f"{row['rel_suboptimality']:>12.2e} {row['target']:>8.0e} "
              f"{'yes' if row['reached'] else 'NO':>8} {row['test_accuracy']:>9.4f}")
    by = {row["solver"]: row for row in rows}
    out: dict[str, Any] = {"n_train": int(ds.X_train.shape[0]), "lambda": LAM, "target": TARGET,
                           "lbfgs_target": LBFGS_TARGET, "f_star": f_star,
                           "threads": args.threads, "rows": rows,
                           "numpy_madvise_hugepage": os.environ.get("NUMPY_MADVISE_HUGEPAGE"),
                           **extra}
    lines = []
    if "sklearn lbfgs" in by:
        ratio = by["curvlab lbfgs"]["median_s"] / by["sklearn lbfgs"]["median_s"]
        out["ratio_lbfgs_vs_sklearn_lbfgs"] = ratio
        lines.append(f"ratio_lbfgs_vs_sklearn_lbfgs={ratio:.3f}")
    if "sklearn newton-cg" in by:
        sk = by["sklearn newton-cg"]["median_s"]
        raw, white = by["curvlab newton_cg"], by["curvlab newton_cg (ridge-whitened)"]
        best = min((raw, white), key=lambda r: r["median_s"])
        out |= {"ratio_vs_sklearn_newton_cg": best["median_s"] / sk,
                "best_curvlab": best["solver"],
                "ratio_raw_vs_sklearn_newton_cg": raw["median_s"] / sk,
                "ratio_whitened_vs_sklearn_newton_cg": white["median_s"] / sk,
                "test_accuracy": best["test_accuracy"]}
        lines.append(f"raw curvlab / sklearn newton-cg = {raw['median_s'] / sk:.3f}, "
                     f"ridge-whitened curvlab / sklearn newton-cg = {white['median_s'] / sk:.3f}")
        lines.append(f"ratio_vs_sklearn_newton_cg={out['ratio_vs_sklearn_newton_cg']:.3f} "
                     f"test_accuracy={best['test_accuracy']:.4f}")
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(out, indent=2, default=float))
        os.replace(tmp, args.json)
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    try:
        main()
    except CurvlabError as ex:
        exit_with(ex, PROG)
