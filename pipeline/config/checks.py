"""Checks at the config boundary: ranges, known keys, safe names and paths."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError, OptionNames

if TYPE_CHECKING:
    from pipeline.core.backend import Backend

# the config group each numerical-core component takes its options from
CORE_GROUPS = {"solver": "optimizer", "objective": "model", "transform": "preprocess",
               "dataset": "data"}


def config_keys() -> OptionNames:
    """Core messages made inside (a ``with`` block, or a function decorated ``@config_keys()``) name
    options as config keys: the solver's ``lr`` as ``optimizer.lr``, its method as ``optimizer``."""
    return OptionNames(CORE_GROUPS)


def _invalid(key: str, value: Any, want: str) -> ConfigError:
    """The one-line error of a config value out of range."""
    return ConfigError(f"{key}={value!r} is invalid: {want}; fix it in conf/ or on the "
                       "command line")


def validate_train_config(cfg: Any) -> Backend:
    """Range and consistency checks Hydra's type checks cannot do; raises a one-line ConfigError.
    The names allowed are the core's registries: models, dtypes, starting points, methods.
    Returns the run's backend (``check_backend``)."""
    check_boundary(cfg)
    m, o = cfg.model, cfg.optimizer
    _check_model(m)
    _check_optimizer(o)
    if o.name == "closed_form" and m.name != "linear":
        raise ConfigError(
            f"optimizer=closed_form solves only least squares (model=linear), not model={m.name}; "
            "use optimizer=newton or optimizer=newton_cg"
        )
    eps = cfg.preprocess.get("eps", 0.0)
    if eps is not None and not eps >= 0.0:
        raise _invalid("preprocess.eps", eps, "the eigenvalue floor must be >= 0")
    if cfg.seed < 0:
        raise _invalid("seed", cfg.seed, "must be >= 0")
    return check_backend(cfg)


def check_backend(cfg: Any) -> Backend:
    """The library and device of ``backend`` and ``device`` (``pipeline.core.backend``): a
    one-line ConfigError naming the key and what to install when the library is missing, the
    device does not exist or numpy is asked for a GPU."""
    from pipeline.core.backend import load_backend

    return load_backend(str(cfg.get("backend", "numpy")), str(cfg.get("device", "cpu")))


def _check_model(m: Any) -> None:
    """model.name among the core's models, λ ≥ 0, a known dtype."""
    from pipeline.core.objectives import DTYPES, MODELS

    if m.name not in MODELS:
        raise _invalid("model.name", m.name, f"choose one of {', '.join(MODELS)}")
    if not m.l2 >= 0.0:
        raise _invalid("model.l2", m.l2, "the L2 penalty must be >= 0")
    if m.dtype not in DTYPES:
        raise _invalid("model.dtype", m.dtype, f"choose one of {', '.join(DTYPES)}")


def _check_optimizer(o: Any) -> None:
    """optimizer.* in range: a registered method, ε > 0 or auto, budgets ≥ 0, line-search constants
    in (0, 1) (lbfgs: armijo_c < wolfe_c2), L-BFGS memory and evaluations ≥ 1, known
    preconditioner, HVP precision and start point (SGD's own keys: train)."""
    from pipeline.core.objectives import INITS
    from pipeline.core.solvers import METHODS
    from pipeline.core.solvers.options import HVP_PRECISIONS, PRECONDITIONERS

    if o.name not in METHODS:
        raise _invalid("optimizer.name", o.name, f"choose one of {', '.join(METHODS)}")
    if isinstance(o.lr, str):
        if o.lr != "auto":
            raise _invalid("optimizer.lr", o.lr, "use a positive number or 'auto' (= 1/L)")
    elif not (o.lr > 0.0 and o.lr < float("inf")):
        raise _invalid("optimizer.lr", o.lr,
                       "the step size must be a positive finite number or 'auto' (= 1/L)")
    checks = (("max_iter", o.max_iter >= 0, "must be >= 0"), ("tol", o.tol >= 0.0, "must be >= 0"),
              ("time_budget_s", o.time_budget_s is None or o.time_budget_s > 0.0,
               "must be > 0 or null"),
              ("armijo_c", 0.0 < o.armijo_c < 1.0, "must lie in (0, 1)"),
              ("backtrack", 0.0 < o.backtrack < 1.0, "must lie in (0, 1)"),
              ("cg_max_iter", o.cg_max_iter >= 1, "must be >= 1"),
              ("memory", o.memory >= 1, "must be >= 1"),
              ("wolfe_c2", 0.0 < o.wolfe_c2 < 1.0, "must lie in (0, 1)"),
              ("wolfe_max_evals", o.wolfe_max_evals >= 1, "must be >= 1"))
    for key, ok, want in checks:
        if not ok:
            raise _invalid(f"optimizer.{key}", getattr(o, key), want)
    for key, names in (("preconditioner", PRECONDITIONERS), ("hvp_precision", HVP_PRECISIONS),
                       ("init", INITS)):
        if getattr(o, key) not in names:
            raise _invalid(f"optimizer.{key}", getattr(o, key), f"choose one of {', '.join(names)}")
    if not o.init_scale > 0.0:
        raise _invalid("optimizer.init_scale", o.init_scale, "must be > 0")
    if o.name == "lbfgs" and not o.armijo_c < o.wolfe_c2:
        raise _invalid("optimizer.wolfe_c2", o.wolfe_c2,
                       f"must exceed optimizer.armijo_c = {o.armijo_c:g} (strong Wolfe)")
    _check_momentum_adaptive(o)
    if o.name == "sgd" and o.line_search:
        raise _invalid("optimizer.line_search", o.line_search,
                       "SGD takes no line search; set it to false")


