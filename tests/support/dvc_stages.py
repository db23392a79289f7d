"""Test helper: what each dvc.yaml stage needs (modules, conf files) against what it declares.

``expand_stages`` names the stages as DVC does (``name@key`` for ``foreach`` over a dict or a
list, ``name@v1-v2`` for ``matrix``) and substitutes ``vars``, ``${item...}`` and ``${key}``.
``check_stages`` compares, for each stage whose cmd is ``python -m pipeline.<app> [-m] ...``:

* required modules: the project's own modules (``pipeline.*``, ``hydra_plugins.*``, as repo
  files) that ``pipeline/<app>.py`` imports, transitively (``ast``; imports inside functions
  count, they run; the parent packages' ``__init__.py`` count too, they run on import), plus the
  modules named by ``_target_`` keys of the composed config and their closures. The sweeper and
  launcher ``_target_`` count only for ``-m`` stages (a single run never instantiates them).
  Not counted: Hydra's plugin scan, which imports every ``hydra_plugins.*`` module in every app
  (``hydra_plugins/curvlab_sweeper/__init__.py`` only defines a class at import time).
* required conf files: every file of ``conf/`` in Hydra's defaults list for the app's config and
  the stage's overrides (nested defaults and ``experiment`` presets included; ConfigStore schemas
  are not files), for each job of a ``-m`` sweep (its discrete sweeps over config groups, from
  the command line and ``hydra.sweeper.params``, expanded), plus the ``conf/data/<name>.yaml``
  files ``pipeline.data.catalog`` reads to complete partial ``data`` dicts of the config (the
  report's analytic studies). Files under ``conf/hydra/`` are left out: they set how a job is
  launched and logged (working dir, launcher, log format), not what it computes.
* declared: the stage's ``deps`` and its ``params`` files (a folder covers every file under it).

Conf files and params: every conf file a stage reads is a dep (its hash: any change reruns the
stage), except where the stage reads only some keys of it (a preset's ``data`` and ``model`` for a
reference solve, an optimizer's ``name``): then those keys are its params instead. Params are keys,
never whole files: the knobs a user sets with ``dvc exp run -S`` (budgets, λ, seeds, sample
sizes), each a key of its file that can change a result (``param_keys``: not a ``NOT_PARAMS`` key
such as paths, tracking URIs or download mirrors), so ``dvc exp show`` has a few dozen param
columns and ``dvc params diff`` names the value that changed.
"""

from __future__ import annotations

import ast
import functools
import importlib
import itertools
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "hydra_plugins")  # the project's own top-level packages
HYDRA_RUN_ONLY = ("sweeper", "launcher")  # hydra.<node>._target_ instantiated only by -m
# Keys of a conf file that do not change what a stage computes, so not DVC params.
NOT_PARAMS = {
    "defaults": "which conf files compose: those files are the params files, checked here",
    "study": "names the output folder (dvc.yaml's outs) and the MLflow experiment",
    "paths": "where files are read and written (dvc.yaml's deps and outs)",
    "mlflow": "where runs are logged, not what they compute",
    "progress": "a progress bar",
    "limits": "a memory budget: over it a stage refuses, under it nothing changes",
    "title": "a display name",
    "mirrors": "download URLs (the files are checked against their SHA-256: files)",
    "root": "where the raw files are found (checked against their SHA-256: files)",
    "folder": "where the raw files are found (checked against their SHA-256: files)",
    "hydra.run": "Hydra's working and log folders",
    "hydra.sweep": "Hydra's working and log folders",
    "hydra.output_subdir": "Hydra's working and log folders",
    "hydra.job": "Hydra's working and log folders",
}


def param_keys(path: Path) -> tuple[str, ...] | None:
    """The DVC params of one conf file: its keys that can change a result (top-level keys, one level
    down under ``hydra``, less ``NOT_PARAMS``), in file order; None when that is every key (the
    file is declared whole)."""
    doc = yaml.safe_load(path.read_text()) or {}
    keys: list[str] = []
    for key, value in doc.items():
        if key == "hydra" and isinstance(value, dict):
            keys += [f"hydra.{k}" for k in value if f"hydra.{k}" not in NOT_PARAMS]
        elif key not in NOT_PARAMS:
            keys.append(str(key))
    dropped = any(k in NOT_PARAMS for k in doc) or any(
        f"hydra.{k}" in NOT_PARAMS for k in (doc.get("hydra") or {}))
    return tuple(keys) if dropped else None


