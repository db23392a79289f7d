"""The ``reference`` stage (``python -m pipeline.reference``): f* of a run's objective, certified.

On a small MNIST 3-vs-8 logistic problem (λ = 1e-4) prepared raw and ridge-whitened, the stage's f*
is checked against scikit-learn (polished by a Newton solve written here from the formulas), its κ
in both coordinates against Hessians built here, and its file against the contract in the module
docstring. Round trips of ``Transform.transformed_weights``, determinism, the max_iter warning and
the
bad inputs (on a tiny synthetic regression: no MNIST needed) follow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.compose import compose_app
from support.repo_copy import run_cmd
from support.snapshots import error_lines, snapshot

from pipeline.config.schemas import as_kwargs

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
LAM = 1.0e-4
DATA = [
    "data=mnist_binary",
    "data.id=r3v8",
    "data.n_train=600",
    "data.n_test=200",
    "model=logistic",
    f"model.l2={LAM}",
]
OID = "r3v8-logistic-l2=0.0001"
SYNTH = [
    "data=synthetic_regression",
    "data.id=rsyn",
    "data.n_samples=300",
    "data.n_features=5",
    "model=linear",
]


def _prepare(base: list[str], pre: str, prepared: Path) -> None:
    from pipeline.prepare import prepare

    cfg = compose_app("prepare", [*base, f"preprocess={pre}"])
    prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), int(cfg.seed), prepared)


def _ref_cfg(tmp: Path, ref_dir: str, *over: str, base: list[str] = DATA) -> Any:
    return compose_app("reference", [*base, f"paths.prepared_dir={tmp / 'prepared'}",
                                  f"paths.reference_dir={tmp / ref_dir}", *over])


# dense ~785 × 785 factorizations (conftest)
pytestmark = pytest.mark.usefixtures("one_blas_thread")


# ---------------------------------------------------------- independent numerics (no pipeline code)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logistic_f(Xt: np.ndarray, y: np.ndarray, w: np.ndarray, pen: np.ndarray) -> float:
    """(1/n) Σ log(1 + e^z) − y z + λ/2 wᵀ P w with z = X̃ w (P given as the matrix `pen` = λ P)."""
    z = Xt @ w
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * w @ pen @ w)


def _logistic_grad_hess(
    Xt: np.ndarray, y: np.ndarray, w: np.ndarray, pen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = Xt.shape[0]
    p = _sigmoid(Xt @ w)
    g = Xt.T @ (p - y) / n + pen @ w
    H = (Xt * (p * (1.0 - p))[:, None]).T @ Xt / n + pen
    return g, 0.5 * (H + H.T)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def mnist_work(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """r3v8 (600 train images of 3 and 8) prepared with preprocess=none and whiten (ridge = λ)."""
    tmp = tmp_path_factory.mktemp("ref")
    for pre in ("none", "whiten"):
        _prepare(DATA, pre, tmp / "prepared")
    return tmp


@pytest.fixture(scope="module")
def solved_raw(mnist_work: Path) -> dict[str, Any]:
    """The stage, in-process, solving in raw coordinates with κ also in the whitened ones."""
    from pipeline.reference import reference

    record = reference(
        _ref_cfg(mnist_work, "ref_none", "preprocess=none", "reference.kappa_in=[whiten]")
    )
    return record


@pytest.fixture(scope="module")
def independent(mnist_work: Path) -> dict[str, Any]:
    """w* from scikit-learn (C = 1/(λ n)), then polished by Newton steps on the formulas above."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.store.prepared import load_prepared

    ds, _, _ = load_prepared(mnist_work / "prepared" / "r3v8-none.npz")
    X, y = ds.X_train, ds.y_train.astype(np.float64)
    n, d = X.shape
    assert set(np.unique(y)) == {0.0, 1.0} and n == 600 and d == 784
    clf = LogisticRegression(C=1.0 / (LAM * n), tol=1e-12, max_iter=1000, solver="newton-cholesky")
    clf.fit(X, y)
    Xt = np.hstack([X, np.ones((n, 1))])
    pen = np.diag(np.r_[np.full(d, LAM), 0.0])  # the intercept is not penalized
    w_sk = np.r_[clf.coef_.ravel(), clf.intercept_]
    f_sk = _logistic_f(Xt, y, w_sk, pen)
    w = w_sk.copy()
    g, H = _logistic_grad_hess(Xt, y, w, pen)
    # sklearn's own stopping rule was |g|_max ≤ 1e-12 (on its scaling)
    assert np.linalg.norm(g) < 1e-8
    # one plain Newton step from there: quadratic convergence to rounding
    w = w - np.linalg.solve(H, g)
    g, H = _logistic_grad_hess(Xt, y, w, pen)
    assert np.linalg.norm(g) < 1e-12
    return {
        "X": X,
        "y": y,
        "Xt": Xt,
        "pen": pen,
        "f_sklearn": f_sk,
        "w": w,
        "f": _logistic_f(Xt, y, w, pen),
        "H": H,
    }


