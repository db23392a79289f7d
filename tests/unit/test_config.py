"""Hydra configs: every group option composes, presets and budgets apply, bad values are refused."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from support.compose import compose_app
from support.repo_copy import REPO_ROOT

from pipeline.config.checks import validate_train_config
from pipeline.config.schemas import register_configs
from pipeline.core.errors import ConfigError
from pipeline.spec import RunSpec, name_suffix, run_name
from pipeline.store.rundir import run_dir

CONF = REPO_ROOT / "conf"
GROUPS = ("data", "preprocess", "model", "optimizer", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _schemas() -> None:
    register_configs()


def test_the_groups_the_issue_asks_for_exist() -> None:
    assert {"linear", "logistic", "logistic_mse", "softmax"} <= set(options("model"))
    assert {"gd", "newton", "newton_cg", "closed_form"} <= set(options("optimizer"))
    assert {"none", "zscore", "whiten"} <= set(options("preprocess"))
    assert {"default_softmax", "default_logistic", "default_linear"} <= set(options("experiment"))
    for preset in (CONF / "experiment").glob("*.yaml"):
        assert preset.read_text().startswith("# @package _global_"), preset


@pytest.mark.parametrize("app", ["train", "evaluate"])
@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes_and_validates(app: str, group: str) -> None:
    for opt in options(group):
        extra = ["model=linear"] if group == "optimizer" and opt == "closed_form" else []
        cfg = compose_app(app, [f"{group}={opt}", *extra])
        if group in ("model", "optimizer", "preprocess"):
            assert cfg[group].id == opt  # run directories are named by the conf file
        if group == "data":
            assert cfg.data.id  # names the prepared file
        validate_train_config(cfg)


def _budgeted(overrides: list[str]) -> OmegaConf:
    """The train config as train() runs it: composed by Hydra, the preset's budget included."""
    return compose_app("train", overrides)


def test_presets_set_the_study_and_budgets_follow_the_optimizer() -> None:
    cfg = _budgeted(["experiment=default_softmax", "optimizer=gd"])
    assert (cfg.study, cfg.data.name, cfg.model.name, cfg.optimizer.max_iter) == (
        "default",
        "mnist",
        "softmax",
        100,
    )
    cfg = _budgeted(["experiment=default_softmax", "optimizer=newton_cg"])
    assert (
        cfg.optimizer.max_iter == 50
        and cfg.optimizer.line_search is True
        and cfg.optimizer.tol == 1.0e-8
    )
    # no budget for this optimizer
    cfg = _budgeted(["experiment=default_softmax", "optimizer=gd_armijo"])
    assert cfg.optimizer.max_iter == 500
    cfg = _budgeted(["experiment=default_softmax", "optimizer=gd", "optimizer.max_iter=7"])
    assert cfg.optimizer.max_iter == 7  # the command line wins over the budget
    cfg = _budgeted([])
    assert cfg.study == "scratch" and cfg.optimizer.max_iter == 500
    assert not (CONF / "budget").exists()  # budgets live in the presets a user reads


def test_claim7_presets_and_the_default_study_budgets_of_lbfgs_and_nesterov() -> None:
    """Claim 7's two sweeps (the 5000-image MNIST softmax and the κ = 100 quadratic) and their
    budgets (iteration counts and tolerances only); lbfgs and nesterov in the default study."""
    for preset, data, model, sweep in (
            ("claim7_adam", "mnist-5k", "softmax", "gd,diag_newton,adam,newton_cg"),
            ("claim7_adam_quadratic", "synth-kappa100", "linear", "gd,diag_newton,adam,newton")):
        cfg = compose_app("train", [f"experiment={preset}"], return_hydra_config=True)
        assert (cfg.study, cfg.data.id, cfg.model.name, cfg.preprocess.name) == (
            preset, data, model, "none")
        assert cfg.hydra.sweeper.params.optimizer == sweep
        for opt in sweep.split(","):
            applied = _budgeted([f"experiment={preset}", f"optimizer={opt}"])
            validate_train_config(applied)
            assert applied.optimizer.time_budget_s is None, (preset, opt)
    assert _budgeted(["experiment=claim7_adam", "optimizer=diag_newton"]).optimizer.line_search
    lb = _budgeted(["experiment=default_softmax", "optimizer=lbfgs"]).optimizer
    assert (lb.max_iter, lb.tol) == (100, 1.0e-8)
    assert _budgeted(["experiment=default_softmax", "optimizer=nesterov"]).optimizer.max_iter == 100


