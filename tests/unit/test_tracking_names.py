"""What MLflow shows of a run: params that apply to it, step points on the run's own clock,
suboptimality, sweep parent and trial names, the prepared files a preset's sweep reads."""

from __future__ import annotations

import numpy as np
import pytest
from support.compose import compose_app

from pipeline.config.sweeps import prepared_variants, sweep_title, swept
from pipeline.tracking.metrics import Point, final_points, history_points, subopt_points
from pipeline.tracking.params import run_params
from pipeline.tracking.sweep import trial_name


def _params(*overrides: str) -> dict[str, str]:
    from omegaconf import OmegaConf

    cfg = compose_app("train", list(overrides))
    return run_params(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def test_an_mnist_newton_cg_run_logs_only_the_keys_it_reads() -> None:
    p = _params("experiment=default_softmax", "optimizer=newton_cg")
    assert p["optimizer.name"] == "newton_cg" and p["optimizer.max_iter"] == "50"
    assert p["optimizer.cg_max_iter"] == "250" and p["optimizer.line_search"] == "True"
    assert p["optimizer.armijo_c"] == "0.0001"  # the line search is on
    assert p["data.id"] == "mnist" and p["model.l2"] == "0.0001" and p["seed"] == "0"
    for absent in ("data.n_samples", "data.condition_number", "optimizer.batch_size",
                   "optimizer.epochs", "optimizer.beta1", "optimizer.memory", "data.mirrors",
                   "data.files.train_images.sha256", "paths.prepared_dir", "mlflow.enabled",
                   "preprocess.eps"):
        assert absent not in p, absent
    assert len(p) <= 35


def test_sgd_and_synthetic_runs_log_their_own_keys() -> None:
    sgd = _params("experiment=hw3_sgd")
    assert sgd["optimizer.batch_size"] == "100" and sgd["optimizer.schedule"] == "inverse_time"
    assert sgd["data.val_fraction"] == "0.1" and "optimizer.cg_max_iter" not in sgd
    assert "optimizer.armijo_c" not in sgd  # no line search
    synth = _params("data=synthetic_regression", "model=linear", "preprocess=whiten")
    assert synth["data.condition_number"] == "100.0" and "data.scale" not in synth
    assert synth["preprocess.eps"] == "0.0" and "data.classes" not in synth


def test_history_points_are_timed_by_the_runs_own_clock() -> None:
    hist = {"iteration": np.arange(4), "loss": np.array([4.0, 3.0, 2.5, 2.25]),
            "grad_norm": np.ones(4), "time_s": np.array([0.0, 0.5, 1.25, 2.0]),
            "passes": np.arange(4.0), "step_size": np.full(4, 0.1)}
    pts = history_points(hist, start_ms=1_000_000)
    obj = [p for p in pts if p.key == "objective"]
    assert [p.step for p in obj] == [0, 1, 2, 3] and [p.value for p in obj] == [4, 3, 2.5, 2.25]
    assert [p.timestamp for p in obj] == [1_000_000, 1_000_500, 1_001_250, 1_002_000]
    assert {p.key for p in pts} == {"objective", "grad_norm", "time_s", "passes", "step_size"}
    assert "loss" not in {p.key for p in pts}
    for key in ("grad_norm", "passes"):  # one point per step, none added at step 0
        assert [p.step for p in pts if p.key == key] == [0, 1, 2, 3]


def test_final_points_skip_what_the_history_holds() -> None:
    metrics = {"train_loss": 2.25, "grad_norm": 1.0, "passes": 3.0, "iterations": 3,
               "train_time_s": 2.1, "test_accuracy": None, "converged": True, "status": "x"}
    keys = {p.key for p in final_points(metrics, 5)}
    assert keys == {"iterations", "train_time_s"}


def test_subopt_is_f_minus_f_star_at_the_objective_steps_and_times() -> None:
    obj = [Point("objective", v, 10 + k, k) for k, v in enumerate([3.0, 2.0, float("nan")])]
    pts = subopt_points(obj, 2.0)
    sub = [(p.step, p.value, p.timestamp) for p in pts if p.key == "subopt"]
    rel = [p.value for p in pts if p.key == "rel_subopt"]
    assert sub == [(0, 1.0, 10), (1, 0.0, 11)] and rel == [0.5, 0.0]
    assert {p.key for p in subopt_points(obj, 0.0)} == {"subopt"}  # no relative gap to f* = 0


def test_the_sweep_parent_is_named_after_what_was_swept() -> None:
    over = ["experiment=default_softmax", "optimizer=gd,newton_cg",
            "preprocess=none,zscore,whiten"]
    sweeps = swept(over, None)
    assert sweeps == {"optimizer": "gd,newton_cg", "preprocess": "none,zscore,whiten"}
    assert sweep_title("default", sweeps) == (
        "default: optimizer=gd,newton_cg × preprocess=none,zscore,whiten")
    preset = {"preprocess": "none,whiten", "optimizer": "gd,newton_cg"}
    # a value fixed on the command line replaces the preset's sweep of that key
    assert swept(["preprocess=whiten", "seed=1,2"], preset) == {
        "optimizer": "gd,newton_cg", "seed": "1,2"}
    assert sweep_title("x", {}) == "x: sweep"


def test_trial_names_lead_with_the_swept_values() -> None:
    folders = [f"mnist-val-none-softmax-sgd,model.l2={l2},optimizer.batch_size=50,"
               f"optimizer.lr={lr}" for l2, lr in (("1e-05", "0.1"), ("1e-05", "0.2"))]
    keys = ("optimizer.lr", "optimizer.batch_size", "model.l2")
    names = [trial_name(f, keys) for f in folders]
    assert names[0] == "l2=1e-05 batch_size=50 lr=0.1 · mnist-val-none-softmax-sgd"
    assert names[0][:30] != names[1][:30]  # distinct where the UI cuts names short
    assert trial_name("d-none-linear-gd,data.n_samples=9,optimizer.lr=2", ("optimizer.lr",)) == (
        "lr=2 · d-none-linear-gd,data.n_samples=9")
    assert trial_name("d-none-linear-gd", ("optimizer",)) == "d-none-linear-gd"
    # no swept value in the folder name, or no swept keys known: the folder name
    assert trial_name("d-none-linear-gd,data.n_samples=9", ("optimizer",)) == (
        "d-none-linear-gd,data.n_samples=9")
    assert trial_name("d-none-linear-gd,optimizer.lr=2") == "d-none-linear-gd,optimizer.lr=2"


@pytest.mark.parametrize("params, retrain, want", [
    ({"preprocess": "none,whiten", "optimizer": "gd,newton_cg"}, (),
     [["preprocess=none"], ["preprocess=whiten"]]),
    ({"optimizer.lr": "tag(log, interval(1.0e-2, 1.0))"}, ("mnist",),
     [[], ["data.id=mnist", "data.val_fraction=0.0"]]),
    (None, (), [[]]),
])
def test_prepare_makes_every_file_a_presets_sweep_reads(params: dict[str, str] | None,
                                                        retrain: tuple[str, ...],
                                                        want: list[list[str]]) -> None:
    assert prepared_variants(["experiment=x"], params, retrain) == want
    # a preprocessing given on the command line is the only one
    assert prepared_variants(["preprocess=zscore"], params) == [[]]
