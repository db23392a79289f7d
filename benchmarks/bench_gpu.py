"""Benchmark: full-MNIST softmax regression on a GPU — curvlab's newton_cg (torch or cupy arrays)
against torch.optim.LBFGS on the same GPU and curvlab's numpy newton_cg on the same machine's CPU.

Problem (that of ``bench_softmax_mnist.py``): 60 000 training images, pixels scaled to [0, 1],
λ = 1e-4, bias fitted and unpenalized, float64. Target: relative suboptimality
(f − f*)/|f*| ≤ 1e-8 of the raw-pixel objective, every returned model checked with curvlab's
float64 numpy objective. f* comes from a tight numpy Newton-CG solve (‖∇f‖ ≤ 1e-10 certifies
f − f* ≤ ‖∇f‖²/(2λ) ≈ 5e-17); the device's own tight solve is compared with it
(``f_star_device_rel_diff``).

Timing, benchopt's way (as ``bench_softmax_mnist.py``): tolerance 0, the first max_iter whose run
reaches the target is found by an untimed scan, then that run is timed: one warm-up run, then
``--repeats`` runs, median reported; ``Backend.sync()`` (torch.cuda.synchronize / the cupy stream)
before every clock read. The data are moved to the device once, before any clock; building the
objective from the device arrays is inside the timed region, as in the CPU row.

Rows:
* ``curvlab newton_cg [<backend> <device>]``: ``minimize(obj, w0, 'newton_cg')`` on device arrays;
* ``curvlab gd [...]``: seconds per iteration (``--gd-iters`` iterations at lr = 1/L, L from one
  untimed lr='auto' run, objective built outside the clock);
* ``torch.optim.LBFGS [...]``: strong Wolfe, float64, history 10, lr 1, tolerances 0, one
  ``step`` call of max_iter = k with max_eval = 25·k (≥ 20: its line search is never starved);
  k from an untimed scan that steps one iteration at a time (the same iterates), raised while the
  warm-up run misses the target;
* ``curvlab newton_cg [numpy cpu]``: the numpy core on ``--threads`` CPU threads (threadpoolctl).

Last line: ``gpu_seconds_to_1e-08=<s> ratio_vs_torch_lbfgs=<curvlab device / torch lbfgs>
speedup_vs_cpu=<curvlab cpu / curvlab device> test_accuracy=<curvlab device model's>``.

Imports only numpy, scipy, threadpoolctl, array-api-compat, torch (or cupy) and the pure-Python
``pipeline.core`` / ``pipeline.data`` modules: no Hydra, OmegaConf, MLflow or DVC (the MNIST config
is read from conf/data/mnist.yaml without a YAML library).

Usage: ``CURVLAB_DATA_DIR=/path/to/data python benchmarks/bench_gpu.py [--device cuda|cpu]
[--backend torch|cupy] [--quick] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import pipeline  # noqa: E402,F401  (before numpy: curvlab's numpy page setting)
import numpy as np  # noqa: E402
# isort: on

from pipeline.core.backend import Backend, load_backend, namespace, to_numpy  # noqa: E402
from pipeline.core.errors import EXIT_USER_ERROR, CurvlabError  # noqa: E402
from pipeline.core.objectives import make_objective  # noqa: E402
from pipeline.core.solvers import minimize  # noqa: E402

PROG = "bench_gpu"
LAM = 1.0e-4
TARGET = 1.0e-8
N_CLASSES = 10
LBFGS_HISTORY = 10
LBFGS_EVALS_PER_ITER = 25  # torch's max_eval = 25·max_iter (≥ 20): never the binding limit
# A fit: max_iter -> (raw-space w on the host, seconds, info)
Fit = Callable[[int], tuple[np.ndarray, float, dict[str, Any]]]


def mnist_config(n_train: int | None) -> dict[str, Any]:
    """The ``data`` config of conf/data/mnist.yaml read without a YAML library (the four
    ``files`` flow mappings: name and SHA-256), pixels scaled by 1/255 as in
    bench_softmax_mnist.py."""
    path = ROOT / "conf" / "data" / "mnist.yaml"
    text = path.read_text(encoding="utf-8")
    pat = r"^\s*({split}):\s*\{{\s*name:\s*([\w.-]+)\s*,\s*sha256:\s*([0-9a-fA-F]{{64}})\s*\}}"
    files = {}
    for split in ("train_images", "train_labels", "test_images", "test_labels"):
        m = re.search(pat.format(split=split), text, flags=re.MULTILINE)
        if m is None:
            raise CurvlabError(f"{path}: no `{split}: {{name: ..., sha256: ...}}` line; restore "
                               "the file from git")
        files[split] = {"name": m.group(2), "sha256": m.group(3).lower()}
    return {"name": "mnist", "id": "mnist", "format": "idx", "title": "MNIST", "folder": "mnist",
            "root": None, "files": files, "scale": 1.0 / 255.0, "n_train": n_train}


def load_mnist_data(n_train: int | None) -> Any:
    """MNIST as ``pipeline.data.load_dataset`` gives it (seed 0, as bench_softmax_mnist.py)."""
    from pipeline.data.datasets import load_dataset

    return load_dataset(mnist_config(n_train), seed=0)


def timed(be: Backend, fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds), the device synchronized before each clock read."""
    be.sync()
    t0 = time.perf_counter()
    out = fn()
    be.sync()
    return out, time.perf_counter() - t0