@dataclass(frozen=True)
class Stage:
    """One expanded dvc.yaml stage; ``app`` is None when its cmd is not ``python -m
    pipeline.<app>``."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # params files
    outs: tuple[str, ...]  # outs, metrics and plots
    app: str | None = None
    multirun: bool = False
    overrides: tuple[str, ...] = ()
    param_keys: tuple[tuple[str, tuple[str, ...] | None], ...] = ()  # (file, keys | None: whole)


@dataclass
class StageCheck:
    """Required against declared for one stage (repo-relative POSIX paths)."""

    required_modules: set[str] = field(default_factory=set)
    required_conf: set[str] = field(default_factory=set)
    declared_modules: tuple[str, ...] = ()  # deps under the project's packages: files and folders
    missing_modules: list[str] = field(default_factory=list)
    missing_conf: list[str] = field(default_factory=list)
    spurious_modules: list[str] = field(default_factory=list)  # module deps the rule does not allow
    # declared conf entries no required file is in
    spurious_conf: list[str] = field(default_factory=list)
    # params files whose declared keys are not ``param_keys``: "<file>: [the keys to declare]"
    wrong_keys: list[str] = field(default_factory=list)


def wrong_param_keys(stage: Stage, repo: Path = REPO_ROOT) -> list[str]:
    """The stage's conf params entries that are not keys of their file that can change a result,
    each as ``<file>: <why>``: a file declared whole (make it a dep, its knobs keys), a key the file
    does not have (DVC would fail), or a key under ``NOT_PARAMS``."""
    bad = []
    for rel, keys in stage.param_keys:
        if not rel.startswith("conf/") or not (repo / rel).is_file():
            continue
        if keys is None:
            bad.append(f"{rel}: declared whole (make it a dep; its knobs params: [key, ...])")
            continue
        doc = yaml.safe_load((repo / rel).read_text()) or {}
        allowed = param_keys(repo / rel)
        allowed = set(_top_keys(repo / rel)) if allowed is None else set(allowed)
        for key in keys:
            parts = key.split(".")
            head = ".".join(parts[:2]) if parts[0] == "hydra" else parts[0]
            node: Any = doc
            for part in parts:
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                bad.append(f"{rel}: {key} is not a key of the file")
            elif head not in allowed:
                bad.append(f"{rel}: {key} changes no result ({NOT_PARAMS.get(head, head)})")
    return bad


_MISSING = object()


def _top_keys(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text()) or {}
    return [*map(str, doc), *(f"hydra.{k}" for k in (doc.get("hydra") or {}))]


# ------------------------------------------------------------------ dvc.yaml, as DVC expands it

_INTERP = re.compile(r"\$\{\s*([\w.-]+)\s*\}")


def _lookup(ctx: Mapping[str, Any], dotted: str) -> Any:
    value: Any = ctx
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _to_str(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _resolve(node: Any, ctx: Mapping[str, Any]) -> Any:
    """Substitute ``${...}`` in strings, recursively; a string that is one whole ``${x}`` gives x's
    value."""
    if isinstance(node, str):
        whole = _INTERP.fullmatch(node)
        if whole:
            return _lookup(ctx, whole.group(1))
        return _INTERP.sub(lambda m: _to_str(_lookup(ctx, m.group(1))), node)
    if isinstance(node, list):
        return [_resolve(v, ctx) for v in node]
    if isinstance(node, dict):
        return {_resolve(k, ctx): _resolve(v, ctx) for k, v in node.items()}
    return node


def _vars(doc: Mapping[str, Any], repo: Path) -> dict[str, Any]:
    """Top-level ``vars``: inline dicts, or YAML files (``params.yaml`` when present, as DVC
    does)."""
    ctx: dict[str, Any] = {}
    entries = ["params.yaml"] if (repo / "params.yaml").is_file() else []
    for entry in [*entries, *(doc.get("vars") or [])]:
        ctx.update(
            entry if isinstance(entry, dict) else yaml.safe_load((repo / entry).read_text()) or {}
        )
    return ctx


def _instances(name: str, spec: Mapping[str, Any], ctx: Mapping[str, Any]
               ) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(stage name, ``item``/``key`` context, unresolved body) for each stage a dvc.yaml entry
    generates."""
    if "foreach" in spec:
        items = _resolve(spec["foreach"], ctx)
        if isinstance(items, dict):
            keyed = {_to_str(k): v for k, v in items.items()}
        elif any(isinstance(v, (dict, list)) for v in items):
            keyed = {str(i): v for i, v in enumerate(items)}
        else:
            keyed = {_to_str(v): v for v in items}
        for key, item in keyed.items():
            yield f"{name}@{key}", {"item": item, "key": key}, spec["do"]
    elif "matrix" in spec:
        axes = {k: list(enumerate(v)) for k, v in _resolve(spec["matrix"], ctx).items()}
        body = {k: v for k, v in spec.items() if k != "matrix"}
        for combo in itertools.product(*axes.values()):
            item = {k: v for k, (_, v) in zip(axes, combo, strict=True)}
            key = "-".join(f"{k}{i}" if isinstance(v, (dict, list)) else _to_str(v)
                           for k, (i, v) in zip(axes, combo, strict=True))
            yield f"{name}@{key}", {"item": item, "key": key}, body
    else:
        yield name, {}, spec


