"""Structured-config schemas for the Hydra apps (types here; ranges checked by ``validate_*``).

One dataclass per config group a user sweeps: ``data``, ``preprocess``, ``model``, ``optimizer``.
The YAML files in ``conf/`` fill these in; ``register_configs()`` puts the schemas in Hydra's
ConfigStore so that a misspelt key or a wrongly typed value is rejected before any work starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class IdxFileConfig:
    """One IDX file of a data set: its name (without ``.gz``) and the SHA-256 of its decompressed payload."""

    name: str = MISSING
    sha256: str = MISSING


@dataclass
class DataConfig:
    """Which data set to load, and from where. An IDX data set is declared entirely here (conf/data/<name>.yaml)."""

    name: str = MISSING  # the conf/data/ file name: mnist, mnist_binary, fashion_mnist, synthetic_regression, ...
    id: str = MISSING  # short name used in file and run names, e.g. "mnist", "mnist-3v8"
    format: str = "idx"  # idx (four IDX files) | synthetic_regression
    title: str | None = None  # idx: the data set's name in messages and the report, e.g. "Fashion-MNIST"
    folder: str | None = None  # idx: its sub-folder under a parent data folder and data/raw/; null = name
    root: str | None = None  # dir with the IDX files (or a parent holding <folder>/); else $CURVLAB_DATA_DIR, ...
    # idx: train_images, train_labels, test_images, test_labels -> {name, sha256}
    files: dict[str, IdxFileConfig] = field(default_factory=dict)
    mirrors: list[str] = field(default_factory=list)  # idx: download URLs (folder URLs, file name appended)
    class_names: list[str] = field(default_factory=list)  # idx: the name of each label value 0, 1, ...
    classes: list[Any] = field(default_factory=list)  # idx: class k = label value classes[k] (or a list of
    #   values); [] = every label value is its own class. [3, 8]: the binary 3-vs-8 problem
    reference_accuracy: dict[str, Any] | None = None  # published test accuracy per model: {softmax: {source, value}}
    scale: float = 1.0 / 255.0  # pixel values are multiplied by this (MNIST -> [0, 1])
    n_train: int | None = None  # subsample the training split (first n after a seeded shuffle)
    n_test: int | None = None
    val_fraction: float = 0.0  # hold out this share of the training rows (seeded, stratified) for validation
    # synthetic_regression
    n_samples: int = 2000
    n_features: int = 20
    condition_number: float = 1.0e2  # of the input second-moment matrix (1/n) X^T X
    noise: float = 1.0e-1
    test_fraction: float = 0.2


@dataclass
class PreprocessConfig:
    """Preprocessing fitted on the training split and applied to both splits."""

    name: str = "none"  # none | zscore | whiten
    id: str | None = None  # short name in file and run names, e.g. "whiten", "zca"; null = name
    eps: float = 0.0  # whiten: added to every eigenvalue before Λ^-1/2
    rel_threshold: float | None = None  # whiten: drop directions with λ_i < rel_threshold · λ_max
    n_components: int | None = None  # whiten: keep the top-k directions (PCA-whitening)
    explained_variance: float | None = None  # whiten: keep the fewest directions explaining this share
    zca: bool = False  # whiten: rotate back with Φ (ZCA) instead of staying in eigen-coordinates
    augment: bool = True  # whiten: include the constant bias feature before the eigendecomposition
    ridge: float = 0.0  # whiten: whiten (1/n) X̃ᵀX̃ + ridge·I on the weights (ridge whitening: ${model.l2})
    penalty_space: str = "input"  # input: λ/2 ‖W_x‖² on input-space weights (same objective); transformed: on W_z


@dataclass
class ModelConfig:
    """The convex model and its objective."""

    name: str = MISSING  # linear | logistic | logistic_mse | softmax
    id: str | None = None  # short name in run names (the conf/model/ file name); null = name
    l2: float = 1.0e-4  # λ in λ/2 ‖w‖² (bias not penalized)
    fit_intercept: bool = True
    dtype: str = "float64"  # float64 | float32


@dataclass
class OptimizerConfig:
    """The optimizer and its stopping rule."""

    name: str = MISSING  # gd | newton | newton_cg | closed_form | sgd
    id: str | None = None  # short name in run names (the conf/optimizer/ file name); null = name
    lr: Any = "auto"  # a float > 0 or "auto" (= 1/L); Any: OmegaConf 2.3 cannot merge a Union node here
    max_iter: int = 100
    tol: float = 1.0e-6  # stop when ‖∇f‖ ≤ tol
    time_budget_s: float | None = None
    line_search: bool = False  # Armijo backtracking
    armijo_c: float = 1.0e-4
    backtrack: float = 0.5
    cg_max_iter: int = 250  # newton_cg: inner conjugate-gradient iterations per Newton step
    init: str = "zeros"  # zeros | random | saturated (the lecture's bad initialization)
    init_scale: float = 1.0
    # sgd only (the other optimizers ignore these): lr "auto" = 1/L_B, the minibatch smoothness
    batch_size: int = 100
    epochs: int = 5
    schedule: str = "constant"  # constant | inverse_time (lr/(1 + epoch/tau)) | step
    tau: float = 1.0  # inverse_time: epochs until the step size has halved
    step_epochs: int = 1  # step: multiply the step size by step_factor every step_epochs epochs
    step_factor: float = 0.5
    momentum: float = 0.0  # heavy ball: v <- momentum v - lr g, w <- w + v
    log_every: int | None = None  # history row every k minibatches; null = once per epoch


@dataclass
class MlflowConfig:
    """Where runs are tracked; null = the embedded SQLite store in the project root."""

    tracking_uri: str | None = None  # else $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db
    artifact_root: str | None = None  # else <project>/mlartifacts
    enabled: bool = True
    # an http(s) tracking server that does not answer fails within about
    # (1 + http_max_retries) × http_timeout_s + the back-off (MLflow's MLFLOW_HTTP_REQUEST_* variables)
    http_timeout_s: int = 5
    http_max_retries: int = 2


@dataclass
class PathsConfig:
    prepared_dir: str = "data/prepared"
    experiments_dir: str = "experiments"
    reports_dir: str = "reports"
    reference_dir: str = "experiments/reference"  # reference optima, <objective id>.json (python -m pipeline.reference)
    analytic_dir: str = "experiments/analytic"  # the analytic lecture studies (python -m pipeline.analytic)


@dataclass
class PrepareConfig:
    data: DataConfig = MISSING
    preprocess: PreprocessConfig = MISSING
    model: ModelConfig = MISSING  # only model.l2 is read: ridge whitening (preprocess.ridge: ${model.l2})
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class TrainConfig:
    data: DataConfig = MISSING
    preprocess: PreprocessConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    study: str = "default"
    seed: int = 0
    progress: bool | None = None  # null: a bar on a terminal, quiet otherwise
    fail_on_diverged: bool = True  # a diverged run is saved, then exits non-zero (false: exit 0)
    score_test: bool = True  # false: test_accuracy/test_loss stay null (tuning trials never see the test set)
    sweep_metric: str | None = None  # a metrics.json key the job returns to a sweeper (Optuna), e.g. val_accuracy
    # a study's budget per optimizer (its id): optimizer.<key> values the preset gives that optimizer,
    # e.g. {gd: {max_iter: 300}, newton_cg: {max_iter: 50}}; applied by ``apply_budget``
    budgets: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class EvaluateConfig(TrainConfig):
    """Evaluate a trained run: the same keys as ``train`` (so every preset applies) name the run."""

    run_dir: str | None = None  # evaluate this run directory instead of the one the groups name


@dataclass
class ReferenceOptions:
    """The reference solve: damped Newton to ‖∇f‖ ≤ tol, stopped by tol and max_iter only (no clock)."""

    tol: float = 1.0e-9  # ‖∇f(w*)‖; f − f* ≤ ‖∇f‖²/(2μ)
    max_iter: int = 100  # Newton steps
    dense_max: int = 2500  # dense Newton (and μ, L, κ at w*) up to this many parameters, else Newton-CG
    cg_max_iter: int = 500  # Newton-CG's inner iterations per step
    preconditioner: str = "auto"  # Newton-CG's (pipeline.optimizers.minimize)
    kappa_in: list[str] = field(default_factory=list)  # other preprocess ids of the same data and
    #   objective whose coordinates get μ, L, κ at w* too (dense problems only)


@dataclass
class ReferenceConfig(TrainConfig):
    """The reference optimum of a run's objective: the same keys as ``train`` name the run's objective."""

    reference: ReferenceOptions = field(default_factory=ReferenceOptions)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="prepare_schema", node=PrepareConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="reference_schema", node=ReferenceConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="preprocess", name="preprocess_schema", node=PreprocessConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)


def as_kwargs(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (for passing to the pure numerical functions)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def apply_budget(cfg: Any, overrides: Sequence[str] = ()) -> None:
    """Set ``optimizer.<key>`` from ``budgets.<optimizer.id>.<key>`` (the study's budget for this
    optimizer), except the keys the command line sets (``optimizer.max_iter=7`` wins); in place."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ValidationError

    from pipeline.errors import ConfigError

    budgets = cfg.get("budgets") or {}
    opt_id = str(cfg.optimizer.get("id") or cfg.optimizer.name)
    allowed = set(_fields(OptimizerConfig)) - {"name", "id"}
    for oid, budget in budgets.items():
        if not isinstance(budget, DictConfig | dict):
            raise ConfigError(f"budgets.{oid}={budget!r} must map optimizer keys to values, "
                              "e.g. budgets.gd.max_iter=300")
        for key in budget:
            if key not in allowed:
                raise ConfigError(f"budgets.{oid}.{key}: unknown optimizer key; use one of "
                                  f"{', '.join(sorted(allowed))}")
    given = {str(o).partition("=")[0].lstrip("+~") for o in overrides}
    for key, value in (budgets.get(opt_id) or {}).items():
        if f"optimizer.{key}" not in given:
            try:
                OmegaConf.update(cfg, f"optimizer.{key}", value, merge=False)
            except ValidationError as err:
                why = str(err).splitlines()[0]
                raise ConfigError(f"budgets.{opt_id}.{key}={value!r} does not fit optimizer.{key} ({why}); "
                                  "fix it in the preset or on the command line") from None