def curvlab_fit(be: Backend, X: Any, y: Any, max_iter: int,
                preconditioner: str = "auto") -> tuple[np.ndarray, float, dict]:
    """curvlab newton_cg from zeros at tolerance 0 on ``be``'s arrays X, y (objective built inside
    the clock); the result's w brought to the host after it."""
    def solve() -> Any:
        obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=N_CLASSES)
        return minimize(obj, obj.init("zeros"), "newton_cg", tol=0.0, max_iter=max_iter,
                        line_search=True, preconditioner=preconditioner)

    res, dt = timed(be, solve)
    check_namespace(be, res.w)
    info = {"iterations": res.n_iter, "cg_iterations": res.info.get("cg_iterations")}
    return np.asarray(to_numpy(res.w), dtype=np.float64), dt, info


def check_namespace(be: Backend, w: Any) -> None:
    """A CurvlabError unless ``w`` is an array of the backend's library."""
    if be.name == "numpy":
        return
    try:
        ok = namespace(w) is be.xp
    except TypeError:
        ok = False
    if not ok:
        raise CurvlabError(f"curvlab returned {type(w).__name__} arrays for --backend {be.name}: "
                           "this checkout's objectives or solvers are not array-API generic yet; "
                           "use a tree where they are")


def first_reaching(fit: Fit, rel_gap: Callable[[np.ndarray], float], label: str,
                   max_k: int = 64) -> int:
    """Smallest max_iter whose run reaches the target: benchopt's scan, max_iter = 1, 2, 3, …"""
    for k in range(1, max_k + 1):
        w, dt, _ = fit(k)
        gap = rel_gap(w)
        print(f"  {label}: max_iter={k} -> rel. suboptimality {gap:.2e} ({dt:.3f} s, untimed)",
              flush=True)
        if gap <= TARGET:
            return k
    raise CurvlabError(f"{label} did not reach the target {TARGET:g} within max_iter={max_k}")


def time_row(fit: Fit, k: int, repeats: int, label: str,
             rel_gap: Callable[[np.ndarray], float]) -> tuple[dict[str, Any], np.ndarray]:
    """One warm-up run at max_iter = k, then ``repeats`` timed runs: (the row (median seconds),
    the last run's w)."""
    fit(k)
    times, w, info = [], np.zeros(0), {}
    for _ in range(repeats):
        w, dt, info = fit(k)
        times.append(dt)
    gap = rel_gap(w)
    row = {"solver": label, "stop": f"max_iter={k}", "median_s": statistics.median(times),
           "times_s": times, "rel_suboptimality": gap, "reached": bool(gap <= TARGET), **info}
    print(f"  {label}: max_iter={k}, median {row['median_s']:.4f} s of {times}", flush=True)
    return row, w


