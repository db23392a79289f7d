"""A run as one value: ``RunSpec``, built once from the composed config (preset budgets included).

Every stage builds it at its boundary (``RunSpec.from_config``) and passes it down: the group ids
(the "id, else name" rule), the run name, the prepared-file stem, the effective ``fit_intercept``,
typed solver options, the paths. The objective a run minimizes (``run_objective``) and its id
(``objective_id``) are built from the spec and the prepared data's transform.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from pipeline.config.ids import group_id, prepared_stem
from pipeline.config.paths import project_path
from pipeline.config.schemas import ModelConfig, OptimizerConfig, PathsConfig, TrainConfig
from pipeline.core.backend import Backend
from pipeline.core.objectives import LinearModelObjective, make_objective
from pipeline.core.transforms import PENALTY_SPACE, absorbs_bias

__all__ = [
    "ModelSpec",
    "RunSpec",
    "SolverOptions",
    "group_id",
    "backend_suffix",
    "name_suffix",
    "objective_id",
    "prepared_stem",
    "run_name",
    "run_objective",
]
GROUPS = ("data", "preprocess", "model", "optimizer")
# Overrides that change where or how a run is recorded, not what it computes: no name suffix.
_NOT_IN_NAME = (
    "study",
    "progress",
    "fail_on_diverged",
    "backend",  # named by backend_suffix, not as ,key=value
    "device",
    "run_dir",
    "paths.",
    "mlflow.",
    "hydra.",
    "data.root",
    "experiment",
)
_SAFE = re.compile(r"[^A-Za-z0-9_.+=-]")


def name_suffix(overrides: Sequence[str]) -> str:
    """``,key=value`` for each non-group override that changes the result, sorted by key."""
    parts: dict[str, str] = {}
    for ov in overrides:
        key, sep, value = str(ov).partition("=")
        key = key.lstrip("+~")
        if not sep or "/" in key or key in GROUPS or key.startswith(_NOT_IN_NAME):
            continue
        parts[key] = _SAFE.sub("_", value.strip().strip("'\""))
    return "".join(f",{k}={parts[k]}" for k in sorted(parts))


def _get(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` for a dict or DictConfig, ``default`` when absent."""
    try:
        return node.get(key, default)
    except AttributeError:
        return getattr(node, key, default)


def _schema_default(schema: type, key: str) -> Any:
    """The default a structured-config dataclass declares for ``key`` (the one home of defaults)."""
    f = next(f for f in dataclasses.fields(schema) if f.name == key)
    if f.default is dataclasses.MISSING:
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _value(node: Any, key: str, schema: type) -> Any:
    """``node.key``, else the schema's default (a run config written before the key existed)."""
    value = _get(node, key, dataclasses.MISSING)
    return _schema_default(schema, key) if value is dataclasses.MISSING else value


def fits_intercept(fit_intercept: bool, bias_absorbed: bool) -> bool:
    """The model fits a separate intercept b: model.fit_intercept and not a bias absorbed into z."""
    return bool(fit_intercept) and not bool(bias_absorbed)


@dataclass(frozen=True)
class SolverOptions:
    """Every ``optimizer.*`` key of the schema, typed; ``method`` is ``optimizer.name``."""

    method: str
    lr: float | str  # a step size or "auto" (= 1/L)
    max_iter: int
    tol: float
    time_budget_s: float | None
    line_search: bool
    armijo_c: float
    backtrack: float
    cg_max_iter: int
    preconditioner: str
    hvp_precision: str
    init: str
    init_scale: float
    batch_size: int | None
    epochs: int
    schedule: str
    tau: float
    step_epochs: int
    step_factor: float
    momentum: float | str
    log_every: int | None
    beta1: float
    beta2: float
    delta: float
    restart: str
    memory: int
    wolfe_c2: float
    wolfe_max_evals: int

    LOOP_KEYS = (
        "lr",
        "max_iter",
        "tol",
        "time_budget_s",
        "line_search",
        "armijo_c",
        "backtrack",
        "cg_max_iter",
        "preconditioner",
        "hvp_precision",
    )  # minimize's keyword options

    @classmethod
    def from_node(cls, node: Any) -> SolverOptions:
        """The options of an ``optimizer`` config node (keys it lacks: the schema's defaults)."""
        values = {
            f.name: _value(node, f.name, OptimizerConfig)
            for f in dataclasses.fields(cls)
            if f.name != "method"
        }
        lr = values["lr"]
        values["lr"] = lr if isinstance(lr, str) else float(lr)
        return cls(method=str(_get(node, "name")), **values)

    def minimize_kwargs(self, seed: int) -> dict[str, Any]:
        """The keyword options of ``pipeline.core.solvers.minimize`` (sgd: minibatches from
        ``seed``)."""
        kwargs = {k: getattr(self, k) for k in self.LOOP_KEYS}
        return kwargs | self.method_options(seed)

    def method_options(self, seed: int) -> dict[str, Any]:
        """The options only this method takes (``METHOD_DEFAULTS``; ``seed``: the run's)."""
        from pipeline.core.solvers import METHOD_DEFAULTS

        own = METHOD_DEFAULTS.get(self.method, {})
        return {k: (int(seed) if k == "seed" else getattr(self, k)) for k in own}

    def progress_steps(self) -> int:
        """Progress-bar length: epochs for minibatch methods logged per epoch, else ``max_iter``."""
        epochs = self.method == "sgd" or (self.method in ("adam", "adagrad")
                                          and self.batch_size is not None)
        if epochs and self.log_every is None:
            return int(self.epochs)
        return int(self.max_iter)


