"""AffineRows: stored pixels and an elementwise map standing for the float64 matrix, streamed."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline.core.rows as rows_mod
from pipeline.core.objectives import make_objective
from pipeline.core.rows import AffineRows, scaled
from pipeline.core.solvers import minimize
from pipeline.core.transforms import fit_preprocess

S = 1.0 / 255.0


def _pixels(n: int = 700, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 'images' with two all-zero columns and one constant column, labels in 0..2."""
    rng = np.random.default_rng(seed)
    P = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    P[:, 3] = 0
    P[:, 7] = 0
    P[:, 9] = 17
    y = (P[:, 0].astype(int) + P[:, 1]) % 3
    return P, y


def _rows(kind: str, P: np.ndarray) -> tuple[AffineRows, np.ndarray]:
    """AffineRows of P under the fitted ``kind`` map, and the float64 matrix it stands for."""
    t = fit_preprocess({"name": kind}, scaled(P, S))
    return AffineRows(P, S, t), t.apply(scaled(P, S))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_mod, "STREAM_ROWS", 64)  # 700 rows: 11 blocks, the last one short


@pytest.mark.parametrize("kind", ["none", "zscore"])
def test_rows_are_the_bits_of_the_whole_transform(kind, small_blocks):
    R, Z = _rows(kind, *_pixels()[:1])
    assert R.shape == Z.shape and R.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(R), Z)
    np.testing.assert_array_equal(R[65:200], Z[65:200])
    idx = np.array([699, 3, 64, 0, 3])
    np.testing.assert_array_equal(R[idx], Z[idx])
    out = np.empty((5, Z.shape[1]))
    assert np.take(R, idx, axis=0, out=out) is out
    np.testing.assert_array_equal(out, Z[idx])
    np.testing.assert_array_equal(R.astype(np.float32), Z.astype(np.float32))
    np.testing.assert_array_equal(R.squares(), Z * Z)
    assert R.square_rows_max() == float(np.max(np.sum(Z * Z, axis=1)))
    np.testing.assert_array_equal(R.active_columns(), np.flatnonzero(Z.any(axis=0)))
    cols = np.array([0, 2, 9, 11])
    np.testing.assert_array_equal(np.asarray(R.columns(cols)), Z[:, cols])
    own = AffineRows(R.P.copy(), R.input_scale, R.transform)
    squeezed = own.columns(cols, in_place=True)  # over the stored buffer: no second copy
    assert np.shares_memory(squeezed.P, own.P)
    np.testing.assert_array_equal(np.asarray(squeezed), Z[:, cols])


