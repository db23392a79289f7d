"""The validation split: seeded, stratified, disjoint, taken before preprocessing is fitted, and
scored into metrics.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.project import ensure_prepared, make_cfg

from pipeline.core.errors import ConfigError
from pipeline.data.split import check_val_fraction, validation_split
from pipeline.prepare import prepare
from pipeline.store.prepared import load_prepared
from pipeline.store.rundir import read_run_record
from pipeline.train import train


def test_split_is_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(4), [100, 300, 50, 550])
    tr, va = validation_split(y, 0.2, seed=3, stratify=True)
    assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == y.size
    np.testing.assert_array_equal(np.bincount(y[va]), [20, 60, 10, 110])  # 20 % of every class
    tr2, va2 = validation_split(y, 0.2, seed=3, stratify=True)
    np.testing.assert_array_equal(va, va2)
    _, va3 = validation_split(y, 0.2, seed=4, stratify=True)
    assert not np.array_equal(va, va3)
    _, va4 = validation_split(np.linspace(0, 1, 1000), 0.25, seed=0, stratify=False)
    assert va4.size == 250


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "a", True])
def test_bad_val_fraction_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="data.val_fraction"):
        check_val_fraction(bad)


def test_prepare_fits_preprocessing_on_the_training_rows_only(tmp_path: Path, mnist_dir: Path):
    data = {
        "name": "mnist",
        "id": "mnist-s",
        "root": str(mnist_dir),
        "scale": 1 / 255,
        "n_train": 2000,
        "n_test": 500,
        "val_fraction": 0.25,
    }
    facts = prepare(data, {"name": "zscore", "id": "zscore"}, seed=1, prepared_dir=tmp_path)
    assert facts["n_train"] == 1500 and facts["n_val"] == 500
    ds, transform, f = load_prepared(tmp_path / "mnist-s-zscore.npz")
    Xv, yv = f["X_val"], f["y_val"]
    assert Xv.shape == (500, ds.X_train.shape[1]) and np.bincount(yv).min() >= 40
    # z-scored with the statistics of the 1500 training rows: their mean is 0, the held-out rows' is
    # not
    assert np.abs(ds.X_train.mean(axis=0)).max() < 1e-10
    assert np.abs(Xv.mean(axis=0)).max() > 1e-3


def test_train_scores_the_validation_split_and_can_leave_the_test_set_alone(
    work: Path, mnist_dir: Path
):
    over = ["data=mnist", f"data.root={mnist_dir}", "data.id=mnist-v", "data.n_train=3000",
            "data.n_test=500", "data.val_fraction=2.0e-1", "model=softmax", "optimizer=sgd",
            "optimizer.epochs=2", "optimizer.lr=1.0e-1"]
    cfg = make_cfg(work, over)
    prep = ensure_prepared(cfg)
    _, _, facts = load_prepared(prep)
    m = train(cfg)
    assert abs(m["n_val"] - 600) <= 5 and 0.7 < m["val_accuracy"] <= 1 and m["val_loss"] > 0
    assert m["test_accuracy"] is not None
    obj_pred = read_run_record(Path(work) / "experiments" / "t" / "mnist-v-none-softmax-sgd"
                         / "metrics.json")
    assert obj_pred["val_accuracy"] == m["val_accuracy"]
    hidden = train(make_cfg(work, [*over, "score_test=false"]))
    assert hidden["test_accuracy"] is None and hidden["test_loss"] is None
    assert hidden["val_accuracy"] == m["val_accuracy"]  # same seed: the same SGD run