def _paths(entries: Iterable[Any] | None) -> tuple[str, ...]:
    """Paths of a deps/outs/params list (plain strings or one-key dicts ``{path: options}``)."""
    return tuple(e if isinstance(e, str) else next(iter(e)) for e in entries or ())


def expand_stages(repo: Path = REPO_ROOT) -> list[Stage]:
    """Every stage of ``repo/dvc.yaml`` under its DVC name, in file order, values substituted."""
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())
    base = _vars(doc, repo)
    stages = []
    for name, raw in doc["stages"].items():
        for stage_name, extra, body in _instances(name, raw, base):
            ctx = {**base, **extra}
            spec = _resolve(body, ctx)
            outs = sum((_paths(spec.get(k)) for k in ("outs", "metrics", "plots")), ())
            keyed = tuple((f, None if k is None else tuple(k))  # {a, b}: two whole files
                          for p in spec.get("params") or ()
                          for f, k in (p.items() if isinstance(p, dict)
                                       else [("params.yaml", [p])]))
            stage = Stage(stage_name, str(spec["cmd"]), _paths(spec.get("deps")),
                          tuple(f for f, _ in keyed), outs, param_keys=keyed)
            argv = shlex.split(stage.cmd)
            if argv[:2] == ["python", "-m"] and len(argv) > 2 and argv[2].startswith("pipeline."):
                rest = argv[3:]
                multirun = any(a in ("-m", "--multirun") for a in rest)
                stage = replace(stage, app=argv[2].split(".", 1)[1], multirun=multirun,
                                overrides=tuple(a for a in rest if a not in ("-m", "--multirun")))
            stages.append(stage)
    return stages


# ------------------------------------------------------------------ modules (ast import graph)


def module_file(name: str, repo: Path = REPO_ROOT) -> str | None:
    """The repo file of module ``name`` (``a/b.py`` or ``a/b/__init__.py``), None if not the
    project's."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = repo.joinpath(*name.split("."))
    for cand in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(repo).as_posix()
    return None


@functools.cache
def _imported_names(path: Path, module: str) -> frozenset[str]:
    """Module names one file imports, anywhere in it (functions too), relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            head = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            base = ".".join(p for p in (head, node.module or "") if p)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept if a module
    return frozenset(names)


def module_closure(roots: Iterable[str], repo: Path = REPO_ROOT) -> set[str]:
    """Repo files of the project modules reachable from ``roots`` (dotted names; a ``_target_``
    like ``pkg.mod.Class`` resolves to its longest prefix that is a module), parent packages
    included."""
    todo, seen = list(roots), set()
    files: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parents run first
        rel = module_file(name, repo)
        if rel is None:
            continue
        files.add(rel)
        todo.extend(_imported_names(repo / rel, name))
    return files


def _targets(node: Any, multirun: bool, path: tuple[str, ...] = ()) -> Iterator[str]:
    """``_target_`` strings of a config container (hydra's sweeper/launcher only when
    ``multirun``)."""
    if not multirun and path[:1] == ("hydra",) and path[1:2] and path[1] in HYDRA_RUN_ONLY:
        return
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for key, value in node.items():
            yield from _targets(value, multirun, (*path, str(key)))
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value, multirun, path)


# ----------------------------------------------------------------- conf files (Hydra defaults list)