MODELS = ("linear", "logistic", "logistic_mse", "softmax")
OPTIMIZERS = ("gd", "newton", "newton_cg", "closed_form", "sgd")
INITS = ("zeros", "random", "saturated")
DTYPES = ("float64", "float32")


def validate_train_config(cfg: Any) -> None:
    """Range and consistency checks Hydra's type checks cannot do; raises a one-line ConfigError."""
    from pipeline.errors import ConfigError

    check_boundary(cfg)

    def bad(key: str, value: Any, want: str) -> ConfigError:
        return ConfigError(f"{key}={value!r} is invalid: {want}; fix it in conf/ or on the command line")

    m, o = cfg.model, cfg.optimizer
    if m.name not in MODELS:
        raise bad("model.name", m.name, f"choose one of {', '.join(MODELS)}")
    if not m.l2 >= 0.0:
        raise bad("model.l2", m.l2, "the L2 penalty must be >= 0")
    if m.dtype not in DTYPES:
        raise bad("model.dtype", m.dtype, f"choose one of {', '.join(DTYPES)}")
    if o.name not in OPTIMIZERS:
        raise bad("optimizer.name", o.name, f"choose one of {', '.join(OPTIMIZERS)}")
    if isinstance(o.lr, str):
        if o.lr != "auto":
            raise bad("optimizer.lr", o.lr, "use a positive number or 'auto' (= 1/L)")
    elif not (o.lr > 0.0 and o.lr < float("inf")):
        raise bad("optimizer.lr", o.lr, "the step size must be a positive finite number or 'auto' (= 1/L)")
    if o.max_iter < 0:
        raise bad("optimizer.max_iter", o.max_iter, "must be >= 0")
    if not o.tol >= 0.0:
        raise bad("optimizer.tol", o.tol, "must be >= 0")
    if o.time_budget_s is not None and not o.time_budget_s > 0.0:
        raise bad("optimizer.time_budget_s", o.time_budget_s, "must be > 0 or null")
    if not 0.0 < o.armijo_c < 1.0:
        raise bad("optimizer.armijo_c", o.armijo_c, "must lie in (0, 1)")
    if not 0.0 < o.backtrack < 1.0:
        raise bad("optimizer.backtrack", o.backtrack, "must lie in (0, 1)")
    if o.cg_max_iter < 1:
        raise bad("optimizer.cg_max_iter", o.cg_max_iter, "must be >= 1")
    if o.init not in INITS:
        raise bad("optimizer.init", o.init, f"choose one of {', '.join(INITS)}")
    if not o.init_scale > 0.0:
        raise bad("optimizer.init_scale", o.init_scale, "must be > 0")
    if o.name == "sgd":  # the SGD-only keys are checked by pipeline.optimizers.check_sgd_options (train)
        if o.line_search:
            raise bad("optimizer.line_search", o.line_search, "SGD takes no line search; set it to false")
    if o.name == "closed_form" and m.name != "linear":
        raise ConfigError(
            f"optimizer=closed_form solves only least squares (model=linear), not model={m.name}; "
            "use optimizer=newton or optimizer=newton_cg"
        )
    eps = cfg.preprocess.get("eps", 0.0)
    if eps is not None and not eps >= 0.0:
        raise bad("preprocess.eps", eps, "the eigenvalue floor must be >= 0")
    if cfg.seed < 0:
        raise bad("seed", cfg.seed, "must be >= 0")


