"""Any IDX data set by configuration alone: a tiny one declared by a YAML file outside the project
runs ``python -m pipeline.prepare`` → ``train`` → ``evaluate`` as subprocesses (Fashion-MNIST and
the data folders: tests/stages/test_idx_datasets.py)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from support.repo_copy import REPO_ROOT, run_cmd

from pipeline.core.errors import DataError
from pipeline.data import idxsets
from pipeline.data.catalog import data_config
from pipeline.data.datasets import load_dataset


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    idxsets._CACHE.clear()


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX payload: magic 0x0000 08 <ndim> (uint8), big-endian sizes, then the bytes."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, dtype=">u4").tobytes() + a.tobytes()


def tiny_set(folder: Path, seed: int = 0) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Three classes of 5×5 images (class prototype + noise), gzip'd under names of their own."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 1, (3, 5, 5)) > 0.5
    arrays = {}
    for split, n in (("train", 150), ("test", 60)):
        y = np.repeat(np.arange(3), n // 3)[rng.permutation(n)]
        x = np.clip(protos[y] * 160.0 + rng.normal(40.0, 45.0, (n, 5, 5)), 0, 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for key, a in arrays.items():
        payload = idx_bytes(a)
        (folder / f"tiny-{key}.gz").write_bytes(gzip.compress(payload))
        digests[key] = hashlib.sha256(payload).hexdigest()
    return digests, arrays


def tiny_yaml(digests: dict[str, str], root: Path) -> str:
    files = "\n".join(f"  {k}: {{name: tiny-{k}, sha256: {d}}}" for k, d in digests.items())
    return f"""# a data set declared by this file alone
name: tiny
id: tiny
format: idx
title: Tiny shapes
folder: tiny
root: {root}
files:
{files}
class_names: [ring, bar, dot]
scale: 3.92156862745098e-3
"""


@pytest.mark.slow
def test_tiny_yaml_data_set_runs_prepare_train_evaluate(tmp_path: Path) -> None:
    """The YAML lives outside the project (hydra.searchpath); nothing in pipeline/ knows the data
    set."""
    digests, arrays = tiny_set(tmp_path / "raw")
    (tmp_path / "myconf" / "data").mkdir(parents=True)
    (tmp_path / "myconf" / "data" / "tiny.yaml").write_text(tiny_yaml(digests, tmp_path / "raw"))
    common = [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "data=tiny", "preprocess=whiten",
              f"paths.prepared_dir={tmp_path / 'prepared'}"]
    run = ["model=softmax", "optimizer=newton_cg", "optimizer.line_search=true", "study=t",
           f"paths.experiments_dir={tmp_path / 'exp'}", "mlflow.enabled=false"]
    for app, extra in (("prepare", []), ("train", [*run, "progress=false"]), ("evaluate", run)):
        res = run_cmd(
            ["python", "-m", f"pipeline.{app}", *common, *extra],
            cwd=tmp_path,
            code_root=REPO_ROOT,
            timeout=300,
        )
        assert res.returncode == 0, f"{app}: {res.stderr[-1500:]}"
    facts = json.loads((tmp_path / "prepared" / "tiny-whiten.json").read_text())
    # verified against the YAML
    assert facts["sha256"] == {f"tiny-{k}": d for k, d in digests.items()}
    assert facts["n_train"] == 150 and facts["n_features_in"] == 25 and facts["n_classes"] == 3
    assert facts["meta"]["class_names"] == ["ring", "bar", "dot"] and facts["meta"][
        "image_shape"
    ] == [5, 5]
    out = tmp_path / "exp" / "t" / "tiny-whiten-softmax-newton_cg,optimizer.line_search=true"
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["class_names"] == ["ring", "bar", "dot"] and ev["n_test"] == 60
    with open(out / "confusion.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ring", "bar", "dot"]
    conf = np.array(rows[1:], dtype=np.int64)
    assert conf.sum(axis=1).tolist() == np.bincount(arrays["test_labels"], minlength=3).tolist()
    assert ev["test_accuracy"] == pytest.approx(np.trace(conf) / 60) and ev["test_accuracy"] >= 0.9
    # the same file, with a label mapping (class 0 = ring or bar, class 1 = dot), via load_dataset
    cfg = data_config("mnist") | {
        "name": "tiny",
        "title": "Tiny shapes",
        "root": str(tmp_path / "raw"),
        "files": {k: {"name": f"tiny-{k}", "sha256": d} for k, d in digests.items()},
        "class_names": ["ring", "bar", "dot"],
        "classes": [[0, 1], 2],
        "reference_accuracy": None,
    }
    ds = load_dataset(cfg, seed=0)
    assert ds.task == "binary" and ds.meta["class_names"] == ["ring+bar", "dot"]
    assert ds.y_test.tolist() == (arrays["test_labels"] == 2).astype(int).tolist()
    # a wrong checksum in the YAML: one line naming the data set and the file
    cfg["files"]["test_labels"]["sha256"] = "0" * 64
    with pytest.raises(DataError) as ei:
        load_dataset(cfg, seed=0)
    msg = str(ei.value)
    assert (
        "\n" not in msg
        and "SHA-256 mismatch" in msg
        and "Tiny shapes" in msg
        and "tiny-test_labels" in msg
    )