@pytest.fixture
def cli(stage_cli: Any) -> Any:
    """``cli(*args) -> (exit status, stdout, stderr)``: ``python -m pipeline.reference args``
    in-process."""
    return lambda *args: stage_cli("reference", *args)


# ------------------------------------------------------------------ MNIST 3 vs 8


def test_reference_file_f_star_and_kappa_against_independent_solver(
        mnist_work: Path, solved_raw: dict[str, Any], independent: dict[str, Any]) -> None:
    from pipeline.store.prepared import load_prepared
    from pipeline.store.references import load_references

    rec = solved_raw
    ref_dir = mnist_work / "ref_none"
    assert sorted(p.name for p in ref_dir.iterdir()) == [f"{OID}.json", "timing"]  # by objective
    on_disk = json.loads((ref_dir / f"{OID}.json").read_text(encoding="utf-8"))
    written = json.loads(json.dumps(rec))  # the returned record is what was written, its clock
    seconds = written.pop("seconds")  # in timing/ (.dvcignore'd): the file is the same on a rerun
    assert on_disk == written and seconds > 0
    assert json.loads((ref_dir / "timing" / f"{OID}.json").read_text()) == {"seconds": seconds}
    assert load_references(ref_dir)[0][OID].seconds == seconds
    assert rec["objective"] == OID and rec["solved_in"] == "none" and rec["method"] == "newton"
    assert rec["status"] == "converged" and rec["converged"] is True
    assert 1 <= rec["iterations"] < 100 and rec["grad_norm"] <= rec["tol"] == 1e-9
    assert (
        rec["n_params"] == 785
        and rec["n_train"] == 600
        and rec["l2"] == LAM
        and rec["fit_intercept"]
    )
    prepared = mnist_work / "prepared" / "r3v8-none.npz"
    assert Path(rec["prepared"]) == prepared
    assert rec["prepared_sha256"] == hashlib.sha256(prepared.read_bytes()).hexdigest()

    f_star = rec["f_star"]
    assert f_star == pytest.approx(
        _logistic_f(independent["Xt"], independent["y"], independent["w"], independent["pen"]),
        rel=1e-12,
    )
    f_sk = independent["f_sklearn"]
    assert abs(f_star - f_sk) <= 1e-9 * f_sk, (f_star, f_sk)
    assert f_star <= f_sk * (1 + 1e-13)  # nothing found lower than the reference
    assert abs(f_star - independent["f"]) <= 1e-12 * f_star

    coords = rec["coordinates"]
    assert set(coords) == {"none", "whiten"}
    for key in ("none", "whiten"):
        c = coords[key]
        assert abs(c["f"] - f_star) <= 1e-12 * f_star, key
        assert c["grad_norm"] <= rec["tol"] and c["iterations"] == 0, (key, c)
        assert 0 < c["mu"] <= c["L_local"] <= c["L_bound"] * (1 + 1e-9), (key, c)
        assert c["kappa"] == pytest.approx(c["L_local"] / c["mu"], rel=1e-12)
        rk = np.sqrt(c["kappa"])  # the predicted linear rates, from the same μ and L
        assert c["rate_gd"] == pytest.approx(1 - 1 / c["kappa"], rel=1e-12)
        assert c["rate_gd_lr_auto"] == pytest.approx(1 - c["mu"] / c["L_bound"], rel=1e-12)
        assert c["rate_heavy_ball"] == pytest.approx((rk - 1) / (rk + 1), rel=1e-12)
        assert c["rate_nesterov"] == pytest.approx(1 - 1 / rk, rel=1e-12)
        assert 0 < c["rate_heavy_ball"] < c["rate_nesterov"] < c["rate_gd"] < 1

    # raw coordinates: (1/n) X̃ᵀ D X̃ + λ diag(1, …, 1, 0)
    ev = np.linalg.eigvalsh(independent["H"])
    assert coords["none"]["mu"] == pytest.approx(ev[0], rel=1e-6)
    assert coords["none"]["L_local"] == pytest.approx(ev[-1], rel=1e-8)
    assert coords["none"]["kappa"] == pytest.approx(ev[-1] / ev[0], rel=1e-6)

    # whitened coordinates: z = A x + c with the bias absorbed, so [Aᵀ; cᵀ] w_z = [w_x; b_x] and
    # f(w_z) = (1/n) Σ ℓ(zᵀ w_z) + λ/2 ‖Aᵀ w_z‖² (the penalty stays on the input-space weights)
    ds_w, tr, _ = load_prepared(mnist_work / "prepared" / "r3v8-whiten.npz")
    A, c = tr.A, tr.offset
    assert tr.absorbs_bias and A.shape == (785, 784)
    Z = ds_w.X_train
    np.testing.assert_allclose(Z, independent["X"] @ A.T + c, rtol=0, atol=1e-9 * np.abs(Z).max())
    w_z = np.linalg.solve(np.vstack([A.T, c[None, :]]), independent["w"])
    pen_z = LAM * A @ A.T
    assert _logistic_f(Z, independent["y"], w_z, pen_z) == pytest.approx(f_star, rel=1e-11)
    g_z, H_z = _logistic_grad_hess(Z, independent["y"], w_z, pen_z)
    assert np.linalg.norm(g_z) < 1e-9
    ev_z = np.linalg.eigvalsh(H_z)
    assert coords["whiten"]["mu"] == pytest.approx(ev_z[0], rel=1e-6)
    assert coords["whiten"]["L_local"] == pytest.approx(ev_z[-1], rel=1e-8)
    assert coords["whiten"]["kappa"] == pytest.approx(ev_z[-1] / ev_z[0], rel=1e-6)
    # the same function, another parametrization: another curvature
    assert abs(coords["whiten"]["kappa"] / coords["none"]["kappa"] - 1) > 1e-2

    refs, notes = load_references(ref_dir)
    assert notes == [] and refs[OID].certified and refs[OID].f_star == f_star


