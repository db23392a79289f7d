"""Any IDX data set by configuration alone: Fashion-MNIST as the second declared data set; the data
folder per data set; files of one data set handed to another are refused naming both (a tiny data
set declared by a YAML file: tests/system/test_idx_datasets_cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.repo_copy import REPO_ROOT, run_cmd

from pipeline.core.errors import DataError
from pipeline.data import idxsets
from pipeline.data.catalog import data_config
from pipeline.data.datasets import load_dataset

FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    idxsets._CACHE.clear()


def linked(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dst / f"{n}.gz").symlink_to(src / f"{n}.gz")
    return dst


def test_fashion_mnist_loads_by_its_yaml(
    fashion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CURVLAB_DATA_DIR", raising=False)
    ds = load_dataset({"name": "fashion_mnist", "root": str(fashion_dir), "n_test": None}, seed=0)
    assert (
        ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784) and ds.n_classes == 10
    )
    assert (
        np.bincount(ds.y_train).tolist() == [6000] * 10
        and np.bincount(ds.y_test).tolist() == [1000] * 10
    )
    assert ds.meta["class_names"] == FASHION_NAMES and ds.meta["title"] == "Fashion-MNIST"
    assert 0.0 == ds.X_train.min() and ds.X_train.max() == 1.0


def test_parent_data_dir_holds_one_folder_per_data_set(
    mnist_dir: Path, fashion_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "data"
    names = list(idxsets.mnist_spec().names)
    linked(mnist_dir, parent / "mnist", names)
    linked(fashion_dir, parent / "fashion-mnist", names)
    monkeypatch.setenv("CURVLAB_DATA_DIR", str(parent))
    fashion = idxsets.IdxSpec.from_config(data_config("fashion_mnist"))
    assert idxsets.resolve_source(fashion)[0] == parent / "fashion-mnist"
    assert idxsets.load_mnist().source == str((parent / "mnist").resolve())
    monkeypatch.setenv("CURVLAB_DATA_DIR", str(mnist_dir))  # the files directly: as before
    assert idxsets.resolve_source(idxsets.mnist_spec())[0] == mnist_dir
    # data.root: a parent too
    assert idxsets.resolve_source(fashion, parent)[0] == parent / "fashion-mnist"
    with pytest.raises(DataError) as ei:
        idxsets.resolve_source(fashion, tmp_path)
    msg = str(ei.value)
    assert (
        "\n" not in msg
        and "no Fashion-MNIST files" in msg
        and "fashion-mnist/" in msg
        and "data.root" in msg
    )


def test_fashion_file_handed_to_mnist_is_refused_naming_both(
    mnist_dir: Path, fashion_dir: Path, tmp_path: Path
) -> None:
    names = list(idxsets.mnist_spec().names)
    d = linked(mnist_dir, tmp_path / "m", [n for n in names if n != "t10k-labels-idx1-ubyte"])
    linked(fashion_dir, d, ["t10k-labels-idx1-ubyte"])
    with pytest.raises(DataError) as ei:
        idxsets.load_mnist(d)
    msg = str(ei.value)
    assert "\n" not in msg and "t10k-labels-idx1-ubyte" in msg
    assert "this is Fashion-MNIST's" in msg and "not MNIST's" in msg and "data=fashion_mnist" in msg
    # the whole Fashion-MNIST folder given to the MNIST config, through the CLI: one line, exit 2
    res = run_cmd(["python", "-m", "pipeline.prepare", "data=mnist", f"data.root={fashion_dir}",
                   f"paths.prepared_dir={tmp_path / 'prep'}"], cwd=tmp_path, code_root=REPO_ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("prepare: error:") and "Fashion-MNIST" in line and "not MNIST's" in line
    assert "use data=fashion_mnist" in line and "point data.root at the MNIST files" in line
    assert not (tmp_path / "prep").exists()


@pytest.mark.slow
def test_fashion_whiten_newton_cg_reaches_the_published_linear_baseline(
    fashion_dir: Path, tmp_path: Path
) -> None:
    """prepare data=fashion_mnist preprocess=whiten, then softmax + Newton-CG: test accuracy ≥ 0.83
    (published ≈ 0.84).

    All 60000 images; 3 damped Newton-CG steps keep the test short (the converged run, 10 steps,
    gives 0.836)."""
    from support.compose import compose_app

    from pipeline.config.schemas import as_kwargs
    from pipeline.evaluate import evaluate
    from pipeline.prepare import prepare
    from pipeline.spec import RunSpec
    from pipeline.store.prepared import prepared_file
    from pipeline.store.rundir import run_dir
    from pipeline.train import train

    overrides = [
        "data=fashion_mnist",
        f"data.root={fashion_dir}",
        "preprocess=whiten",
        "model=softmax",
        "optimizer=newton_cg",
        "optimizer.max_iter=3",
        "optimizer.line_search=true",
        "study=t",
        f"paths.prepared_dir={tmp_path / 'prepared'}",
        f"paths.experiments_dir={tmp_path / 'exp'}",
        "mlflow.enabled=false",
        "progress=false",
    ]
    cfg = compose_app("train", overrides)
    ecfg = compose_app("evaluate", [o for o in overrides if o != "progress=false"])
    facts = prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), 0,
                    prepared_file(RunSpec.from_config(cfg)).parent)
    # ridge whitening: C + λI -> I
    assert facts["n_train"] == 60000 and facts["cond_after_ridge"] == pytest.approx(1.0)
    metrics = train(cfg)
    assert metrics["iterations"] == 3 and metrics["test_accuracy"] >= 0.83
    ev = evaluate(ecfg)
    assert (
        ev["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
        and ev["class_names"] == FASHION_NAMES
    )
    assert (run_dir(RunSpec.from_config(cfg)) / "confusion.csv").read_text().splitlines()[
        0
    ] == ",".join(FASHION_NAMES)
    # the hard one
    assert min(ev["per_class_accuracy"]) == ev["per_class_accuracy"][FASHION_NAMES.index("Shirt")]
    # the report's Fashion-MNIST section (report.accuracy_data): the run against the published 84 %,
    # classes by name
    from pipeline.reporting.context import Context
    from pipeline.reporting.gather import gather_dirs
    from pipeline.reporting.sections.other_data import data_section

    ctx = Context(tmp_path / "rep", {"report": {"conditioning": {"data": "mnist"}},
                                     "paths": {"prepared_dir": str(tmp_path / "prepared")}},
                  gather_dirs(tmp_path / "exp"))
    sec = data_section(ctx, "fashion-mnist")
    assert sec is not None
    assert sec.title == "Softmax regression on Fashion-MNIST"
    acc, per = (pd.read_csv(tmp_path / "rep" / blk.path) for blk in sec.blocks
                if blk.kind == "table")
    assert acc["reference"].iloc[0].endswith("84.0%")
    assert acc["test_minus_reference"].iloc[0] == pytest.approx(metrics["test_accuracy"] - 0.84)
    assert (
        per["class"].tolist() == FASHION_NAMES
        and per["accuracy"].tolist() == ev["per_class_accuracy"]
    )
    figs = [blk.path for blk in sec.blocks if blk.kind == "figure"]
    assert len(figs) == 2 and all((tmp_path / "rep" / f).stat().st_size > 10_000 for f in figs)