def test_a_budget_comes_only_from_composition() -> None:
    """No per-optimizer budget is applied after composition: ``budgets`` is not a key (what
    ``--cfg job`` prints is what runs)."""
    assert "budgets" not in compose_app("train", ["experiment=default_softmax"])
    cfg = compose_app("train", ["experiment=default_softmax", "+budgets.gd.max_iter=3"])
    with pytest.raises(ConfigError, match=r"^budgets: unknown config key"):
        validate_train_config(cfg)


def test_swept_keys_have_the_documented_names_and_types() -> None:
    cfg = compose_app(
        "train",
        [
            "optimizer.lr=1.0e-3",
            "optimizer.max_iter=10",
            "optimizer.tol=1.0e-9",
            "model.l2=0.5",
            "preprocess=whiten",
            "preprocess.eps=1.0e-6",
            "data.root=/tmp/x",
            "seed=3",
        ],
    )
    assert cfg.optimizer.lr == pytest.approx(1.0e-3) and cfg.optimizer.max_iter == 10
    assert cfg.optimizer.tol == pytest.approx(1.0e-9) and cfg.model.l2 == 0.5
    assert (
        cfg.preprocess.eps == pytest.approx(1.0e-6) and cfg.data.root == "/tmp/x" and cfg.seed == 3
    )
    validate_train_config(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.max_iter=-1", "optimizer.max_iter"),
        ("optimizer.tol=-1.0e-3", "optimizer.tol"),
        ("model.l2=-0.1", "model.l2"),
        ("optimizer.armijo_c=1.5", "optimizer.armijo_c"),
        ("optimizer.backtrack=0", "optimizer.backtrack"),
        ("optimizer.init=ones", "optimizer.init"),
        ("model.dtype=float16", "model.dtype"),
        ("study=a/b", "study"),
        ("preprocess.eps=-1.0e-3", "preprocess.eps"),
        ("optimizer=closed_form", "closed_form"),
    ],
)
def test_range_checks_raise_one_line_config_errors(override: str, key: str) -> None:
    cfg = compose_app("train", [override])
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    msg = str(info.value)
    assert key in msg and "\n" not in msg


def test_run_names_carry_swept_values_but_not_groups_or_locations() -> None:
    cfg = compose_app("train", ["data=synthetic_regression", "preprocess=whiten", "model=linear",
                                "optimizer=gd_armijo"])
    ovs = ["optimizer=gd_armijo", "optimizer.lr=0.1", "seed=2", "model.l2=1e-3", "data.root=/a/b",
           "mlflow.tracking_uri=sqlite:///x.db", "study=s", "progress=false", "+experiment=x"]
    assert name_suffix(ovs) == ",model.l2=1e-3,optimizer.lr=0.1,seed=2"
    assert (
        run_name(cfg, ovs)
        == "synth-kappa100-whiten-linear-gd_armijo,model.l2=1e-3,optimizer.lr=0.1,seed=2"
    )
    assert run_name(cfg) != run_name(cfg, ["optimizer.lr=0.2"])
    assert run_dir(RunSpec.from_config(cfg)).parts[-3:] == (
        "experiments", "scratch", "synth-kappa100-whiten-linear-gd_armijo")
    assert name_suffix(["data.n_samples=a/b c"]) == ",data.n_samples=a_b_c"


def test_a_run_off_numpy_cpu_is_named_for_its_backend_and_device() -> None:
    from pipeline.spec import backend_suffix

    groups = ["data=synthetic_regression", "model=linear", "optimizer=gd"]
    base = run_name(compose_app("train", groups), ["optimizer.lr=0.1"])
    assert base == "synth-kappa100-none-linear-gd,optimizer.lr=0.1"
    # numpy on the CPU, named or not: the default run's folder, unchanged
    named = ["backend=numpy", "device=cpu"]
    assert run_name(compose_app("train", groups + named), [*named, "optimizer.lr=0.1"]) == base
    for backend, device, suffix in (("torch", "cpu", "-torch-cpu"),
                                    ("torch", "cuda", "-torch-cuda"),
                                    ("cupy", "cuda:1", "-cupy-cuda1")):
        over = [f"backend={backend}", f"device={device}"]
        cfg = compose_app("train", groups + over)
        name = run_name(cfg, [*over, "optimizer.lr=0.1"])
        assert name == f"synth-kappa100-none-linear-gd{suffix},optimizer.lr=0.1"
        assert backend_suffix(backend, device) == suffix
        spec = RunSpec.from_config(cfg, over)
        assert (spec.backend, spec.device, spec.run_name) == (backend, device, name[:-17])
    spec = RunSpec.from_config(compose_app("train", groups))
    assert (spec.backend, spec.device) == ("numpy", "cpu")