class Composer:
    """An app's config composed by Hydra for some overrides, and the conf files that composition
    reads (its defaults list). Make it inside ``hydra.initialize_config_dir(<repo>/conf)``, with
    the stage schemas registered (``pipeline.config.schemas.register_configs``).

    ``public=True`` calls ``hydra.compose(..., return_hydra_config=True)`` and
    ``config_loader().compute_defaults_list(...)``. The default does the same steps as
    ``ConfigLoaderImpl._load_configuration_impl`` (hydra-core 1.3.2: ``create_defaults_list``,
    ``_compose_config_from_defaults_list``, the command line's value overrides; not the
    ``hydra.runtime``/``hydra.job`` fields) with one caching repository per app, so each file is
    read once instead of once per job: five times faster, the same configs (tested).
    """

    def __init__(self, repo: Path = REPO_ROOT, public: bool = False) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self.repo, self.public = repo, public
        self.loader: Any = GlobalHydra.instance().config_loader()
        self._caches: dict[str, Any] = {}

    def __call__(self, app: str, overrides: list[str]) -> tuple[dict[str, Any], set[str]]:
        """(the composed config as a plain unresolved container, the repo's conf files it reads)."""
        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        if self.public:
            cfg = compose(config_name=app, overrides=overrides, return_hydra_config=True)
            defaults = self.loader.compute_defaults_list(app, overrides, RunMode.RUN).defaults
            sources = self.loader.get_sources()
        else:
            if app not in self._caches:  # also applies the primary config's hydra.searchpath
                self._caches[app] = self.loader._parse_overrides_and_create_caching_repo(app, [])[1]
            cache = self._caches[app]
            dl = create_defaults_list(
                repo=cache,
                config_name=app,
                prepend_hydra=True,
                skip_missing=False,
                overrides_list=OverridesParser.create().parse_overrides(overrides),
            )
            cfg = self.loader._compose_config_from_defaults_list(defaults=dl.defaults, repo=cache)
            OmegaConf.set_struct(cfg, True)
            OmegaConf.set_readonly(cfg.hydra, False)
            ConfigLoaderImpl._apply_overrides_to_config(dl.config_overrides, cfg)
            defaults, sources = dl.defaults, cache.get_sources()
        files = set()
        for d in defaults:
            # Hydra's lookup order
            src = next((s for s in sources if s.is_config(d.config_path)), None)
            if (
                src is not None
                and src.scheme() == "file"
                and not d.config_path.startswith("hydra/")
            ):
                path = Path(src.path, f"{d.config_path}.yaml").resolve()
                if path.is_relative_to(self.repo):
                    files.add(path.relative_to(self.repo).as_posix())
        return OmegaConf.to_container(cfg, resolve=False), files  # type: ignore[return-value]


def job_overrides(compose: Composer, stage: Stage) -> list[list[str]]:
    """One override list per job that can read different conf files: a single run as is; for -m,
    the product of the discrete sweeps over config groups (command line, then
    hydra.sweeper.params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(stage.overrides))
    if not stage.multirun:
        return [list(stage.overrides)]
    fixed = [str(o.input_line) for o in parsed if not o.is_sweep_override()]
    params = compose(str(stage.app), fixed)[0]["hydra"]["sweeper"].get("params") or {}
    sweeps = {
        o.get_key_element(): o
        for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    }
    # the command line wins, as in BasicSweeper
    sweeps.update({o.get_key_element(): o for o in parsed})
    fixed = [f for f in fixed if f.partition("=")[0] not in sweeps]  # each key once: from `sweeps`
    axes = []
    for key, o in sweeps.items():
        if not o.is_sweep_override():
            axes.append([str(o.input_line)])
        elif o.is_discrete_sweep() and o.value_type != ValueType.GLOB_CHOICE_SWEEP \
                and compose.loader.repository.group_exists(o.key_or_group):
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
    return [fixed + list(combo) for combo in itertools.product(*axes)]


def _catalog_reads(node: Any, repo: Path, key: str = "") -> set[str]:
    """conf/data/<name>.yaml (and the files its defaults name) for each partial ``data`` dict
    (``name`` without ``format``), which pipeline.data.catalog.complete() reads without Hydra."""
    out: set[str] = set()
    if isinstance(node, dict):
        if key == "data" and isinstance(node.get("name"), str) and "format" not in node:
            todo = [node["name"]]
            while todo:
                rel = f"conf/data/{todo.pop()}.yaml"
                if (repo / rel).is_file() and rel not in out:
                    out.add(rel)
                    defaults = (yaml.safe_load((repo / rel).read_text()) or {}).get(
                        "defaults"
                    ) or []
                    todo.extend(
                        d
                        for d in defaults
                        if isinstance(d, str) and d not in ("data_schema", "_self_")
                    )
        for k, v in node.items():
            out |= _catalog_reads(v, repo, str(k))
    elif isinstance(node, list):
        for v in node:
            out |= _catalog_reads(v, repo, key)
    return out


def required(stage: Stage, compose: Composer) -> tuple[set[str], set[str]]:
    """(module files, conf files) a ``python -m pipeline.<app>`` stage needs (module docstring)."""
    assert stage.app is not None
    roots = {f"pipeline.{stage.app}"}
    conf: set[str] = set()
    cfgs: list[dict[str, Any]] = []
    for job in job_overrides(compose, stage):
        cfg, files = compose(stage.app, job)
        cfgs.append(cfg)
        conf |= files
        roots.update(_targets(cfg, stage.multirun))
    modules = module_closure(roots, compose.repo)
    if "pipeline/data/catalog.py" in modules:
        for cfg in cfgs:
            conf |= _catalog_reads({k: v for k, v in cfg.items() if k != "hydra"}, compose.repo)
    return modules, conf


# ------------------------------------------------------------------ required against declared


def _covered(path: str, declared: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def module_deps(deps: Iterable[str]) -> tuple[str, ...]:
    """The deps that name the project's code (under one of its packages)."""
    return tuple(d.rstrip("/") for d in deps if d.split("/")[0] in PACKAGES)