# ---------------------------------------------------------------- the config boundary
# Each app checks its composed config here first, once: unknown keys (``+optimizer.lrr=0.1`` is
# accepted by Hydra's ``+`` but not by the schema), mandatory values left ``???``, and every value
# that becomes part of a file or folder name. Nothing is written before these pass.

SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+=,-]{0,99}"  # a file/folder name: no '/', no leading '.'
NAME_KEYS = ("study", "data.id", "preprocess.id", "model.id", "optimizer.id")  # become path parts


def _fields(tp: Any) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []


def schema_keys(cfg: Any, path: str = "") -> list[str]:
    """The keys the structured schema allows at ``path`` of ``cfg`` ([] where it is free-form)."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.select(cfg, path) if path else cfg
    return _fields(OmegaConf.get_type(node)) if isinstance(node, DictConfig) else []


def check_known_keys(cfg: Any, prefix: str = "") -> None:
    """Reject keys the node's structured schema does not define (``+foo=1``, ``+optimizer.lrr=0.1``)."""
    import difflib

    from omegaconf import DictConfig, OmegaConf

    from pipeline.errors import ConfigError

    if not isinstance(cfg, DictConfig) or cfg._is_missing() or cfg._is_none():
        return
    known = _fields(OmegaConf.get_type(cfg))
    if not known:  # a free-form node (dict, Any): no schema to check against
        return
    for key in cfg.keys():
        full = f"{prefix}{key}"
        if key not in known and not (not prefix and key == "hydra"):
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {prefix}{close[0]}? " if close else ""
            raise ConfigError(
                f"{full}: unknown config key ({hint}fix the spelling or drop it; "
                f"{prefix.rstrip('.') or 'the config'} has {', '.join(known)})")
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_known_keys(node, f"{full}.")