def gd_row(be: Backend, X: Any, y: Any, iters: int, repeats: int, label: str) -> dict[str, Any]:
    """curvlab gd seconds per iteration on ``be`` (lr = 1/L from one untimed lr='auto' run)."""
    obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=N_CLASSES)
    first = minimize(obj, obj.init("zeros"), "gd", lr="auto", tol=0.0, max_iter=iters)
    check_namespace(be, first.w)
    lr = float(first.lr) if first.lr is not None else 1.0 / float(first.info["L"])

    def run() -> Any:
        return minimize(obj, obj.init("zeros"), "gd", lr=lr, tol=0.0, max_iter=iters)

    timed(be, run)  # warm-up
    per_iter = []
    for _ in range(repeats):
        res, dt = timed(be, run)
        per_iter.append(dt / max(res.n_iter, 1))
    row = {"solver": label, "stop": f"max_iter={iters}", "lr": lr,
           "median_s_per_iteration": statistics.median(per_iter), "s_per_iteration": per_iter}
    print(f"  {label}: {row['median_s_per_iteration'] * 1e3:.3f} ms per iteration "
          f"(lr = {lr:.4g}, {iters} iterations)", flush=True)
    return row


def torch_loss(torch: Any, X: Any, y: Any) -> Callable[[Any], Any]:
    """The same objective in torch: mean cross-entropy of Z = X W + 1 bᵀ plus λ/2 ‖W‖² on
    P = [W; bᵀ] (curvlab's parameter layout), bias unpenalized."""
    d = X.shape[1]

    def loss(P: Any) -> Any:
        W = P[:d]
        return torch.nn.functional.cross_entropy(X @ W + P[d], y) + 0.5 * LAM * torch.sum(W * W)

    return loss


def lbfgs_run(torch: Any, loss: Callable[[Any], Any], shape: tuple[int, int], device: Any,
              max_iter: int, stop: Callable[[float], bool] | None = None) -> Any:
    """torch.optim.LBFGS from zeros: one ``step`` of ``max_iter`` iterations, or with ``stop``
    one iteration per ``step`` (the same iterates) until ``stop(f)`` or ``max_iter``."""
    P = torch.zeros(shape, dtype=torch.float64, device=device, requires_grad=True)
    per_call = 1 if stop is not None else max_iter
    opt = torch.optim.LBFGS([P], lr=1.0, max_iter=per_call,
                            max_eval=LBFGS_EVALS_PER_ITER * per_call, tolerance_grad=0.0,
                            tolerance_change=0.0, history_size=LBFGS_HISTORY,
                            line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        f = loss(P)
        f.backward()
        return f

    if stop is None:
        opt.step(closure)
        return P.detach()
    for _ in range(max_iter):
        opt.step(closure)
        with torch.no_grad():
            if stop(float(loss(P))):
                break
    return P.detach()


def lbfgs_row(be: Backend, torch: Any, X: Any, y: Any, f_star: float, args: argparse.Namespace,
              rel_gap: Callable[[np.ndarray], float]) -> tuple[dict[str, Any], np.ndarray]:
    """torch.optim.LBFGS on the device: the scan for k, the warm-up (k raised while it misses the
    target), the timed runs."""
    device = be.device if be.name == "torch" else torch.device(args.device)
    Xt = X if be.name == "torch" else torch.asarray(to_numpy(X), device=device)
    yt = torch.asarray(to_numpy(y), dtype=torch.int64, device=device)
    loss, shape = torch_loss(torch, Xt, yt), (Xt.shape[1] + 1, N_CLASSES)
    sync = Backend("torch", None, device, str(device), {})
    n_seen = [0]

    def reached(f: float) -> bool:
        n_seen[0] += 1
        return (f - f_star) / abs(f_star) <= TARGET

    P, dt = timed(sync, lambda: lbfgs_run(torch, loss, shape, device, args.lbfgs_max_iter,
                                          reached))
    k = n_seen[0]
    print(f"  torch LBFGS: scan of {k} iterations ({dt:.2f} s, untimed), rel. suboptimality "
          f"{rel_gap(to_numpy(P).ravel()):.2e}", flush=True)

    def fit(max_iter: int) -> tuple[np.ndarray, float, dict]:
        P, dt = timed(sync, lambda: lbfgs_run(torch, loss, shape, device, max_iter))
        return np.asarray(to_numpy(P), dtype=np.float64).ravel(), dt, {"iterations": max_iter}

    for _ in range(20):  # one-call runs may differ from the scan in the last bits
        gap = rel_gap(fit(k)[0])
        if gap <= TARGET:
            break
        print(f"  torch LBFGS: one call of max_iter={k} gives {gap:.2e}; max_iter={k + 1}",
              flush=True)
        k += 1
    return time_row(fit, k, args.repeats, f"torch.optim.LBFGS [{be.device_name}]", rel_gap)


def reference_optimum(obj: Any, label: str) -> tuple[float, np.ndarray]:
    """(f*, w*) from a Newton-CG solve to ‖∇f‖ ≤ 1e-10 (certifies f − f* ≤ ‖∇f‖²/(2λ) ≤ 5e-17)."""
    t0 = time.perf_counter()
    ref = minimize(obj, obj.init("zeros"), "newton_cg", tol=1e-10, max_iter=100, line_search=True)
    if not ref.converged:
        raise CurvlabError(f"{label} reference solve failed: {ref.message}")
    w = np.asarray(to_numpy(ref.w), dtype=np.float64)
    print(f"  {label}: f* = {ref.loss:.15f} ({ref.n_iter} Newton steps, "
          f"{time.perf_counter() - t0:.1f} s)", flush=True)
    return float(ref.loss), w


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--help``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--backend", default="torch", choices=("torch", "cupy"),
                    help="the array library of the curvlab device rows (default torch)")
    ap.add_argument("--quick", action="store_true", help="10 000 training images, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CPU threads of the numpy row (default: all cores)")
    ap.add_argument("--gd-iters", type=int, default=100, help="iterations of the gd timing")
    ap.add_argument("--preconditioner", default="auto", choices=("auto", "block", "none"),
                    help="newton_cg's preconditioner on the device (auto: none off numpy)")
    ap.add_argument("--lbfgs-max-iter", type=int, default=3000, help="cap of the LBFGS scan")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if min(args.repeats, args.threads, args.gd_iters, args.lbfgs_max_iter) < 1:
        raise CurvlabError("--repeats, --threads, --gd-iters and --lbfgs-max-iter must be ≥ 1")
    if args.quick:
        args.repeats = 1
    return args