def test_solving_in_whitened_coordinates_gives_the_same_objective_and_f_star(
        mnist_work: Path, solved_raw: dict[str, Any]) -> None:
    from pipeline.reference import reference

    rec = reference(_ref_cfg(mnist_work, "ref_whiten", "preprocess=whiten"))
    assert sorted(p.name for p in (mnist_work / "ref_whiten").iterdir()) == [f"{OID}.json",
                                                                              "timing"]
    assert rec["objective"] == solved_raw["objective"] == OID and rec["solved_in"] == "whiten"
    assert rec["status"] == "converged" and rec["grad_norm"] <= rec["tol"]
    # 784 whitened features + the absorbed bias, no separate intercept
    assert rec["n_params"] == 785
    assert abs(rec["f_star"] - solved_raw["f_star"]) <= 1e-10 * solved_raw["f_star"]
    # κ at w* computed where it was solved agrees with κ at the raw w* mapped into these coordinates
    here, mapped = rec["coordinates"]["whiten"], solved_raw["coordinates"]["whiten"]
    assert here["iterations"] == 0
    assert here["kappa"] == pytest.approx(mapped["kappa"], rel=1e-6)
    assert here["L_bound"] == pytest.approx(mapped["L_bound"], rel=1e-9)


@pytest.mark.slow
def test_cli_run_is_bit_identical_to_the_in_process_run(
    mnist_work: Path, solved_raw: dict[str, Any]
) -> None:
    """``python -m pipeline.reference`` in a subprocess: same file, same numbers to the last bit."""
    proc = run_cmd(
        [
            "python",
            "-m",
            "pipeline.reference",
            *DATA,
            "preprocess=none",
            "reference.kappa_in=[whiten]",
            f"paths.prepared_dir={mnist_work / 'prepared'}",
            f"paths.reference_dir={mnist_work / 'ref_cli'}",
        ],
        cwd=mnist_work,
        code_root=REPO,
        timeout=300,
        # as in this process
        extra_env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"reference: {OID}: f* = " in proc.stdout and "converged" in proc.stdout
    assert error_lines(proc.stderr) == []
    rec = json.loads((mnist_work / "ref_cli" / f"{OID}.json").read_text(encoding="utf-8"))
    mine = json.loads(json.dumps(solved_raw))
    assert "seconds" not in rec and (mnist_work / "ref_cli" / "timing" / f"{OID}.json").is_file()
    mine.pop("seconds")
    # the prepared file relative to the project (the CLI's working directory): the same in a clone
    assert rec.pop("prepared") == "prepared/r3v8-none.npz"
    assert Path(mine.pop("prepared")) == mnist_work / "prepared" / "r3v8-none.npz"
    assert rec == mine  # f*, ‖∇f‖, iterations, μ, L, κ: no clock, no randomness in the solve
    assert not (mnist_work / "outputs").exists() and not (mnist_work / ".hydra").exists()


# ---------------------------------------------------------------- determinism and the iteration cap


def test_two_solves_are_bit_identical_and_ignore_the_clock(
    mnist_work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """optima.solve twice on a logistic objective (MNIST 3 vs 8 pooled to 14×14): the same bits,
    also
    when the clock jumps by hours between its readings (the solve stops on tol and max_iter
    only)."""
    import time

    from pipeline.core.objectives import make_objective
    from pipeline.core.optima import solve
    from pipeline.store.prepared import load_prepared

    ds, _, _ = load_prepared(mnist_work / "prepared" / "r3v8-none.npz")
    X = ds.X_train.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(ds.X_train), -1)
    obj = make_objective("logistic", X, ds.y_train, l2=LAM, fit_intercept=True, dtype="float64")
    opts = {
        "tol": 1e-10,
        "max_iter": 100,
        "dense_max": 2500,
        "cg_max_iter": 500,
        "preconditioner": "auto",
    }
    a = solve(obj, **opts)
    real = time.perf_counter
    jumps = iter(range(1, 10**9))
    monkeypatch.setattr(time, "perf_counter", lambda: real() + 3600.0 * next(jumps))
    monkeypatch.setattr(time, "monotonic", lambda: real() + 3600.0 * next(jumps))
    b = solve(obj, **opts)
    monkeypatch.undo()
    assert a.status == b.status == "converged" and a.grad_norm <= 1e-10 and a.iterations >= 3
    assert (a.f_star.hex(), a.grad_norm.hex(), a.iterations) == (
        b.f_star.hex(),
        b.grad_norm.hex(),
        b.iterations,
    )
    assert np.array_equal(a.w, b.w)
    c = solve(obj, **{**opts, "dense_max": 0})  # Newton-CG: deterministic too, and the same optimum
    d = solve(obj, **{**opts, "dense_max": 0})
    assert c.method == "newton_cg" and c.status == "converged"
    assert c.f_star.hex() == d.f_star.hex() and np.array_equal(c.w, d.w)
    assert abs(c.f_star - a.f_star) <= 1e-12 * a.f_star


def test_max_iter_reached_is_written_with_a_warning_and_not_certified(
    mnist_work: Path, cli: Any
) -> None:
    from pipeline.store.references import load_references

    ref = mnist_work / "ref_capped"
    code, out, err = cli(*DATA, "preprocess=none", "reference.max_iter=1", "reference.tol=1.0e-13",
                         f"paths.prepared_dir={mnist_work / 'prepared'}",
                         f"paths.reference_dir={ref}")
    assert code == 0, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"reference: warning: {OID}: "), err
    assert "will not certify" in lines[0] and "reference.max_iter" in lines[0]
    rec = json.loads((ref / f"{OID}.json").read_text(encoding="utf-8"))
    assert rec["status"] == "max_iter" and rec["converged"] is False and rec["iterations"] == 1
    assert rec["grad_norm"] > rec["tol"]
    assert "max_iter after 1 newton steps" in out
    refs, notes = load_references(ref)
    assert notes == [] and not refs[OID].certified


