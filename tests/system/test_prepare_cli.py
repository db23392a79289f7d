"""``python -m pipeline.prepare`` in a subprocess: the Hydra app end to end, one-line errors, no
stray files in the working folder (the stage in-process: tests/stages/test_prepare.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.repo_copy import REPO_ROOT

from pipeline.store.prepared import load_prepared


def run_prepare(
    cwd: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m pipeline.prepare`` in ``cwd`` (so relative outputs land there, not in the
    repo)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.prepare", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def files_under(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_cli_synthetic_end_to_end(tmp_path: Path) -> None:
    res = run_prepare(tmp_path, "data=synthetic_regression", "preprocess=zscore")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    assert "\n" not in line and "synth-kappa100-zscore.npz" in line and "cond" in line
    # nothing but the two outputs: no outputs/, no .hydra/, no log file in the working directory
    assert files_under(tmp_path) == [
        "data",
        "data/prepared",
        "data/prepared/synth-kappa100-zscore.json",
        "data/prepared/synth-kappa100-zscore.npz",
    ]
    facts = json.loads((tmp_path / "data/prepared/synth-kappa100-zscore.json").read_text())
    assert facts["preprocess"] == "zscore" and not facts["absorbs_bias"]
    assert facts["cond_before"] == pytest.approx(100.0, rel=1e-6)
    assert (
        facts["cond_after"] > 10.0
    )  # per-axis scaling cannot undo the rotated ellipsoid (whitening can)
    with np.load(tmp_path / "data/prepared/synth-kappa100-zscore.npz", allow_pickle=False) as z:
        assert {
            "inputs_train",
            "y_train",
            "inputs_test",
            "y_test",
            "spectrum_before",
            "spectrum_after",
            "transform/kind",
            "transform/scale",
            "transform/offset",
        } <= set(z.files) and "X_train" not in z.files  # inputs stored, transformed on loading


@pytest.mark.slow
def test_cli_mnist_whiten(tmp_path: Path, mnist_dir: Path) -> None:
    t0 = time.perf_counter()
    res = run_prepare(
        tmp_path, "data=mnist", "preprocess=whiten", env={"CURVLAB_DATA_DIR": str(mnist_dir)}
    )
    print(
        f"\n{res.stdout.strip()}\n(wall time incl. interpreter start: "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    assert res.returncode == 0, res.stderr
    ds, tr, facts = load_prepared(tmp_path / "data/prepared/mnist-whiten.npz")
    assert facts["cond_before"] is None and facts["rank_before"] < 785  # singular before
    # ridge whitening (λ = model.l2 = 1e-4): nothing dropped, regularized LS Hessian exactly I in z
    assert facts["n_kept"] == 785 and facts["cond_before_ridge"] > 1.0e4
    assert facts["cond_after_ridge"] == pytest.approx(1.0, abs=1e-6)
    assert ds.X_train.shape == (60000, facts["n_kept"]) and ds.X_test.shape == (
        10000,
        facts["n_kept"],
    )
    assert facts["sha256"]["train-images-idx3-ubyte"].startswith("ba891046")
    # ridge least squares on one-hot targets is Zᵀ Y / n when (1/n) ZᵀZ + λP = I; it must classify
    W = ds.X_train.T @ np.eye(10)[ds.y_train] / ds.X_train.shape[0]
    acc = float(np.mean(np.argmax(ds.X_test @ W, axis=1) == ds.y_test))
    print(f"least-squares test accuracy on whitened MNIST: {acc:.4f}")
    assert acc > 0.84
    del ds
    for f in (tmp_path / "data/prepared").iterdir():  # do not keep it in pytest's tmp dirs
        f.unlink()


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("prepare: error: "), err
    for n in needles:
        assert n in err, err
    return err


def test_cli_bad_config_value_exits_2(tmp_path: Path) -> None:
    res = run_prepare(tmp_path, "data=synthetic_regression", "data.condition_number=0.5")
    assert_one_line_error(res, "data.condition_number=0.5")
    assert files_under(tmp_path) == []


def test_cli_singular_whitening_keeps_earlier_result(tmp_path: Path, mnist_dir: Path) -> None:
    out = tmp_path / "data" / "prepared"
    out.mkdir(parents=True)
    (out / "mnist-whiten_transformed.npz").write_bytes(b"earlier result")
    res = run_prepare(
        tmp_path,
        "data=mnist",
        "data.n_train=2000",
        "data.n_test=100",
        "preprocess=whiten_transformed",
        "preprocess.rel_threshold=null",
        env={"CURVLAB_DATA_DIR": str(mnist_dir)},
    )
    assert_one_line_error(res, "singular", "preprocess.rel_threshold")
    assert (out / "mnist-whiten_transformed.npz").read_bytes() == b"earlier result"
    assert files_under(out) == ["mnist-whiten_transformed.npz"]  # no temp files left


def test_cli_missing_data_exits_2(tmp_path: Path) -> None:
    res = run_prepare(
        tmp_path, "data=mnist_binary", env={"CURVLAB_DATA_DIR": str(tmp_path / "absent")}
    )
    assert_one_line_error(res, "absent", "directory not found")
    assert files_under(tmp_path) == []


def test_cli_wrong_type_is_rejected_by_hydra(tmp_path: Path) -> None:
    res = run_prepare(tmp_path, "data=synthetic_regression", "data.noise=loud")
    assert res.returncode != 0 and "Traceback" not in res.stderr and "data.noise" in res.stderr
    assert files_under(tmp_path) == []