@dataclass(frozen=True)
class ModelSpec:
    """The model: ``name`` (linear | logistic | logistic_mse | softmax), λ, dtype, configured
    intercept."""

    name: str
    id: str
    l2: float
    fit_intercept: (
        bool  # as configured; a bias absorbed into z turns it off (``RunSpec.fit_intercept``)
    )
    dtype: str

    @classmethod
    def from_node(cls, node: Any) -> ModelSpec:
        """The model of a ``model`` config node (keys it lacks: the schema's defaults)."""
        return cls(
            name=str(_get(node, "name")),
            id=group_id(node),
            l2=float(_value(node, "l2", ModelConfig)),
            fit_intercept=bool(_value(node, "fit_intercept", ModelConfig)),
            dtype=str(_value(node, "dtype", ModelConfig)),
        )


@dataclass(frozen=True)
class RunSpec:
    """One run, fixed: ids, names, paths, model and solver options, the resolved config."""

    study: str
    seed: int
    data_id: str
    data_name: str
    preprocess_id: str
    optimizer_id: str
    model: ModelSpec
    solver: SolverOptions
    fit_intercept: bool  # effective: model.fit_intercept and no bias absorbed by the preprocessing
    run_name: str
    prepared_stem: str
    prepared_dir: Path
    experiments_dir: Path
    reference_dir: Path
    overrides: tuple[str, ...]
    progress: bool | None  # null: a bar on a terminal only
    fail_on_diverged: bool
    score_test: bool
    backend: str  # the array library the fit computes with: numpy | torch | cupy
    device: str  # where: cpu | cuda | cuda:N
    mlflow: Mapping[str, Any]
    config: Mapping[
        str, Any
    ]  # the resolved config (read-only): config.yaml, MLflow params, facts check
    config_yaml: str

    @property
    def model_id(self) -> str:
        """``model.id``, else ``model.name``."""
        return self.model.id

    @classmethod
    def from_config(cls, cfg: Any, overrides: Sequence[str] = ()) -> RunSpec:
        """The spec of a composed run config (preset budgets included) and its command-line
        overrides."""
        from omegaconf import DictConfig, OmegaConf

        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
        resolved = OmegaConf.to_container(cfg, resolve=True)
        paths = resolved.get("paths") or {}  # type: ignore[union-attr]

        def path(key: str) -> Path:
            return project_path(paths.get(key) or _schema_default(PathsConfig, key))

        data, pre, opt = (
            cfg.get("data") or {},
            cfg.get("preprocess") or {},
            cfg.get("optimizer") or {},
        )
        ids = (str(data.get("id")), group_id(pre), group_id(opt))
        model = ModelSpec.from_node(cfg.get("model") or {})
        return cls(
            study=str(_value(cfg, "study", TrainConfig)),
            seed=int(_value(cfg, "seed", TrainConfig)),
            data_id=ids[0],
            data_name=str(data.get("name")),
            preprocess_id=ids[1],
            optimizer_id=ids[2],
            model=model,
            solver=SolverOptions.from_node(opt),
            fit_intercept=fits_intercept(model.fit_intercept, absorbs_bias(pre)),
            run_name=run_name(cfg, overrides),
            prepared_stem=prepared_stem(ids[0], ids[1]),
            prepared_dir=path("prepared_dir"),
            experiments_dir=path("experiments_dir"),
            reference_dir=path("reference_dir"),
            overrides=tuple(str(o) for o in overrides),
            progress=_value(cfg, "progress", TrainConfig),
            fail_on_diverged=bool(_value(cfg, "fail_on_diverged", TrainConfig)),
            score_test=bool(_value(cfg, "score_test", TrainConfig)),
            backend=str(_value(cfg, "backend", TrainConfig)),
            device=str(_value(cfg, "device", TrainConfig)),
            mlflow=MappingProxyType(dict(resolved.get("mlflow") or {})),  # type: ignore[union-attr]
            config=MappingProxyType(resolved),  # type: ignore[arg-type]
            config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        )

    def group_config(self, group: str) -> dict[str, Any]:
        """One group of the resolved config as a plain dict."""
        return dict(self.config.get(group) or {})


