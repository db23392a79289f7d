"""The train stage's array backend (``backend=numpy|torch|cupy``, ``device=cpu|cuda|cuda:N``): a
backend that cannot run stops at the config boundary with one line and nothing written; the run
records where it computed; the numpy/CPU run keeps its name; a torch run gets its own folder and
the numpy run's optimum."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.project import TINY, mlflow_runs, paths, quiet
from support.project import TINY_RUN as RUN
from support.snapshots import one_error_line, snapshot

from pipeline.reporting.gather import gather_dirs
from pipeline.store.rundir import read_run_record

# the torch run of TINY: the numpy run's name with the backend and device before the overrides
TORCH_RUN = RUN.replace("-gd,", "-gd-torch-cpu,", 1)


@pytest.fixture
def cli(stage_cli: Any) -> Any:
    """``cli(prog, *args)``: ``python -m pipeline.<prog> args`` in-process, no progress bars."""
    return quiet(stage_cli)


def _refused(tiny_work: Path, cli: Any, *overrides: str) -> str:
    """The one error line of a train refused for its backend: exit 2, no file and no MLflow run
    added or changed."""
    before, runs = snapshot(tiny_work), mlflow_runs(tiny_work / "mlflow.db")
    listing = sorted(os.listdir(tiny_work))
    code, _, err = cli("train", *TINY, "study=b", *overrides, *paths(tiny_work))
    assert code == 2
    line = one_error_line(err, "train")
    assert snapshot(tiny_work) == before and sorted(os.listdir(tiny_work)) == listing
    assert mlflow_runs(tiny_work / "mlflow.db") == runs
    assert not (tiny_work / "experiments" / "b").exists()
    return line


@pytest.mark.parametrize("overrides,want", [
    (["backend=jax"], "backend='jax' is unknown; use one of numpy, torch, cupy"),
    (["device=gpu"], "device='gpu' is not a device; use cpu, cuda or cuda:N"),
    (["device=cuda"], "device=cuda needs backend=torch or backend=cupy"),
    (["device=cuda:0"], "device=cuda:0 needs backend=torch or backend=cupy"),
    (["backend=cupy", "device=cpu"], None),  # cupy: not installed, or GPU-only
])
def test_a_backend_that_cannot_run_is_one_line_and_nothing_written(
        tiny_work: Path, cli: Any, overrides: list[str], want: str | None) -> None:
    line = _refused(tiny_work, cli, *overrides)
    if want is None:
        assert "backend=cupy" in line or "device=cpu" in line
    else:
        assert want in line


@pytest.mark.parametrize("library", ["torch", "cupy"])
def test_a_missing_library_names_the_extra_to_install(tiny_work: Path, cli: Any, library: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # `import <library>` raises ImportError
    line = _refused(tiny_work, cli, f"backend={library}", "device=cuda")
    assert f"backend={library} needs the {library} package, which is not installed" in line
    assert f"pip install -e '.[{library}]'" in line and "backend=numpy" in line


def test_device_cuda_without_a_gpu_is_one_line(tiny_work: Path, cli: Any) -> None:
    torch = pytest.importorskip("torch", reason="torch is an optional extra ('.[torch]')")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    line = _refused(tiny_work, cli, "backend=torch", "device=cuda")
    assert "device=cuda: torch sees no CUDA GPU; use device=cpu" in line


def test_the_numpy_run_keeps_its_name_and_records_where_it_ran(tiny_work: Path, cli: Any) -> None:
    from mlflow.tracking import MlflowClient

    code, _, err = cli("train", *TINY, "study=n", *paths(tiny_work))
    assert code == 0, err
    out = tiny_work / "experiments" / "n" / RUN
    record = json.loads((out / "run.json").read_text())
    assert (record["backend"], record["device"]) == ("numpy", "cpu")
    assert record["versions"] == {"numpy": np.__version__}
    numbers = json.loads((out / "metrics.json").read_text())  # DVC's numbers only, as before
    assert set(numbers) == {"train_loss", "iterations", "passes", "log10_grad_norm"}
    assert read_run_record(out / "metrics.json")["device"] == "cpu"
    config = (out / "config.yaml").read_text()
    assert "backend: numpy\n" in config and "device: cpu\n" in config
    # the backend named on the command line: the same run, the same folder
    before = sorted(os.listdir(tiny_work / "experiments" / "n"))
    code, _, err = cli("train", *TINY, "study=n", "backend=numpy", "device=cpu", *paths(tiny_work))
    assert code == 0, err
    assert sorted(os.listdir(tiny_work / "experiments" / "n")) == before == [RUN]
    row = gather_dirs(tiny_work / "experiments", ["n"]).runs.iloc[0]  # what the report reads
    assert (row["backend"], row["device"], row["versions"]) == ("numpy", "cpu",
                                                                f"numpy {np.__version__}")
    run = MlflowClient(f"sqlite:///{tiny_work / 'mlflow.db'}").get_run(
        read_run_record(out / "metrics.json")["mlflow_run_id"])
    tags = run.data.tags
    assert (tags["curvlab.backend"], tags["curvlab.device"]) == ("numpy", "cpu")
    assert tags["curvlab.version.numpy"] == np.__version__


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is an optional extra ('.[torch]')")
def test_a_torch_cpu_run_has_its_own_folder_and_the_numpy_optimum(tiny_work: Path,
                                                                    cli: Any) -> None:
    import torch

    code, _, err = cli("train", *TINY, "study=x", *paths(tiny_work))
    assert code == 0, err
    ref = tiny_work / "experiments" / "x" / RUN
    kept = snapshot(ref)
    code, _, err = cli("train", *TINY, "study=x", "backend=torch", "device=cpu", *paths(tiny_work))
    assert code == 0, err
    out = tiny_work / "experiments" / "x" / TORCH_RUN
    assert snapshot(ref) == kept  # the numpy run is untouched
    record = read_run_record(out / "metrics.json")
    assert (record["backend"], record["device"]) == ("torch", "cpu")
    assert record["versions"]["torch"] == str(torch.__version__)
    numpy_record = read_run_record(ref / "metrics.json")
    assert record["train_loss"] == pytest.approx(numpy_record["train_loss"], rel=1e-10)
    assert isinstance(record["grad_norm"], float) and record["status"] == numpy_record["status"]
    with np.load(out / "weights.npz", allow_pickle=False) as z, \
            np.load(ref / "weights.npz", allow_pickle=False) as r:
        assert z["w"].dtype == np.float64 and set(z.files) == set(r.files)
        np.testing.assert_allclose(z["w"], r["w"], rtol=1e-9, atol=1e-12)
