"""One SGD epoch vs one full-batch gradient: softmax regression on all of MNIST (batch 100,
float64).

An epoch reads the data once, like a full gradient, plus the per-minibatch overhead (a gather of
B rows, two small matrix products, a softmax, a Python step). Both are timed in this process with
the same thread settings (median of ``--repeats``); prints ``sgd_epoch_over_full_gradient=<x>``.

    python benchmarks/bench_sgd_epoch.py [--repeats 5] [--batch-size 100] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import pipeline  # noqa: E402,F401  (before numpy: curvlab's numpy page setting)
import numpy as np  # noqa: E402
# isort: on
from threadpoolctl import threadpool_limits  # noqa: E402

from pipeline.core.objectives import make_objective  # noqa: E402
from pipeline.core.solvers import minimize  # noqa: E402
from pipeline.data.datasets import load_dataset  # noqa: E402


def main() -> None:
    """Time both in one process and print the ratio (and the raw seconds)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (default: as installed)")
    args = ap.parse_args()
    ds = load_dataset({"name": "mnist", "id": "mnist", "scale": 1.0 / 255.0,
                       "root": os.environ.get("CURVLAB_DATA_DIR")}, seed=0)
    f = make_objective("softmax", ds.X_train, ds.y_train, l2=1.0e-4, fit_intercept=True,
                       n_classes=10, dtype=np.float64)
    w = f.init("random", 1.0, np.random.default_rng(0))
    with threadpool_limits(limits=args.threads):
        grad_s, epoch_s = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            f.value_grad(w)
            grad_s.append(time.perf_counter() - t0)
            res = minimize(
                f, w, "sgd", lr=0.1, epochs=1, tol=0.0, batch_size=args.batch_size, seed=r
            )
            # the SGD clock covers the epoch's updates only (the logged full loss is off the clock)
            epoch_s.append(float(res.history["time_s"][-1]))
    g, e = statistics.median(grad_s), statistics.median(epoch_s)
    print(f"full_gradient_s={g:.4f} sgd_epoch_s={e:.4f} batch_size={args.batch_size} "
          f"n={f.n} repeats={args.repeats}")
    print(f"sgd_epoch_over_full_gradient={e / g:.2f}")


if __name__ == "__main__":
    main()
