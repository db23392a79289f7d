"""The shared iteration loop: same histories as the per-method loops it replaced, and the
``passes`` cost axis counted as documented in pipeline/optimizers.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from optimizer_cases import PINNED, cases, run_case

from pipeline.optimizers import HISTORY_KEYS, minimize

PINNED_FILE = Path(__file__).parent / "data" / "optimizer_histories.json"
GOLDEN = json.loads(PINNED_FILE.read_text(encoding="utf-8"))
CASES = cases()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shared_loop_reproduces_the_recorded_history(name: str) -> None:
    got, want = run_case(*CASES[name]), GOLDEN[name]
    assert (got["status"], got["n_iter"], got["lr"]) == (want["status"], want["n_iter"], want["lr"])
    assert got["iteration"] == want["iteration"]
    np.testing.assert_allclose(got["step_size"], want["step_size"], rtol=1e-12)
    for key in ("loss", "grad_norm"):  # bit-identical on the recording machine; BLAS may round
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-14, err_msg=key)
    assert set(PINNED) | {"status", "n_iter", "lr"} == set(want)


def test_every_history_has_passes_counted_per_method() -> None:
    for name, (obj, w0, method, opts) in CASES.items():
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(obj, w0, method, **opts)
        h = res.history
        assert tuple(h) == HISTORY_KEYS, name
        assert np.all(np.diff(h["passes"]) > 0), name  # every step reads the data
        p = obj.n_params
        if method == "gd" and not opts.get("line_search"):
            np.testing.assert_array_equal(h["passes"], 1.0 + h["iteration"])  # 1 per iteration
        elif method == "gd":  # plus ½ (a forward product) per Armijo trial: at least one per step
            assert np.all(np.diff(h["passes"]) >= 1.5)
        elif method == "newton" and not opts.get("line_search"):
            np.testing.assert_array_equal(h["passes"], 1.0 + (p + 1.0) * h["iteration"])
        elif method == "newton_cg" and opts.get("preconditioner", "auto") in ("none", "auto") \
                and not res.info["preconditioner_builds"] and hasattr(obj, "margins"):
            steps = np.asarray(res.info["cg_per_step"][: res.n_iter], dtype=float)
            np.testing.assert_array_equal(np.diff(h["passes"]), 1.0 + steps)  # 1 + 1 per CG step
        elif method == "closed_form":
            np.testing.assert_array_equal(h["passes"], [0.0, p + 1.0])


def test_passes_make_methods_comparable_on_one_axis() -> None:
    """GD needs far more passes than Newton-CG to the same accuracy on an ill-conditioned problem."""
    obj, w0, _, _ = CASES["gd_auto_softmax"]
    cg = minimize(obj, w0, "newton_cg", tol=1e-8, max_iter=50)
    gd = minimize(obj, w0, "gd", lr="auto", tol=1e-8, max_iter=20_000)
    assert cg.converged and gd.converged
    assert cg.history["passes"][-1] < gd.history["passes"][-1] / 5