def _check_momentum_adaptive(o: Any) -> None:
    """The momentum and adaptive methods' keys in range: Adam's β₁, β₂ ∈ [0, 1), δ > 0, a known
    Nesterov restart, heavy ball's momentum in [0, 1) or auto (SGD checks its own momentum)."""
    from pipeline.core.solvers import RESTARTS

    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise _invalid(f"optimizer.{key}", getattr(o, key), "must lie in [0, 1)")
    if not 0.0 < o.delta < float("inf"):
        raise _invalid("optimizer.delta", o.delta, "must be a positive finite number")
    if o.restart not in RESTARTS:
        raise _invalid("optimizer.restart", o.restart, f"choose one of {', '.join(RESTARTS)}")
    if o.name == "heavy_ball" and o.momentum != "auto" and not (
            isinstance(o.momentum, int | float) and 0.0 <= o.momentum < 1.0):
        raise _invalid("optimizer.momentum", o.momentum, "must lie in [0, 1) or be 'auto'")
    if o.name in ("heavy_ball", "nesterov", "adam", "adagrad") and o.line_search:
        raise _invalid("optimizer.line_search", o.line_search,
                       f"{o.name} takes no line search; set it to false")


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
    """Reject keys the node's structured schema does not define (``+foo=1``,
    ``+optimizer.lrr=0.1``)."""
    import difflib

    from omegaconf import DictConfig, OmegaConf

    from pipeline.core.errors import ConfigError

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

    from pipeline.core.errors import ConfigError

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} has no value (???); set it on the command line ({key}=<value>) "
                          "or in conf/")


def check_name(key: str, value: Any) -> str:
    """A config value that becomes a file or folder name: a safe name (not '.'/'..', no '/')."""
    import re

    from pipeline.core.errors import ConfigError

    text = str(value)
    if value is None or not re.fullmatch(SAFE_NAME, text):
        raise ConfigError(
            f"{key}={value!r} cannot name a file or folder: use 1-100 letters, digits, '_', '-', "
            "'+', "
            "'=', ',' or '.', starting with a letter or digit (e.g. mnist-3v8)")
    return text


def check_inside(path: Any, root: Any, key: str) -> None:
    """``path`` (absolute, '..' collapsed) lies strictly inside ``root``; else a ConfigError naming
    ``key``."""
    import os

    from pipeline.core.errors import ConfigError

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
    check_reserved(cfg)


def check_reserved(cfg: Any) -> None:
    """No ``study`` naming, and no ``paths.*`` / ``run_dir`` inside, a folder a DVC stage owns
    (``pipeline.config.paths.RESERVED_DIRS``); else a one-line ConfigError naming the key."""
    import os

    from omegaconf import OmegaConf

    from pipeline.config.paths import RESERVED_DIRS, project_path, reserved_folders
    from pipeline.core.errors import ConfigError

    study = cfg.get("study") if "study" in cfg else None
    if study is not None and str(study) in RESERVED_DIRS:
        stage = RESERVED_DIRS[str(study)][0]
        raise ConfigError(f"study={study} is reserved: experiments/{study}/ belongs to `{stage}` "
                          "and `dvc repro` replaces it; choose another study name")
    node = cfg.paths if "paths" in cfg else None
    paths = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    given = {f"paths.{k}": v for k, v in paths.items() if isinstance(v, str)}
    if isinstance(cfg.get("run_dir"), str):
        given["run_dir"] = cfg.run_dir
    for folder, name in reserved_folders(paths).items():
        stage, owner = RESERVED_DIRS[name]
        for key, value in given.items():
            p = os.path.abspath(project_path(value))
            if key != owner and os.path.commonpath([p, str(folder)]) == str(folder):
                raise ConfigError(f"{key}={value} lies in {folder}, which `{stage}` owns (`dvc "
                                  f"repro` replaces it); point {key} at another folder")