def test_a_warm_start_reaches_the_same_certified_f_star_in_fewer_steps(
    mnist_work: Path, cli: Any
) -> None:
    from pipeline.core.objectives import make_objective
    from pipeline.core.optima import solve
    from pipeline.store.prepared import load_prepared
    from pipeline.store.writer import write_npz

    ds, _, _ = load_prepared(mnist_work / "prepared" / "r3v8-none.npz")
    obj = make_objective("logistic", ds.X_train, ds.y_train, l2=LAM, fit_intercept=True,
                         dtype="float64")
    near = solve(obj, tol=1e-6, max_iter=100, dense_max=2500, cg_max_iter=500,
                 preconditioner="auto")  # a run that stopped at a looser tolerance
    weights = mnist_work / "run" / "weights.npz"
    write_npz(weights, {"w": near.w})
    common = [*DATA, "preprocess=none", f"paths.prepared_dir={mnist_work / 'prepared'}"]
    recs = {}
    for name, init in (("cold", "null"), ("warm", str(weights))):
        code, _, err = cli(*common, f"paths.reference_dir={mnist_work / name}",
                           f"reference.init={init}")
        assert code == 0, err
        recs[name] = json.loads((mnist_work / name / f"{OID}.json").read_text(encoding="utf-8"))
    cold, warm = recs["cold"], recs["warm"]
    assert warm["converged"] and warm["grad_norm"] <= warm["tol"] and warm["init"] == str(weights)
    assert cold["init"] is None and warm["iterations"] < cold["iterations"]
    # both certified: f − f* ≤ ‖∇f‖²/(2λ) ≈ 5e-15
    assert abs(warm["f_star"] - cold["f_star"]) <= 1e-13 * cold["f_star"]
    write_npz(weights, {"w": near.w[:-1]})  # weights of another objective: one line, exit 2
    code, _, err = cli(*common, f"paths.reference_dir={mnist_work / 'bad'}",
                       f"reference.init={weights}")
    assert code == 2 and "reference.init=" in err and f"{near.w.size - 1} weights" in err