@pytest.mark.parametrize("kind", ["none", "zscore"])
def test_products_over_blocks_equal_the_whole_products(kind, small_blocks):
    R, Z = _rows(kind, *_pixels()[:1])
    rng = np.random.default_rng(1)
    W, r, U = rng.standard_normal((12, 3)), rng.standard_normal(12), rng.standard_normal((700, 3))
    np.testing.assert_array_equal(R @ W, Z @ W)  # each row its own product
    np.testing.assert_array_equal(R @ r, Z @ r)
    np.testing.assert_allclose(R.T @ U, Z.T @ U, rtol=1e-12, atol=1e-12)
    G = Z.T @ Z
    np.testing.assert_allclose(R.T @ R, G, rtol=1e-12, atol=1e-12 * np.abs(G).max())
    np.testing.assert_allclose(R.sum(axis=0), Z.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_a_dense_map_is_refused():
    P, _ = _pixels()
    t = fit_preprocess({"name": "whiten"}, scaled(P, S))
    with pytest.raises(ValueError, match="elementwise"):
        AffineRows(P, S, t)


@pytest.mark.parametrize("model", ["softmax", "logistic"])
@pytest.mark.parametrize("kind", ["none", "zscore"])
def test_objective_on_streamed_rows_is_the_objective_on_the_matrix(model, kind, small_blocks):
    P, y = _pixels()
    if model == "logistic":
        y = (y == 1).astype(np.int64)
    R, Z = _rows(kind, P)
    kw = {"l2": 1e-3, "n_classes": 3 if model == "softmax" else None}
    streamed = make_objective(model, R, y, **kw)
    dense = make_objective(model, Z.copy(), y, copy_X=False, **kw)
    assert isinstance(streamed._X, AffineRows) and streamed._X.shape == dense._X.shape
    rng = np.random.default_rng(2)
    w, v = rng.standard_normal(dense.n_params), rng.standard_normal(dense.n_params)
    f, g = streamed.value_grad(w)
    f0, g0 = dense.value_grad(w)
    assert f == pytest.approx(f0, rel=1e-13)
    np.testing.assert_allclose(g, g0, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(streamed.margins(w), dense.margins(w), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(streamed.hvp(w, v), dense.hvp(w, v), rtol=1e-11, atol=1e-14)
    for precision in ("float32", None):
        a = streamed.hess_operator(w, precision=precision)
        b = dense.hess_operator(w, precision=precision)
        np.testing.assert_allclose(a.matvec(v), b.matvec(v), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a.diagonal(), b.diagonal(), rtol=1e-5, atol=1e-9)
    assert streamed.lipschitz() == pytest.approx(dense.lipschitz(), rel=1e-12)
    assert streamed.lipschitz_max() == pytest.approx(dense.lipschitz_max(), rel=1e-12)
    batch = np.array([5, 600, 64])
    np.testing.assert_allclose(streamed.batch_grad(w, batch), dense.batch_grad(w, batch),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(streamed.predict(R, w), dense.predict(Z, w))
    assert streamed.predict_loss(R, y, w) == pytest.approx(dense.predict_loss(Z, y, w), rel=1e-13)


def test_newton_cg_on_streamed_rows_reaches_the_optimum_of_the_matrix(small_blocks):
    P, y = _pixels(n=900)
    R, Z = _rows("none", P)
    kw = {"l2": 1e-2, "n_classes": 3}
    out = [minimize(make_objective("softmax", X(), y, copy_X=False, **kw), np.zeros(39),
                    "newton_cg", tol=1e-9, preconditioner=pre)
           for X in (lambda: AffineRows(P.copy(), S, R.transform), Z.copy)
           for pre in ("block", "jacobi")]
    assert all(r.status == "converged" for r in out)
    obj = make_objective("softmax", Z.copy(), y, **kw)
    W0, b0 = obj.unpack(out[0].w)
    for r in out[1:]:  # the same optimum (the bias up to the softmax's shift of all classes)
        W, b = obj.unpack(r.w)
        np.testing.assert_allclose(W, W0, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(b - b.mean(), b0 - b0.mean(), rtol=1e-6, atol=1e-8)
    assert out[0].history["loss"][-1] == pytest.approx(out[2].history["loss"][-1], rel=1e-12)


def test_a_float32_objective_on_streamed_rows_holds_float32_rows(small_blocks):
    P, y = _pixels()
    R, Z = _rows("zscore", P)
    obj = make_objective("softmax", R, y, l2=1e-3, n_classes=3, dtype="float32")
    ref = make_objective("softmax", Z, y, l2=1e-3, n_classes=3, dtype="float32", copy_X=False)
    assert obj._X.dtype == np.float32
    w = np.random.default_rng(3).standard_normal(obj.n_params).astype(np.float32)
    np.testing.assert_array_equal(obj.grad(w), ref.grad(w))


def test_a_million_streamed_images_fit_the_default_memory_budget_the_float64_ones_do_not():
    from pipeline.core.memory import MEMORY_GB, budget_bytes, prepare_bytes

    n, d = 1_030_000, 784  # 17× MNIST's training images + its test set
    assert rows_mod.streams(n, d, S) and not rows_mod.streams(n, d, None)
    streamed = prepare_bytes(n, d, 1, rows_mod.STREAM_ROWS)  # uint8 pixels, two float64 blocks
    assert streamed < budget_bytes(MEMORY_GB) < prepare_bytes(n, d, 1)
    assert streamed < 2.5 * n * d  # bytes: a small constant times the stored size


def test_the_numpy_backend_keeps_streamed_rows_as_they_are():
    from pipeline.core.backend import load_backend

    R, Z = _rows("none", _pixels()[0])
    numpy_backend = load_backend("numpy", "cpu")
    assert numpy_backend.asarray(R) is R  # not made whole on the way to the objective
    np.testing.assert_array_equal(numpy_backend.asarray(R, dtype=np.float64), Z)
