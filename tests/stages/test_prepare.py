"""The prepare stage in-process: facts and arrays on disk, every data and preprocess conf composes
(the command line, its one-line errors and stray files: tests/system/test_prepare_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.core.transforms import WHITEN_DEFAULTS
from pipeline.data.datasets import load_dataset
from pipeline.prepare import prepare
from pipeline.spec import group_id, prepared_stem
from pipeline.store.prepared import load_prepared, prepared_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTH = {
    "name": "synthetic_regression",
    "id": "synth-test",
    "n_samples": 600,
    "n_features": 10,
    "condition_number": 1.0e2,
    "noise": 1.0e-1,
    "test_fraction": 0.25,
}
WHITEN = {"name": "whiten", "id": "whiten", **WHITEN_DEFAULTS}
FACT_KEYS = {
    "data",
    "preprocess",
    "task",
    "n_classes",
    "n_train",
    "n_test",
    "n_features_in",
    "n_features_out",
    "n_kept",
    "absorbs_bias",
    "cond_before",
    "cond_after",
    "sha256",
}


def test_prepare_synthetic_in_process(tmp_path: Path) -> None:
    facts = prepare(SYNTH, WHITEN, seed=5, prepared_dir=tmp_path)
    path = prepared_path(tmp_path, prepared_stem(SYNTH["id"], group_id(WHITEN)))
    assert path.name == "synth-test-whiten.npz" and path.with_suffix(".json").is_file()
    assert FACT_KEYS <= set(facts) and "seconds" not in facts  # no clock: the same bytes again
    assert json.loads(path.with_suffix(".json").read_text()) == facts
    assert facts["cond_before"] == pytest.approx(100.0, rel=1e-8)  # κ of the bias-augmented Hessian
    assert facts["cond_after"] == pytest.approx(1.0, abs=1e-6)
    assert facts["absorbs_bias"] and facts["n_kept"] == facts["n_features_out"] == 11
    ds, tr, f = load_prepared(path)
    assert ds.task == "regression" and ds.n_classes is None and ds.X_train.shape == (450, 11)
    # spectra on disk = eigenvalues of (1/n) X̃ᵀX̃ before and (1/n) ZᵀZ after, recomputed here
    raw = load_dataset(SYNTH, seed=5)
    Xa = np.c_[raw.X_train, np.ones(450)]
    np.testing.assert_allclose(
        f["spectrum_before"], np.linalg.eigvalsh(Xa.T @ Xa / 450)[::-1], rtol=1e-10
    )
    np.testing.assert_allclose(
        f["spectrum_after"], np.linalg.eigvalsh(ds.X_train.T @ ds.X_train / 450)[::-1], rtol=1e-10
    )
    np.testing.assert_allclose(f["spectrum_after"], 1.0, atol=1e-8)
    # the saved test split went through the train-fitted map
    np.testing.assert_array_equal(ds.X_test, tr.apply(raw.X_test))
    np.testing.assert_array_equal(ds.y_test, raw.y_test)
    # least squares on z without intercept, mapped back, is least squares on [x, 1] (solved
    # independently)
    w = ds.X_train.T @ ds.y_train / 450  # the normal equations with (1/n) ZᵀZ = I
    w_x, b_x = tr.input_weights(w, 0.0)
    coef = np.linalg.lstsq(Xa, raw.y_train, rcond=None)[0]
    np.testing.assert_allclose(w_x, coef[:10], rtol=1e-7, atol=1e-9)
    assert b_x == pytest.approx(coef[10], rel=1e-7)
    np.testing.assert_allclose(coef[:10], ds.meta["w_star"], atol=0.2)  # and near the truth


def test_load_prepared_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `python -m pipeline.prepare`"):
        load_prepared(tmp_path / "nothing.npz")


@pytest.mark.slow
def test_every_data_and_preprocess_conf_composes_and_validates() -> None:
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from support.compose import hydra_conf

    from pipeline.config.schemas import as_kwargs
    from pipeline.core.transforms import validate_preprocess_config
    from pipeline.data.datasets import validate_data_config

    GlobalHydra.instance().clear()
    datas = sorted(p.stem for p in (REPO_ROOT / "conf" / "data").glob("*.yaml"))
    pres = sorted(p.stem for p in (REPO_ROOT / "conf" / "preprocess").glob("*.yaml"))
    assert {"mnist", "mnist_binary", "synthetic_regression"} <= set(datas)
    assert {"none", "zscore", "whiten"} <= set(pres)
    stems = set()
    with hydra_conf():
        for d in datas:
            for p in pres:
                cfg = compose(config_name="prepare", overrides=[f"data={d}", f"preprocess={p}"])
                data_cfg, pre_cfg = as_kwargs(cfg.data), as_kwargs(cfg.preprocess)
                validate_data_config(data_cfg)
                validate_preprocess_config(pre_cfg)
                assert pre_cfg["id"] == p  # file names follow the conf file names
                stems.add(prepared_stem(str(data_cfg["id"]), group_id(pre_cfg)))
    GlobalHydra.instance().clear()
    assert len(stems) == len(datas) * len(pres)  # no two choices write the same file
