"""Time and peak memory of prepare + Newton-CG train against data size: k× MNIST, k = 1, 2, 4, 8.

    CURVLAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_scale.py [--k 1 2 4 8]

Builds, from the shipped MNIST copy, training sets of k·60 000 images (copy j of every image is
shifted by a few pixels, so the k copies differ) as IDX files in a scratch folder, declares each as
a data set (a conf/data YAML on hydra.searchpath), then runs, each in its own process,
``python -m pipeline.prepare`` (raw pixels), ``python -m pipeline.train`` with softmax
Newton-CG to ‖∇f‖ ≤ 1e-8 (λ = 1e-4, no MLflow) and ``python -m pipeline.evaluate`` of that run.
Peak memory is the child's max RSS (wait4).

Prints one line per k and then ``seconds_per_million_images=``, ``peak_gb_per_million_images=``
(of the largest k; seconds: prepare + train; peak: the largest of the three stages), the fitted
exponents b of time ∝ n^b and peak ∝ n^b (least squares on log-log) and the marginal cost per
million images (the slope of a straight-line fit, free of the interpreter's fixed share).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import pipeline  # noqa: E402,F401  (before numpy: curvlab's numpy page setting)
import numpy as np  # noqa: E402
# isort: on
import yaml  # noqa: E402

from pipeline.data.idxsets import load_mnist  # noqa: E402

# copy j of the training images is shifted by SHIFTS[j] pixels (k ≤ 25: 0, 1 or 2 each way)
SHIFTS = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1),
          (2, 0), (0, 2), (-2, 0), (0, -2), (2, 2), (-2, -2), (2, -2), (-2, 2), (2, 1), (1, 2),
          (-2, 1), (1, -2), (2, -1), (-1, 2), (-2, -1), (-1, -2)]
NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(a: np.ndarray) -> bytes:
    """An uint8 array as an IDX file: magic 0x08 (ubyte), its rank, big-endian dims, the data."""
    head = bytes([0, 0, 8, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    return head + np.ascontiguousarray(a, dtype=np.uint8).tobytes()


def build(k: int, root: Path, conf: Path) -> str:
    """k× MNIST (shifted copies of the training images, the test set as is); its data name."""
    raw = load_mnist()
    images = np.concatenate([np.roll(raw.train_images, s, axis=(1, 2)) for s in SHIFTS[:k]])
    arrays = {"train_images": images, "train_labels": np.tile(raw.train_labels, k),
              "test_images": raw.test_images, "test_labels": raw.test_labels}
    name = f"mnist_x{k}"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, a in arrays.items():
        data = idx_bytes(a)
        (folder / NAMES[split]).write_bytes(data)
        files[split] = {"name": NAMES[split], "sha256": hashlib.sha256(data).hexdigest()}
    cfg = yaml.safe_load((ROOT / "conf" / "data" / "mnist.yaml").read_text())
    cfg.update(name=name, id=name.replace("_", "-"), title=f"{k}x MNIST", folder=name,
               root=str(folder), files=files, mirrors=[])
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return name


def run(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak GiB of max RSS) of one child process; exits on failure."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20  # KiB -> GiB


def fit_exponent(n: np.ndarray, y: np.ndarray) -> float:
    """b of y ≈ a·n^b by least squares on (log n, log y)."""
    return float(np.polyfit(np.log(n), np.log(y), 1)[0]) if len(n) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8],
                    choices=range(1, len(SHIFTS) + 1), metavar="K",
                    help=f"sizes k·60 000 (+ 10 000 test images), 1 ≤ k ≤ {len(SHIFTS)}")
    ap.add_argument("--memory-gb", type=float, default=4.0,
                    help="limits.memory_gb of prepare (4: the default of conf/prepare.yaml)")
    args = ap.parse_args()
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        t = Path(tmp)
        common = [f"hydra.searchpath=[file://{t / 'conf'}]", f"paths.prepared_dir={t / 'prepared'}"]
        for k in args.k:
            # in a spawned interpreter: the k× images never enter this process, whose resident
            # size every child started from it would otherwise count in its own max RSS
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
                name = ex.submit(build, k, t / "raw", t / "conf").result()
            prep = run([py, "-m", "pipeline.prepare", f"data={name}", "preprocess=none",
                        "model=softmax", f"limits.memory_gb={args.memory_gb}", *common])
            run_args = [f"data={name}", "preprocess=none", "model=softmax", "model.l2=1.0e-4",
                        "optimizer=newton_cg", "optimizer.tol=1.0e-8", "optimizer.max_iter=50",
                        "mlflow.enabled=false", f"paths.experiments_dir={t / 'experiments'}",
                        *common]
            train = run([py, "-m", "pipeline.train", "progress=false", *run_args])
            score = run([py, "-m", "pipeline.evaluate", *run_args])  # its accuracy and losses
            stem = name.replace("_", "-")
            size = sum(p.stat().st_size for p in (t / "prepared").glob(f"{stem}-*"))
            n = 60000 * k + 10000
            rows.append((n, prep[0] + train[0], max(prep[1], train[1], score[1])))
            print(f"k={k} images={n} prepare_s={prep[0]:.1f} prepare_peak_gb={prep[1]:.2f} "
                  f"train_s={train[0]:.1f} train_peak_gb={train[1]:.2f} "
                  f"evaluate_s={score[0]:.1f} evaluate_peak_gb={score[1]:.2f} "
                  f"prepared_mb={size / 1e6:.0f}", flush=True)
    n, s, g = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    print(f"seconds_per_million_images={s[-1] / n[-1] * 1e6:.1f}")
    print(f"peak_gb_per_million_images={g[-1] / n[-1] * 1e6:.2f}")
    print(f"time_exponent={fit_exponent(n, s):.2f} memory_exponent={fit_exponent(n, g):.2f}")
    if len(n) > 1:  # the slope without the interpreter's fixed share (imports: ≈ 0.3 GB)
        print(f"marginal_peak_gb_per_million_images={np.polyfit(n, g, 1)[0] * 1e6:.2f} "
              f"marginal_seconds_per_million_images={np.polyfit(n, s, 1)[0] * 1e6:.1f}")


if __name__ == "__main__":
    main()
