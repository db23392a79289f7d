"""Structured-config schemas for the Hydra apps (types here; ranges checked by ``validate_*``).

One dataclass per config group a user sweeps: ``data``, ``preprocess``, ``model``, ``optimizer``.
The YAML files in ``conf/`` fill these in; ``register_configs()`` puts the schemas in Hydra's
ConfigStore so that a misspelt key or a wrongly typed value is rejected before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    """Which data set to load, and from where."""

    name: str = MISSING  # mnist | mnist_binary | synthetic_regression
    id: str = MISSING  # short name used in file and run names, e.g. "mnist", "mnist-3v8"
    root: str | None = None  # dir with the IDX files; else $CURVLAB_DATA_DIR, data/raw/mnist, download
    scale: float = 1.0 / 255.0  # pixel values are multiplied by this (MNIST -> [0, 1])
    digits: list[int] = field(default_factory=list)  # mnist_binary: [negative, positive]
    n_train: int | None = None  # subsample the training split (first n after a seeded shuffle)
    n_test: int | None = None
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
    eps: float = 0.0  # whiten: added to every eigenvalue before Λ^-1/2
    rel_threshold: float | None = None  # whiten: drop directions with λ_i < rel_threshold · λ_max
    n_components: int | None = None  # whiten: keep the top-k directions (PCA-whitening)
    explained_variance: float | None = None  # whiten: keep the fewest directions explaining this share
    zca: bool = False  # whiten: rotate back with Φ (ZCA) instead of staying in eigen-coordinates
    augment: bool = True  # whiten: include the constant bias feature before the eigendecomposition


@dataclass
class ModelConfig:
    """The convex model and its objective."""

    name: str = MISSING  # linear | logistic | logistic_mse | softmax
    l2: float = 1.0e-4  # λ in λ/2 ‖w‖² (bias not penalized)
    fit_intercept: bool = True
    dtype: str = "float64"  # float64 | float32


@dataclass
class OptimizerConfig:
    """The optimizer and its stopping rule."""

    name: str = MISSING  # gd | newton | newton_cg | closed_form
    lr: Union[float, str] = "auto"  # noqa: UP007  (OmegaConf needs typing.Union); "auto" = 1/L
    max_iter: int = 100
    tol: float = 1.0e-6  # stop when ‖∇f‖ ≤ tol
    time_budget_s: float | None = None
    line_search: bool = False  # Armijo backtracking
    armijo_c: float = 1.0e-4
    backtrack: float = 0.5
    cg_max_iter: int = 250  # newton_cg: inner conjugate-gradient iterations per Newton step
    init: str = "zeros"  # zeros | random | saturated (the lecture's bad initialization)
    init_scale: float = 1.0


@dataclass
class MlflowConfig:
    """Where runs are tracked; null = the embedded SQLite store in the project root."""

    tracking_uri: str | None = None  # else $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db
    artifact_root: str | None = None  # else <project>/mlartifacts
    enabled: bool = True


@dataclass
class PathsConfig:
    prepared_dir: str = "data/prepared"
    experiments_dir: str = "experiments"
    reports_dir: str = "reports"


@dataclass
class PrepareConfig:
    data: DataConfig = MISSING
    preprocess: PreprocessConfig = MISSING
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
    paths: PathsConfig = field(default_factory=PathsConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="prepare_schema", node=PrepareConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="preprocess", name="preprocess_schema", node=PreprocessConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)


def as_kwargs(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (for passing to the pure numerical functions)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