def cpu_rows(args: argparse.Namespace, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """f* and the numpy newton_cg row on ``--threads`` CPU threads."""
    from threadpoolctl import threadpool_limits

    numpy_be = load_backend("numpy", "cpu")
    with threadpool_limits(limits=args.threads):
        obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=N_CLASSES)
        f_star, _ = reference_optimum(obj, "numpy cpu")

        def rel_gap(w: np.ndarray) -> float:
            return (obj.value(w) - f_star) / abs(f_star)

        label = f"curvlab newton_cg [numpy cpu, {args.threads} threads]"
        fit: Fit = lambda k: curvlab_fit(numpy_be, X, y, k)  # noqa: E731
        row, _ = time_row(fit, first_reaching(fit, rel_gap, label), args.repeats, label, rel_gap)
    return {"obj": obj, "f_star": f_star, "rel_gap": rel_gap, "cpu": row}


def device_rows(args: argparse.Namespace, be: Backend, ds: Any,
                ref: dict[str, Any]) -> dict[str, Any]:
    """torch LBFGS, the device's f*, curvlab newton_cg and gd on the device (data moved once)."""
    X, y = be.asarray(ds.X_train, np.float64), be.asarray(ds.y_train)
    rel_gap, f_star, out = ref["rel_gap"], ref["f_star"], {}
    try:
        import torch
    except ImportError:
        print("  torch is not installed: no torch.optim.LBFGS row", flush=True)
    else:
        out["lbfgs"], _ = lbfgs_row(be, torch, X, y, f_star, args, rel_gap)
    obj = make_objective("softmax", X, y, l2=LAM, fit_intercept=True, n_classes=N_CLASSES)
    _, w_dev = reference_optimum(obj, be.device_name)
    out["f_star_device_rel_diff"] = abs(ref["obj"].value(w_dev) - f_star) / abs(f_star)
    label = f"curvlab newton_cg [{be.name} {be.device_name}]"
    fit: Fit = lambda k: curvlab_fit(be, X, y, k, args.preconditioner)  # noqa: E731
    out["newton"], w = time_row(fit, first_reaching(fit, rel_gap, label), args.repeats, label,
                                rel_gap)
    out["test_accuracy"] = float(np.mean(ref["obj"].predict(ds.X_test, w) == ds.y_test))
    out["gd"] = gd_row(be, X, y, args.gd_iters, args.repeats,
                       f"curvlab gd [{be.name} {be.device_name}]")
    return out