def check_complete(cfg: Any) -> None:
    """Every mandatory value is set (``data.id=???`` is an error naming the key)."""
    from omegaconf import OmegaConf

    from pipeline.errors import ConfigError

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} has no value (???); set it on the command line ({key}=<value>) or in conf/")


def check_name(key: str, value: Any) -> str:
    """A config value that becomes a file or folder name: a safe name (not '.'/'..', no '/')."""
    import re

    from pipeline.errors import ConfigError

    text = str(value)
    if value is None or not re.fullmatch(SAFE_NAME, text):
        raise ConfigError(
            f"{key}={value!r} cannot name a file or folder: use 1-100 letters, digits, '_', '-', '+', "
            "'=', ',' or '.', starting with a letter or digit (e.g. mnist-3v8)")
    return text


def check_inside(path: Any, root: Any, key: str) -> None:
    """``path`` (absolute, '..' collapsed) lies strictly inside ``root``; else a ConfigError naming ``key``."""
    import os

    from pipeline.errors import ConfigError

    p, r = os.path.abspath(path), os.path.abspath(root)
    if p == r or os.path.commonpath([p, r]) != r:
        raise ConfigError(f"{key} puts {p} outside {r}; use a plain name")


def check_boundary(cfg: Any) -> None:
    """What every app checks first: known keys, nothing left ???, safe names for path parts."""
    from omegaconf import OmegaConf

    check_known_keys(cfg)
    check_complete(cfg)
    for key in NAME_KEYS:
        group = key.partition(".")[0]
        if key == "study" and "study" not in cfg or group != key and group not in cfg:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and key.endswith(".id"):  # the id defaults to the name
            key, value = f"{group}.name", OmegaConf.select(cfg, f"{group}.name", default=None)
        check_name(key, value)


def _register_resolvers() -> None:
    """``${curvlab.unique:}``: a token unique to this invocation (sweep folders never collide)."""
    import os
    import time

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("curvlab.unique"):
        OmegaConf.register_new_resolver(
            "curvlab.unique", lambda: f"{time.time_ns() % 10**9:09d}-{os.getpid()}", use_cache=True)


_register_resolvers()
