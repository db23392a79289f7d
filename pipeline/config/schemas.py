"""Structured-config schemas of every stage (types here; ranges checked in ``config.checks``).

One dataclass per config group a user sweeps (``data``, ``preprocess``, ``model``, ``optimizer``),
one per stage (its fields type the groups; ``AppBase`` holds what every stage has). The YAML files
in ``conf/`` fill these in; ``register_configs()`` puts the stage schemas in Hydra's ConfigStore so
that a misspelt key or a wrongly typed value is rejected before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from pipeline.core.memory import MEMORY_GB
from pipeline.core.transforms import PENALTY_SPACE


@dataclass
class IdxFileConfig:
    """One IDX file of a data set: its name (without ``.gz``) and the SHA-256 of its decompressed
    payload."""

    name: str = MISSING
    sha256: str = MISSING


@dataclass
class DataConfig:
    """Which data set to load, and from where. An IDX data set is declared entirely here
    (conf/data/<name>.yaml)."""

    # the conf/data/ file name: mnist, mnist_binary, fashion_mnist, synthetic_regression, ...
    name: str = MISSING
    id: str = MISSING  # short name used in file and run names, e.g. "mnist", "mnist-3v8"
    format: str = "idx"  # idx (four IDX files) | synthetic_regression
    # idx: the data set's name in messages and the report, e.g. "Fashion-MNIST"
    title: str | None = None
    # idx: its sub-folder under a parent data folder and data/raw/; null = name
    folder: str | None = None
    # dir with the IDX files (or a parent holding <folder>/); else $CURVLAB_DATA_DIR, ...
    root: str | None = None
    # idx: train_images, train_labels, test_images, test_labels -> {name, sha256}
    files: dict[str, IdxFileConfig] = field(default_factory=dict)
    # idx: download URLs (folder URLs, file name appended)
    mirrors: list[str] = field(default_factory=list)
    # idx: the name of each label value 0, 1, ...
    class_names: list[str] = field(default_factory=list)
    # idx: class k = label value classes[k] (or a list of
    classes: list[Any] = field(default_factory=list)
    #   values); [] = every label value is its own class. [3, 8]: the binary 3-vs-8 problem
    # published test accuracy per model: {softmax: {source, value}}
    reference_accuracy: dict[str, Any] | None = None
    scale: float = 1.0 / 255.0  # pixel values are multiplied by this (MNIST -> [0, 1])
    n_train: int | None = None  # subsample the training split (first n after a seeded shuffle)
    n_test: int | None = None
    # hold out this share of the training rows (seeded, stratified) for validation
    val_fraction: float = 0.0
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
    # whiten: keep the fewest directions explaining this share
    explained_variance: float | None = None
    zca: bool = False  # whiten: rotate back with Φ (ZCA) instead of staying in eigen-coordinates
    augment: bool = True  # whiten: include the constant bias feature before the eigendecomposition
    # whiten: whiten (1/n) X̃ᵀX̃ + ridge·I on the weights (ridge whitening: ${model.l2})
    ridge: float = 0.0
    # input: λ/2 ‖W_x‖² on input-space weights (same objective); transformed: on W_z
    penalty_space: str = PENALTY_SPACE


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

    name: str = MISSING  # a key of pipeline.core.solvers.METHODS (gd, nesterov, adam, newton, ...)
    id: str | None = None  # short name in run names (the conf/optimizer/ file name); null = name
    # a float > 0 or "auto" (= 1/L); Any: OmegaConf 2.3 cannot merge a Union node here
    lr: Any = "auto"
    max_iter: int = 100
    tol: float = 1.0e-6  # stop when ‖∇f‖ ≤ tol
    time_budget_s: float | None = None
    line_search: bool = False  # Armijo backtracking
    armijo_c: float = 1.0e-4
    backtrack: float = 0.5
    cg_max_iter: int = 250  # newton_cg: inner conjugate-gradient iterations per Newton step
    preconditioner: str = "auto"  # newton_cg: auto | block | jacobi | none (pipeline.core.solvers)
    hvp_precision: str = "auto"  # newton_cg: Hessian-vector products in auto | float32 | float64
    init: str = "zeros"  # zeros | random | saturated (the lecture's bad initialization)
    init_scale: float = 1.0
    # sgd only (the other optimizers ignore these): lr "auto" = 1/L_B, the minibatch smoothness
    batch_size: int | None = 100
    epochs: int = 5
    schedule: str = "constant"  # constant | inverse_time (lr/(1 + epoch/tau)) | step
    tau: float = 1.0  # inverse_time: epochs until the step size has halved
    step_epochs: int = 1  # step: multiply the step size by step_factor every step_epochs epochs
    step_factor: float = 0.5
    # sgd: v <- momentum v - lr g, w <- w + v; heavy_ball: a number in [0, 1) or "auto"
    momentum: Any = 0.0
    log_every: int | None = None  # history row every k minibatches; null = once per epoch
    # adam, adagrad (batch_size null = full batch, the sgd keys above otherwise)
    beta1: float = 0.9  # adam: decay of the first-moment average
    beta2: float = 0.999  # adam: decay of the second-moment average
    delta: float = 1.0e-8  # adam, adagrad: added to √v in the denominator
    restart: str = "none"  # nesterov: none | function | gradient (O'Donoghue & Candès)
    # lbfgs only (the other optimizers ignore these); its line search always runs, c1 = armijo_c
    memory: int = 10  # curvature pairs (s, y) kept for the two-loop recursion
    wolfe_c2: float = 0.9  # strong Wolfe: |φ'(t)| ≤ c2 |φ'(0)|; armijo_c < wolfe_c2 < 1
    wolfe_max_evals: int = 20  # f and ∇f evaluations per line search at most


@dataclass
class MlflowConfig:
    """Where runs are tracked; null = the embedded SQLite store in the project root."""

    tracking_uri: str | None = None  # else $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db
    artifact_root: str | None = None  # else <project>/mlartifacts
    enabled: bool = True
    # an http(s) tracking server that does not answer fails within about (1 + http_max_retries) ×
    # http_timeout_s + the back-off (MLflow's MLFLOW_HTTP_REQUEST_* variables)
    http_timeout_s: int = 5
    http_max_retries: int = 2


@dataclass
class PathsConfig:
    prepared_dir: str = "data/prepared"
    experiments_dir: str = "experiments"
    reports_dir: str = "reports"
    # reference optima, <objective id>.json (python -m pipeline.reference)
    reference_dir: str = "experiments/reference"
    # the analytic lecture studies (python -m pipeline.analytic)
    analytic_dir: str = "experiments/analytic"


@dataclass
class LimitsConfig:
    """Resource limits checked before work starts (pipeline.core.memory)."""

    memory_gb: float = MEMORY_GB  # GiB: allocation estimates and data files read are bounded by it


@dataclass
class AppBase:
    """The keys every stage's config has: the seed, the project's folders, MLflow tracking."""

    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class TrainConfig(AppBase):
    data: DataConfig = MISSING
    preprocess: PreprocessConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    study: str = "default"
    progress: bool | None = None  # null: a bar on a terminal, quiet otherwise
    fail_on_diverged: bool = True  # a diverged run is saved, then exits non-zero (false: exit 0)
    # false: test_accuracy/test_loss stay null (tuning trials never see the test set)
    score_test: bool = True
    # a metrics.json key the job returns to a sweeper (Optuna), e.g. val_accuracy
    sweep_metric: str | None = None
    backend: str = "numpy"  # the array library the fit computes with: numpy | torch | cupy
    device: str = "cpu"  # where it computes: cpu | cuda | cuda:N (numpy: cpu only)


@dataclass
class PrepareConfig(TrainConfig):
    """Prepare a data set: ``data`` and ``preprocess`` are read, of the model only ``model.l2``
    (ridge whitening, ``preprocess.ridge: ${model.l2}``); the other train keys let a train preset
    (``experiment=<preset>``) name the data it trains on (the optimizer is not read: GD unless a
    preset sets one)."""

    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="gd"))
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    compress: bool = True  # deflate the stored inputs; false: stored raw and memory-mapped


@dataclass
class EvaluateConfig(TrainConfig):
    """Evaluate a trained run: the same keys as ``train`` (so every preset applies) name the run."""

    run_dir: str | None = None  # evaluate this run directory instead of the one the groups name


@dataclass
class ReferenceOptions:
    """The reference solve: damped Newton to ‖∇f‖ ≤ tol, stopped by tol and max_iter only (no
    clock)."""

    tol: float = 1.0e-9  # ‖∇f(w*)‖; f − f* ≤ ‖∇f‖²/(2μ)
    max_iter: int = 100  # Newton steps
    # dense Newton (and μ, L, κ at w*) up to this many parameters, else Newton-CG
    dense_max: int = 2500
    cg_max_iter: int = 500  # Newton-CG's inner iterations per step
    preconditioner: str = "auto"  # Newton-CG's (pipeline.core.solvers.minimize)
    kappa_in: list[str] = field(default_factory=list)  # other preprocess ids of the same data and
    #   objective whose coordinates get μ, L, κ at w* too (dense problems only)
    # a run's weights.npz of this objective in the solve's coordinates: Newton starts there
    init: str | None = None


@dataclass
class ReferenceConfig(TrainConfig):
    """The reference optimum of a run's objective: the same keys as ``train`` name the run's
    objective."""

    reference: ReferenceOptions = field(default_factory=ReferenceOptions)


@dataclass
class AnalyticOptions:
    """The lecture's analytic studies (conf/analytic.yaml); each is free-form, read by its study."""

    gd_paths: Any = MISSING  # claim 1
    kappa_sweep: Any = MISSING  # claim 2
    convexity: Any = MISSING  # claim 3
    adam_scaling: Any = None  # claim 7
    studies: list[str] = field(default_factory=lambda: ["gd_paths", "kappa_sweep", "convexity",
                                                        "adam_scaling"])