def run_name(cfg: Any, overrides: Sequence[str] = ()) -> str:
    """``<data.id>-<preprocess.id>-<model.id>-<optimizer.id>`` + the backend suffix + the override
    suffix."""
    groups = [cfg.get(g) or {} for g in GROUPS]
    parts = (groups[0].get("id"), *(group_id(g) for g in groups[1:]))
    backend = (_value(cfg, "backend", TrainConfig), _value(cfg, "device", TrainConfig))
    return "-".join(str(p) for p in parts) + backend_suffix(*backend) + name_suffix(overrides)


def backend_suffix(backend: str, device: str) -> str:
    """``""`` for numpy on the CPU (the default run keeps its name), else ``-<backend>-<device>``
    (``cuda:1`` as ``cuda1``), so a run on another library or device never replaces it."""
    if (str(backend), str(device)) == ("numpy", "cpu"):
        return ""
    return f"-{backend}-" + _SAFE.sub("_", str(device).replace(":", ""))


def penalty_of(transform: Any) -> np.ndarray | None:
    """P of the penalty λ/2 tr(Wᵀ P W) on the prepared coordinates (None = I): A Aᵀ when the
    penalty acts on the input-space weights (``preprocess.penalty_space=input``), so every
    preprocessing keeps the raw data's objective."""
    get = getattr(transform, "penalty_matrix", None)
    return None if get is None else get()


def objective_id(spec: RunSpec, transform: Any) -> str:
    """The function a run minimizes: ``<data.id>[-<preprocess.id>]-<model.name>-l2=<λ>[-nobias]``.

    Runs and reference optima with one id minimize one function of the raw inputs: with the penalty
    on the input-space weights (``preprocess.penalty_space=input``, or no transform at all) every
    preprocessing of a data set is the same objective in other coordinates, so the preprocessing is
    not part of the id; with ``penalty_space=transformed`` it is, and so it is for a model without a
    bias on coordinates with an offset (z-scoring's −μ/σ acts as a bias tied to W). A bias absorbed
    into z is a bias.
    """
    m = spec.model
    has_bias = m.fit_intercept or bool(getattr(transform, "absorbs_bias", False))
    own_penalty = (
        getattr(transform, "penalty_space", PENALTY_SPACE) == "transformed"
        and getattr(transform, "kind", "none") != "none"
    )
    # without a bias, an offset c ≠ 0 (z = A x + c, e.g. z-scoring) is a bias cᵀW tied to W
    offset = getattr(transform, "offset", None)
    tied_bias = not has_bias and offset is not None and bool(np.any(np.asarray(offset) != 0))
    parts = [spec.data_id]
    if own_penalty or tied_bias:
        parts.append(spec.preprocess_id)
    parts += [m.name, f"l2={m.l2:g}"]
    return "-".join(parts) + ("" if has_bias else "-nobias")


def run_objective(model: ModelSpec, dataset: Any, transform: Any,
                  backend: Backend | None = None, copy_X: bool = True) -> LinearModelObjective:
    """f(w) = (1/n) Σ ℓ(y_i, z_iᵀW + b) + λ/2 tr(Wᵀ P W) on the prepared training split
    (P = penalty_of(transform); b only where ``fits_intercept``), computed with the library of
    the split's arrays (P moved to ``backend``'s device when given); ``copy_X=False``: the split's
    X_train becomes the objective's matrix in place (the caller must not read it after)."""
    penalty = penalty_of(transform)
    if penalty is not None and backend is not None:
        penalty = backend.asarray(penalty)
    return make_objective(
        model.name,
        dataset.X_train,
        dataset.y_train,
        l2=model.l2,
        fit_intercept=fits_intercept(
            model.fit_intercept, getattr(transform, "absorbs_bias", False)
        ),
        n_classes=dataset.n_classes if model.name == "softmax" else None,
        dtype=np.dtype(model.dtype),
        penalty=penalty,
        copy_X=copy_X,
    )
