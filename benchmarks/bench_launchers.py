"""Benchmark: one 12-job sweep under Hydra's basic, joblib (2 workers) and submitit_local launchers.

The sweep is ``preprocess=none,whiten × optimizer=gd,newton,closed_form × model.l2=0.0,1.0e-3`` of
least squares on a small synthetic problem (``--n-samples``, default 2000 × 20), so the figures
measure what the launchers differ in: starting processes, importing the stack, talking to MLflow.
Runs in a throw-away copy of the repository (its own ``mlflow.db``, or ``--server`` for a fresh
``mlflow server`` on a free 127.0.0.1 port), checks that every sweep recorded 12 FINISHED children
under one parent, and prints one line per launcher with wall seconds and the ratio to basic.

Usage: ``python benchmarks/bench_launchers.py [--n-samples N] [--server] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],
    "joblib-2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local"],
}


def copy_repo(dest: Path) -> None:
    """The git-visible files of the working tree, as a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(
        ["git", "-c", "user.email=b@b", "-c", "user.name=b", "add", "-A"], cwd=dest, check=True
    )
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "copy"],
                   cwd=dest, check=True)


def env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    e = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "CURVLAB_MLFLOW", "CURVLAB_SWEEP"))
    }
    e.update(
        PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}",
        PYTHONPATH=str(root),
        CURVLAB_OFFLINE="1",
        **extra,
    )
    return e


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "mlflow-server", f"MLFLOW_PORT={port}", f"BIN={BIN}"],
        cwd=root,
        env=env(root, {}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("mlflow server did not start")


def count(uri: str, study: str) -> tuple[int, int]:
    """(parents, FINISHED children of the parent) of ``study``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(study).experiment_id], max_results=1000
    )
    parents = [r for r in runs if r.data.tags.get("curvlab.kind") == "sweep"]
    kids = [r for r in runs if r.info.status == "FINISHED" and parents
            and r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return len(parents), len(kids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-samples", type=int, default=2000)
    ap.add_argument("--server", action="store_true", help="log to a fresh `make mlflow-server`")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = ["data=synthetic_regression", f"data.n_samples={args.n_samples}", "data.n_features=20"]
    with tempfile.TemporaryDirectory(prefix="curvlab-bench-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        (root / ".venv").mkdir()
        (root / ".venv" / ".installed-stamp").touch()
        for pre in ("none", "whiten"):
            subprocess.run(
                [sys.executable, "-m", "pipeline.prepare", *data, f"preprocess={pre}"],
                cwd=root,
                env=env(root, {}),
                check=True,
                capture_output=True,
            )
        server, extra = None, {}
        if args.server:
            server, url = start_server(root)
            extra = {"MLFLOW_TRACKING_URI": url}
        uri = extra.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        try:
            subprocess.run(
                [sys.executable, "-m", "pipeline.train", *data, "model=linear", "study=warmup"],
                # store + caches warm
                cwd=root,
                env=env(root, extra),
                check=True,
                capture_output=True,
            )
            results = {}
            for name, launcher in LAUNCHERS.items():
                t0 = time.perf_counter()
                res = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pipeline.train",
                        "-m",
                        *launcher,
                        *data,
                        "model=linear",
                        "preprocess=none,whiten",
                        "optimizer=gd,newton,closed_form",
                        "model.l2=0.0,1.0e-3",
                        f"study=bench-{name}",
                        "progress=false",
                    ],
                    cwd=root,
                    env=env(root, extra),
                    capture_output=True,
                    text=True,
                )
                seconds = time.perf_counter() - t0
                if res.returncode != 0:
                    raise SystemExit(f"{name} sweep failed:\n{res.stderr[-3000:]}")
                parents, finished = count(uri, f"bench-{name}")
                results[name] = {
                    "seconds": seconds,
                    "parents": parents,
                    "finished_children": finished,
                }
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
    base = results["basic"]["seconds"]
    load = os.getloadavg()[0]
    print(f"12-job sweep, {args.n_samples}x20 least squares, store: "
          f"{'server' if args.server else 'sqlite'}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end")
    for name, r in results.items():
        print(f"{name:>15}: {r['seconds']:6.1f} s  ratio_vs_basic={r['seconds'] / base:.2f}  "
              f"runs: {r['parents']} parent, {r['finished_children']} FINISHED children")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