@dataclass
class AnalyticConfig(AppBase):
    analytic: AnalyticOptions = field(default_factory=AnalyticOptions)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


# the report page's optional parts
REPORT_SECTIONS = ("claim1", "claim2", "conditioning", "claim3", "claim7", "trained")


@dataclass
class TrainedStudies:
    bad_init: str = "claim4_bad_init"
    newton_vs_gd: list[str] = field(default_factory=lambda: ["claim5_newton_vs_gd", "default"])
    adam: list[str] = field(default_factory=lambda: ["claim7_adam", "claim7_adam_quadratic"])


@dataclass
class ReportOptions:
    source: str = "dirs"  # dirs | mlflow
    experiment: str | None = None  # source=mlflow: the MLflow experiment (= study) to report
    studies: list[str] | None = None  # source=dirs: only these experiments/<study>/ (null = all)
    title: str = "curvlab report"
    sections: list[str] = field(default_factory=lambda: list(REPORT_SECTIONS))
    tolerances: list[float] = field(default_factory=lambda: [1.0e-4, 1.0e-8])
    headline_study: str = "default"  # the first table's study (optimizer × preprocessing)
    trained_studies: TrainedStudies = field(default_factory=TrainedStudies)
    conditioning: Any = MISSING  # {data: <data.id>, prepared: [<preprocess ids to compare>]}
    analytic: Any = MISSING  # {claim1|claim2|claim3|claim7: <study folder under analytic_dir>}
    accuracy_data: list[str] = field(default_factory=list)  # data ids with a claim-6-style section


@dataclass
class ReportConfig(AppBase):
    report: ReportOptions = field(default_factory=ReportOptions)


# conf/<stage>.yaml names its schema first in its defaults list; the group configs (conf/data/,
# conf/optimizer/, ...) are typed by the schema's field, so no schema shows as a group option
STAGE_SCHEMAS: dict[str, type] = {
    "prepare": PrepareConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
    "reference": ReferenceConfig, "analytic": AnalyticConfig, "report": ReportConfig}


def register_configs() -> None:
    """Register each stage's schema with Hydra's ConfigStore as ``<stage>_schema`` (idempotent)."""
    cs = ConfigStore.instance()
    for stage, schema in STAGE_SCHEMAS.items():
        cs.store(name=f"{stage}_schema", node=schema)


def as_kwargs(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (for passing to the pure numerical functions)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _register_resolvers() -> None:
    """``${curvlab.unique:}``: a token unique to this invocation (sweep folders never collide)."""
    import os
    import time

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("curvlab.unique"):
        OmegaConf.register_new_resolver(
            "curvlab.unique", lambda: f"{time.time_ns() % 10**9:09d}-{os.getpid()}", use_cache=True)


_register_resolvers()