def disallowed_module_deps(declared: Iterable[str], modules: set[str], repo: Path = REPO_ROOT
                           ) -> list[str]:
    """Module deps the rule (module docstring) does not allow, given the modules a stage imports:
    a file it never imports, a package root, or a folder it imports nothing from."""
    bad = []
    for dep in declared:
        if (repo / dep).is_dir():
            if dep in PACKAGES or not any(_covered(m, [dep]) for m in modules):
                bad.append(dep)
        elif dep not in modules:
            bad.append(dep)
    return sorted(bad)


def check_stages(repo: Path = REPO_ROOT, public: bool = False,
                 only: Iterable[str] | None = None) -> dict[str, StageCheck]:
    """Per ``python -m pipeline.<app>`` stage of ``repo/dvc.yaml`` (or the ``only`` ones): required,
    missing and spurious deps; ``public``: compose with ``hydra.compose`` (see ``Composer``)."""
    from hydra import initialize_config_dir

    from pipeline.config.schemas import register_configs

    register_configs()
    stages = [
        s for s in expand_stages(repo) if s.app is not None and (only is None or s.name in only)
    ]
    for app in sorted({s.app for s in stages if s.app}):
        module = importlib.import_module(f"pipeline.{app}")
        # e.g. another checkout's
        if not Path(str(module.__file__)).resolve().is_relative_to(REPO_ROOT):
            raise RuntimeError(f"{module.__name__} imported from {module.__file__}, not "
                               f"{REPO_ROOT}: "
                               "run from the repository root (python -m pytest)")
    checks: dict[str, StageCheck] = {}
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        compose = Composer(repo, public)
        for stage in stages:
            modules, conf = required(stage, compose)
            declared_conf = [d for d in (*stage.deps, *stage.params) if d.startswith("conf/")]
            declared_modules = module_deps(stage.deps)
            bad = disallowed_module_deps(declared_modules, modules, compose.repo)
            allowed = [d for d in declared_modules if d not in bad]
            checks[stage.name] = StageCheck(
                required_modules=modules, required_conf=conf, declared_modules=declared_modules,
                missing_modules=sorted(m for m in modules if not _covered(m, allowed)),
                missing_conf=sorted(c for c in conf if not _covered(c, declared_conf)),
                spurious_modules=bad,
                spurious_conf=sorted(d for d in declared_conf if not d.startswith("conf/hydra/")
                                     and not any(_covered(c, [d]) for c in conf)),
                wrong_keys=wrong_param_keys(stage, compose.repo),
            )
    return checks


def affected_stages(checks: Mapping[str, StageCheck], changed: Iterable[str]) -> set[str]:
    """The stages DVC must rerun when the ``changed`` repo paths change: a conf file the stage
    reads, or a module under one of its module deps (a module it imports, or a layer folder it
    imports from: with deps that pass ``check_stages``, nothing wider)."""
    changed = set(changed)
    return {name for name, c in checks.items()
            if changed & c.required_conf or any(_covered(p, c.declared_modules) for p in changed)}