def summary(args: argparse.Namespace, be: Backend, ds: Any, ref: dict[str, Any],
            dev: dict[str, Any]) -> dict[str, Any]:
    """The results as one JSON-ready dict, with the figures of the last line."""
    gpu_s, cpu_s = dev["newton"]["median_s"], ref["cpu"]["median_s"]
    lbfgs_s = dev["lbfgs"]["median_s"] if "lbfgs" in dev else float("nan")
    return {"n_train": int(ds.X_train.shape[0]), "lambda": LAM, "target": TARGET,
            "f_star": ref["f_star"], "f_star_device_rel_diff": dev["f_star_device_rel_diff"],
            "backend": be.name, "device": be.device_name, "versions": be.versions,
            "threads": args.threads,
            "rows": [ref["cpu"], dev["newton"], *([dev["lbfgs"]] if "lbfgs" in dev else [])],
            "gd": dev["gd"], "gpu_seconds_to_1e-08": gpu_s,
            "ratio_vs_torch_lbfgs": gpu_s / lbfgs_s, "speedup_vs_cpu": cpu_s / gpu_s,
            "test_accuracy": dev["test_accuracy"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and the last line; returns the results."""
    args = parse(argv)
    be = load_backend(args.backend, args.device)
    if be.name == "torch" and args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)
    ds = load_mnist_data(10_000 if args.quick else None)
    # fail fast (one Newton step on 50 rows) where the core does not run on the backend
    curvlab_fit(be, be.asarray(ds.X_train[:50], np.float64), be.asarray(ds.y_train[:50]), 1)
    print(f"MNIST softmax: n={ds.X_train.shape[0]} d={ds.X_train.shape[1]} λ={LAM:g} float64, "
          f"target (f-f*)/|f*| ≤ {TARGET:g}; device {be.device_name} {be.versions}; CPU threads "
          f"{args.threads}", flush=True)
    ref = cpu_rows(args, ds.X_train, ds.y_train)
    out = summary(args, be, ds, ref, device_rows(args, be, ds, ref))
    print(f"\n{'solver':<52} {'stop':>13} {'median s':>9} {'rel. subopt':>12} {'reached':>8}")
    for row in out["rows"]:
        print(f"{row['solver']:<52} {row['stop']:>13} {row['median_s']:>9.4f} "
              f"{row['rel_suboptimality']:>12.2e} {'yes' if row['reached'] else 'NO':>8}")
    print(f"{out['gd']['solver']:<52} {'per iteration':>13} "
          f"{out['gd']['median_s_per_iteration']:>9.5f}")
    print(f"f* on the device vs the CPU: relative difference {out['f_star_device_rel_diff']:.1e}")
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(out, indent=2, default=float))
        os.replace(tmp, args.json)
    print(f"gpu_seconds_to_1e-08={out['gpu_seconds_to_1e-08']:.4f} "
          f"ratio_vs_torch_lbfgs={out['ratio_vs_torch_lbfgs']:.4f} "
          f"speedup_vs_cpu={out['speedup_vs_cpu']:.2f} test_accuracy={out['test_accuracy']:.4f}")
    return out


if __name__ == "__main__":
    try:
        main()
    except CurvlabError as ex:
        if os.environ.get("CURVLAB_TRACEBACK") == "1":
            raise
        print(f"{PROG}: error: {' '.join(str(ex).split())}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
