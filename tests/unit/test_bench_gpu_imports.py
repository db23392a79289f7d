"""benchmarks/bench_gpu.py runs on a bare GPU machine: importing it (and its data loader) pulls in
no Hydra, OmegaConf, MLflow or DVC; its MNIST config is conf/data/mnist.yaml's; and the whole
script runs end to end on a small problem (a numpy "device", and torch's CPU where the core
computes with torch)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.backend import load_backend
from pipeline.core.objectives import make_objective

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
FORBIDDEN = ("hydra", "mlflow", "omegaconf", "dvc")
LAST_LINE = re.compile(r"^gpu_seconds_to_1e-08=(\S+) ratio_vs_torch_lbfgs=(\S+) "
                       r"speedup_vs_cpu=(\S+) test_accuracy=(\S+)$")

PROBE = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_gpu", {str(SCRIPT)!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
from pipeline.data.catalog import complete
from pipeline.data.datasets import validate_data_config
cfg = complete(bench.mnist_config(10_000))
validate_data_config(cfg)
bench.parse(["--quick", "--device", "cpu"])
bench.load_backend("numpy", "cpu")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})))
"""


def load_bench() -> types.ModuleType:
    """The script as a module, not run (its ``main`` only runs under ``__main__``)."""
    spec = importlib.util.spec_from_file_location("bench_gpu_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_the_benchmark_and_its_data_loader_pulls_in_no_hydra_mlflow_or_dvc():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_mnist_config_is_the_one_of_conf_data():
    from pipeline.data.catalog import data_config

    cfg = load_bench().mnist_config(None)
    assert cfg["files"] == data_config("mnist")["files"]
    assert cfg["n_train"] is None and cfg["scale"] == 1.0 / 255.0


def small_problem() -> types.SimpleNamespace:
    """A 10-class softmax problem with noisy labels (well conditioned at λ = 1e-4)."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 10))
    X, X_test = rng.normal(size=(400, 5)), rng.normal(size=(200, 5))
    y = np.argmax(X @ W + rng.gumbel(size=(400, 10)), axis=1)
    y_test = np.argmax(X_test @ W + rng.gumbel(size=(200, 10)), axis=1)
    return types.SimpleNamespace(X_train=X, y_train=y, X_test=X_test, y_test=y_test)


def run_small(monkeypatch: Any, capsys: Any, tmp_path: Path, backend: Any,
              *options: str) -> dict[str, Any]:
    """main() on the small problem with ``backend`` as the device; checks the last line."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    bench = load_bench()
    data = small_problem()
    monkeypatch.setattr(bench, "load_mnist_data", lambda n_train: data)
    # the device rows run on ``backend``; the CPU row stays numpy's
    monkeypatch.setattr(bench, "load_backend",
                        lambda name, device: load_backend(name, device) if name == "numpy"
                        else backend)
    out = bench.main(["--device", "cpu", "--threads", "1", "--repeats", "1", "--gd-iters", "5",
                      "--lbfgs-max-iter", "500", "--json", str(tmp_path / "r.json"), *options])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = LAST_LINE.match(last)
    assert m is not None, last
    assert float(m.group(1)) == pytest.approx(out["gpu_seconds_to_1e-08"], abs=5e-5)
    assert all(row["reached"] for row in out["rows"]) and len(out["rows"]) == 3
    assert out["f_star_device_rel_diff"] <= 1e-10
    assert out["ratio_vs_torch_lbfgs"] > 0 and out["speedup_vs_cpu"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["test_accuracy"] == out["test_accuracy"]
    obj = make_objective("softmax", data.X_train, data.y_train, l2=bench.LAM, n_classes=10)
    w = bench.minimize(obj, obj.init("zeros"), "newton_cg", tol=1e-10).w
    assert out["test_accuracy"] == pytest.approx(np.mean(obj.predict(data.X_test, w)
                                                         == data.y_test), abs=0.011)
    return out


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_a_numpy_device(monkeypatch, capsys, tmp_path):
    out = run_small(monkeypatch, capsys, tmp_path, load_backend("numpy", "cpu"))
    assert out["backend"] == "numpy"


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_torch_cpu(monkeypatch, capsys, tmp_path):
    pytest.importorskip("torch")
    # the class blocks split along the class shifts, on torch arrays, through the whole script
    out = run_small(monkeypatch, capsys, tmp_path, load_backend("torch", "cpu"),
                    "--preconditioner", "block")
    assert out["backend"] == "torch"


def test_the_torch_lbfgs_objective_is_curvlabs():
    torch = pytest.importorskip("torch")
    bench = load_bench()
    data = small_problem()
    obj = make_objective("softmax", data.X_train, data.y_train, l2=bench.LAM, n_classes=10)
    P = np.random.default_rng(1).normal(size=(data.X_train.shape[1] + 1, 10))
    loss = bench.torch_loss(torch, torch.asarray(data.X_train), torch.asarray(data.y_train))
    assert float(loss(torch.asarray(P))) == pytest.approx(obj.value(P.ravel()), rel=1e-13)
