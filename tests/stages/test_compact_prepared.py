"""Compact prepared data: pixels stored once as uint8 with the fitted transform, applied in float64
on loading. The arrays a stage loads equal, bit for bit, those of the float64 files written before
(recomputed here the way ``prepare`` made them: scale, split, fit, apply in one pass)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.transforms import fit_preprocess
from pipeline.data.datasets import load_dataset
from pipeline.data.split import validation_split
from pipeline.prepare import prepare
from pipeline.store.npzmap import npz_arrays
from pipeline.store.prepared import _BLOCK_ROWS, load_prepared, prepared_rows

WHITEN = {"name": "whiten", "id": "whiten", "ridge": 1e-4}
PRE = {"none": {"name": "none", "id": "none"}, "zscore": {"name": "zscore", "id": "zscore"},
       "whiten": WHITEN}


def _float64_files(data: dict[str, Any], pre: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """The arrays the float64 prepared files held: X = s·p, split, fitted and applied at once."""
    ds = load_dataset(data, seed)
    out: dict[str, np.ndarray] = {}
    X_tr, y_tr = ds.X_train, ds.y_train
    if data.get("val_fraction"):
        rows, val = validation_split(ds.y_train, data["val_fraction"], seed, True)
        out["y_val"] = ds.y_train[val]
        X_val = ds.X_train[val]
        X_tr, y_tr = ds.X_train[rows], ds.y_train[rows]
    tr = fit_preprocess(pre, X_tr)
    out.update(X_train=tr.apply(X_tr), y_train=y_tr, X_test=tr.apply(ds.X_test), y_test=ds.y_test)
    if "y_val" in out:
        out["X_val"] = tr.apply(X_val)
    return out


@pytest.mark.parametrize("pre", ["none", "zscore", "whiten"])
@pytest.mark.parametrize("val_fraction", [None, 0.1])
def test_compact_load_equals_the_float64_arrays_bit_for_bit(
    tmp_path: Path, mnist_dir: Path, pre: str, val_fraction: float | None
) -> None:
    # more rows than one load block, so the block-wise transform is exercised across blocks
    data = {"name": "mnist", "id": "mnist-c", "root": str(mnist_dir), "n_train": 10000,
            "n_test": 1500, "val_fraction": val_fraction}
    prepare(data, PRE[pre], seed=3, prepared_dir=tmp_path)
    npz = tmp_path / f"mnist-c-{pre}.npz"
    ds, _tr, facts = load_prepared(npz)
    want = _float64_files(data, PRE[pre], seed=3)
    for k in ("X_train", "y_train", "X_test", "y_test"):
        got = getattr(ds, k)
        assert got.dtype == want[k].dtype and np.array_equal(got, want[k]), k
    if val_fraction:
        assert np.array_equal(facts["X_val"], want["X_val"])
        assert np.array_equal(facts["y_val"], want["y_val"])
    else:
        assert "X_val" not in facts
    with np.load(npz, allow_pickle=False) as z:  # stored once: uint8 pixels, no float64 copy
        assert z["inputs_train"].dtype == np.uint8 and "X_train" not in z.files
        assert z["inputs_train"].shape[0] == 10000  # the validation rows are indices into them
        assert ("val_rows" in z.files) == bool(val_fraction)
    assert npz.stat().st_size < 11500 * 784 + 785 * 785 * 8 * 2  # 1 byte a pixel (+ A), not 8


def test_validation_rows_are_indices_not_a_copy(tmp_path: Path, mnist_dir: Path) -> None:
    data = {"name": "mnist", "id": "mnist-v", "root": str(mnist_dir), "n_train": 2000,
            "n_test": 300, "val_fraction": 0.25}
    prepare(data, PRE["none"], seed=1, prepared_dir=tmp_path)
    with np.load(tmp_path / "mnist-v-none.npz", allow_pickle=False) as z:
        val, P = z["val_rows"], z["inputs_train"]
    ds, _, facts = load_prepared(tmp_path / "mnist-v-none.npz")
    assert val.size == 500 and np.all(np.diff(val) > 0)
    # the held-out rows of the same pixels, x = s·p
    assert np.array_equal(facts["X_val"], np.multiply(P[val], facts["meta"]["scale"]))
    assert ds.X_train.shape == (1500, 784)


def test_inputs_are_memory_mapped_and_blocks_change_no_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    P = rng.integers(0, 256, size=(2 * _BLOCK_ROWS + 17, 12), dtype=np.uint8)
    path = tmp_path / "a.npz"
    with open(path, "wb") as fh:
        np.savez(fh, inputs_train=P, small=np.arange(3))
    arrays = npz_arrays(path, mapped=("inputs_train",))
    assert isinstance(arrays["inputs_train"], np.memmap) and not isinstance(arrays["small"],
                                                                               np.memmap)
    assert np.array_equal(arrays["inputs_train"], P)
    X = np.multiply(P, 1 / 255)
    for pre in ("zscore", "whiten"):
        tr = fit_preprocess(PRE[pre], X)
        assert np.array_equal(prepared_rows(tr, arrays["inputs_train"], 1 / 255), tr.apply(X))
        rows = np.arange(0, P.shape[0], 3)
        assert np.array_equal(prepared_rows(tr, arrays["inputs_train"], 1 / 255, rows),
                              tr.apply(X[rows]))


def test_a_compressed_npz_is_read_not_mapped(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    P = np.arange(600, dtype=np.uint8).reshape(50, 12)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, inputs_train=P)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("inputs_train.npy").compress_type != zipfile.ZIP_STORED
    arrays = npz_arrays(path, mapped=("inputs_train",))
    assert not isinstance(arrays["inputs_train"], np.memmap)
    assert np.array_equal(arrays["inputs_train"], P)


def test_damaged_validation_rows_are_one_error(tmp_path: Path) -> None:
    from pipeline.core.errors import DataError
    data = {"name": "synthetic_regression", "id": "s", "n_samples": 300, "n_features": 4,
            "val_fraction": 0.2}
    prepare(data, PRE["none"], seed=0, prepared_dir=tmp_path)
    npz = tmp_path / "s-none.npz"
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["val_rows"] = arrays["val_rows"][::-1].copy()  # not sorted
    tmp = tmp_path / "t.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, npz)
    with pytest.raises(DataError, match="val_rows are not sorted row indices"):
        load_prepared(npz)


def test_preparing_twice_writes_the_same_bytes(tmp_path: Path) -> None:
    data = {"name": "synthetic_regression", "id": "s", "n_samples": 300, "n_features": 4}
    files = [tmp_path / "s-whiten.npz", tmp_path / "s-whiten.json"]
    prepare(data, WHITEN, seed=0, prepared_dir=tmp_path)
    first = [p.read_bytes() for p in files]
    prepare(data, WHITEN, seed=0, prepared_dir=tmp_path)
    assert [p.read_bytes() for p in files] == first  # no clock time: DVC sees the same output


def test_deflated_and_raw_inputs_load_the_same_arrays(tmp_path: Path, mnist_dir: Path) -> None:
    data = {"name": "mnist", "id": "mnist-z", "root": str(mnist_dir), "n_train": 3000,
            "n_test": 500}
    loaded, sizes = [], []
    for compress in (True, False):
        d = tmp_path / str(compress)
        prepare(data, PRE["zscore"], seed=0, prepared_dir=d, compress=compress)
        npz = d / "mnist-z-zscore.npz"
        with zipfile.ZipFile(npz) as zf:
            kind = zf.getinfo("inputs_train.npy").compress_type
            assert kind == (zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
            assert zf.getinfo("y_train.npy").compress_type == zipfile.ZIP_STORED
        mapped = npz_arrays(npz, mapped=("inputs_train",))["inputs_train"]
        assert isinstance(mapped, np.memmap) != compress  # raw inputs are memory-mapped
        loaded.append(load_prepared(npz)[0])
        sizes.append(npz.stat().st_size)
    assert np.array_equal(loaded[0].X_train, loaded[1].X_train)
    assert np.array_equal(loaded[0].X_test, loaded[1].X_test)
    assert sizes[0] < sizes[1] / 3  # MNIST pixels deflate about 4×


@pytest.mark.parametrize("pre", ["none", "zscore", "whiten"])
def test_past_the_dense_size_loading_streams_rows_with_the_same_bits(
    tmp_path: Path, mnist_dir: Path, pre: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.core.rows as rows_mod
    from pipeline.core.rows import AffineRows

    data = {"name": "mnist", "id": "mnist-s", "root": str(mnist_dir), "n_train": 3000,
            "n_test": 500, "val_fraction": 0.1}
    prepare(data, PRE[pre], seed=3, prepared_dir=tmp_path)
    npz = tmp_path / f"mnist-s-{pre}.npz"
    dense, _tr, dfacts = load_prepared(npz)
    monkeypatch.setattr(rows_mod, "DENSE_MAX_BYTES", 1 << 20)  # 1 MiB: every split streams
    monkeypatch.setattr(rows_mod, "STREAM_ROWS", 512)
    ds, _tr, facts = load_prepared(npz)
    for got, want in ((ds.X_train, dense.X_train), (ds.X_test, dense.X_test),
                      (facts["X_val"], dfacts["X_val"])):
        # a dense map (whiten) cannot be applied row block by row block with its bits: kept whole
        assert isinstance(got, AffineRows) == (pre != "whiten")
        assert got.shape == want.shape and np.array_equal(np.asarray(got), want)
    if pre != "whiten":
        assert ds.X_train.P.dtype == np.uint8  # 1 byte a pixel in memory, not 8


@pytest.mark.parametrize("pre", ["zscore", "whiten"])
def test_past_the_dense_size_prepare_fits_over_blocks_to_the_same_transform(
    tmp_path: Path, mnist_dir: Path, pre: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.core.rows as rows_mod
    from pipeline.store.prepared import load_spectra, load_transform_arrays

    data = {"name": "mnist", "id": "mnist-b", "root": str(mnist_dir), "n_train": 3000,
            "n_test": 500}
    prepare(data, PRE[pre], seed=3, prepared_dir=tmp_path / "whole")
    monkeypatch.setattr(rows_mod, "DENSE_MAX_BYTES", 1 << 20)  # the float64 inputs: 18 MB
    monkeypatch.setattr(rows_mod, "STREAM_ROWS", 700)
    prepare(data, PRE[pre], seed=3, prepared_dir=tmp_path / "blocks")
    whole, blocks = (tmp_path / d / f"mnist-b-{pre}.npz" for d in ("whole", "blocks"))
    a, b = load_transform_arrays(whole), load_transform_arrays(blocks)
    assert a.keys() == b.keys()
    if pre == "whiten":  # eigenvectors of near-equal eigenvalues may turn: compare T̃ᵀT̃ of
        # the augmented map T̃ = [A c] (a function of the second moment only), not T̃ itself
        for m in (a, b):
            T = np.column_stack([m.pop("matrix"), m.pop("offset")])
            m["gram"] = T.T @ T
    for k in a:  # the same fit, summed in another order
        if a[k].dtype.kind == "f":
            scale = float(np.max(np.abs(a[k]))) if a[k].size else 1.0
            np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9 * scale, err_msg=k)
        else:
            assert np.array_equal(b[k], a[k]), k
    for k, lam in load_spectra(whole).items():
        np.testing.assert_allclose(load_spectra(blocks)[k], lam, rtol=1e-9, atol=1e-12)


def test_streamed_training_never_holds_the_float64_inputs(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory bounded by design: Newton-CG on streamed rows peaks at what it is stated to hold —
    the stored uint8 pixels (1 byte a pixel), the float32 copy (4), the c class blocks of
    (d+1)² and per-row vectors — below the float64 matrix Z (8 bytes a pixel)."""
    import tracemalloc

    import pipeline.core.rows as rows_mod
    from pipeline.core.objectives import make_objective
    from pipeline.core.solvers import minimize

    n, d, c, n_test = 60000, 784, 10, 1000
    data = {"name": "mnist", "id": "mnist-m", "root": str(mnist_dir), "n_test": n_test}
    prepare(data, PRE["none"], seed=3, prepared_dir=tmp_path)
    npz = tmp_path / "mnist-m-none.npz"
    peaks = {}
    for mode in ("whole", "streamed"):
        if mode == "streamed":
            monkeypatch.setattr(rows_mod, "DENSE_MAX_BYTES", 1 << 20)
        tracemalloc.start()
        ds, _tr, _facts = load_prepared(npz)
        obj = make_objective("softmax", ds.X_train, ds.y_train, l2=1e-4, n_classes=c,
                             copy_X=False)
        res = minimize(obj, np.zeros(obj.n_params), "newton_cg", max_iter=2, tol=1e-12,
                       preconditioner="block")
        peaks[mode] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del ds, obj
        assert res.n_iter == 2
    z_bytes = 8 * n * d
    stated = (1 + 4) * n * d + 8 * n_test * d + 2 * 8 * c * (d + 1) ** 2 + 16 * n * c * 8
    assert peaks["whole"] > z_bytes  # the measurement sees the float64 inputs when they exist
    assert peaks["streamed"] < min(stated, z_bytes), (peaks, stated, z_bytes)