# ------------------------------------------------------------------ Transform.transformed_weights


@pytest.mark.parametrize("pre", [
    {"name": "none"},
    {"name": "zscore"},
    {"name": "whiten", "augment": True},
    {"name": "whiten", "augment": False},
    {"name": "whiten", "augment": True, "ridge": 0.3},
    {"name": "whiten", "augment": True, "zca": True},
])
@pytest.mark.parametrize("shape", [(), (3,)])  # one output (binary / linear) or c = 3 classes
def test_transformed_weights_inverts_input_weights(
    pre: dict[str, Any], shape: tuple[int, ...]
) -> None:
    from pipeline.core.transforms import fit_preprocess

    rng = np.random.default_rng(7)
    X = rng.normal(size=(80, 6)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0, 0.5]) + np.array(
        [2.0, -1.0, 0.0, 5.0, 0.3, 1.0]
    )
    X[:, 4] = 0.7  # a constant feature: z-scoring must not divide by its zero std
    if pre["name"] == "whiten":
        X[:, 4] += rng.normal(scale=0.2, size=80)  # plain whitening needs a full-rank second moment
    tr = fit_preprocess(pre, X)
    Z = tr.apply(X)
    k = tr.n_features_out
    W = rng.normal(size=(k, *shape))
    b = np.zeros(shape) if tr.absorbs_bias else rng.normal(size=shape)
    W_x, b_x = tr.input_weights(W, b)
    assert W_x.shape == (6, *shape)
    np.testing.assert_allclose(X @ W_x + b_x, Z @ W + b, rtol=1e-10, atol=1e-10)  # same predictions

    W2, b2 = tr.transformed_weights(W_x, b_x)  # back: the weights we started from
    assert W2.shape == W.shape and np.shape(b2) == np.shape(b)
    np.testing.assert_allclose(W2, W, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b2, b, rtol=1e-9, atol=1e-9)

    V_x, c_x = rng.normal(size=(6, *shape)), rng.normal(size=shape)  # forth: any input-space model
    V, c = tr.transformed_weights(V_x, c_x)
    if tr.absorbs_bias:
        assert np.all(np.asarray(c) == 0)
    np.testing.assert_allclose(Z @ V + c, X @ V_x + c_x, rtol=1e-9, atol=1e-9)
    V_x2, c_x2 = tr.input_weights(V, c)
    np.testing.assert_allclose(V_x2, V_x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(c_x2, c_x, rtol=1e-9, atol=1e-9)


def test_transformed_weights_of_a_dropping_whitening_is_the_least_squares_inverse() -> None:
    """Dropping directions (penalty_space=transformed): W ↦ W_x ↦ W is still exact (A has full row
    rank)."""
    from pipeline.core.transforms import fit_preprocess

    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 8))
    X[:, 7] = X[:, 0] - 2 * X[:, 1]  # rank 7 + the constant: one direction dropped
    tr = fit_preprocess(
        {"name": "whiten", "penalty_space": "transformed", "rel_threshold": 1e-9}, X
    )
    assert tr.n_features_out == 8  # 9 augmented directions, one numerically null
    W = rng.normal(size=(8, 4))
    W_x, b_x = tr.input_weights(W, np.zeros(4))
    W2, b2 = tr.transformed_weights(W_x, b_x)
    np.testing.assert_allclose(W2, W, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(tr.apply(X) @ W2 + b2, X @ W_x + b_x, rtol=1e-8, atol=1e-8)


# ----------------------------------------------------- bad input: one line, exit 2, nothing written


@pytest.fixture(scope="module")
def synth_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic regression prepared with none and whiten_transformed (another objective)."""
    tmp = tmp_path_factory.mktemp("refbad")
    for pre in ("none", "whiten_transformed"):
        _prepare(SYNTH, pre, tmp / "prepared")
    return tmp


@pytest.mark.parametrize("args, words", [
    (["model=logistic_mse"], ["model=logistic_mse", "not convex"]),
    (["reference.tol=0"], ["reference.tol=0", "> 0"]),
    (["reference.tol=-1.0e-9"], ["reference.tol=", "> 0"]),
    (["reference.max_iter=0"], ["reference.max_iter"]),
    (["reference.kappa_in=[whiten_transformed]"], ["reference.kappa_in=whiten_transformed",
                                                  "penalty_space=input"]),
    (["reference.kappa_in=[zscore]"], ["rsyn-zscore.json not found", "reference.kappa_in=zscore",
                                       "pipeline.prepare"]),
    # Newton-CG (more parameters than dense_max): κ is not computed, the list is still checked
    (["reference.dense_max=0", "reference.kappa_in=[zscore]"], ["rsyn-zscore.json not found"]),
    (["reference.dense_max=0", "reference.kappa_in=[none,whiten_transformed]"],
     ["reference.kappa_in=whiten_transformed", "penalty_space=input"]),
    (["reference.kappa_in=[../x]"], ["reference.kappa_in"]),
    (["preprocess=zscore"], ["rsyn-zscore.npz not found", "pipeline.prepare"]),
    (["reference.init=/nonexistent/weights.npz"], ["reference.init=/nonexistent/weights.npz",
                                                   "no such weights file"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    synth_work: Path, cli: Any, args: list[str], words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.core.optima

    ref = synth_work / "ref"
    ok = synth_work / "ref_ok"
    if not ok.exists():  # an earlier good result in another folder: untouched by the failures
        code, _, err = cli(
            *SYNTH, f"paths.prepared_dir={synth_work / 'prepared'}", f"paths.reference_dir={ok}"
        )
        assert code == 0, err
    before = snapshot(synth_work)
    solves: list[Any] = []
    monkeypatch.setattr(
        pipeline.core.optima, "solve", lambda *a, **k: solves.append(a) or pytest.fail("solved")
    )
    code, out, err = cli(
        *SYNTH, *args, f"paths.prepared_dir={synth_work / 'prepared'}", f"paths.reference_dir={ref}"
    )
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith("reference: error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert solves == []  # refused before any work
    assert not ref.exists() or not any(ref.iterdir())
    assert snapshot(synth_work) == before


@pytest.mark.slow
def test_kappa_in_of_another_objective_without_a_bias_is_refused(
    mnist_work: Path, cli: Any
) -> None:
    """Without an intercept, z-scored inputs (z = A x + c, c ≠ 0) give the model a bias tied to W:
    another objective than raw inputs, so its id names the preprocessing and κ there is refused."""
    _prepare(DATA, "zscore", mnist_work / "prepared")
    ref = mnist_work / "ref_nobias"
    code, _, err = cli(
        *DATA,
        "model.fit_intercept=false",
        "preprocess=none",
        "reference.kappa_in=[zscore]",
        f"paths.prepared_dir={mnist_work / 'prepared'}",
        f"paths.reference_dir={ref}",
    )
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("reference: error: reference.kappa_in=zscore:")
    assert "r3v8-zscore-logistic-l2=0.0001-nobias, not r3v8-logistic-l2=0.0001-nobias" in lines[0]
    assert not ref.exists() or not any(ref.iterdir())


def test_objective_id_names_what_changes_the_function() -> None:
    """One id per function of the raw inputs: the preprocessing is part of it only where it changes
    f."""
    from types import SimpleNamespace

    from pipeline.spec import RunSpec, objective_id

    def oid(pre: str, space: str = "input", fit_intercept: bool = True, offset: float = 0.5,
            absorbs: bool = False) -> str:
        tr = SimpleNamespace(
            kind=pre, penalty_space=space, absorbs_bias=absorbs, offset=np.array([offset, 0.0])
        )
        cfg = {"data": {"id": "d"}, "preprocess": {"name": pre, "id": pre},
               "model": {"name": "logistic", "l2": 1.0e-4, "fit_intercept": fit_intercept}}
        return objective_id(RunSpec.from_config(cfg), tr)

    assert (
        oid("none", offset=0.0)
        == oid("zscore")
        == oid("whiten", absorbs=True)
        == "d-logistic-l2=0.0001"
    )
    assert oid("zscore", space="transformed") == "d-zscore-logistic-l2=0.0001"  # λ on W_z
    assert oid("none", fit_intercept=False, offset=0.0) == "d-logistic-l2=0.0001-nobias"
    # c acts as a tied bias
    assert oid("zscore", fit_intercept=False) == "d-zscore-logistic-l2=0.0001-nobias"
    # the bias is inside z
    assert oid("whiten", fit_intercept=False, absorbs=True) == "d-logistic-l2=0.0001"
    # z = A x: same f
    assert oid("whiten", fit_intercept=False, offset=0.0) == "d-logistic-l2=0.0001-nobias"

