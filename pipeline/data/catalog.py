"""The data sets declared in ``conf/data/*.yaml``, read without Hydra (library callers, error
messages).

A Hydra app gets the whole ``data`` config composed from ``conf/data/<name>.yaml``; code that calls
``load_dataset({"name": "mnist", ...})`` with a partial dict gets it completed here from the same
file, so every fact about a data set (files, checksums, mirrors, class names) has one home: its
YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError


def project_root() -> Path:
    """The directory holding ``pyproject.toml``: above this package, else above the cwd, else
    cwd."""
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for cand in (start, *start.parents):
            if (cand / "pyproject.toml").is_file():
                return cand
    return Path.cwd().resolve()


def conf_data_dir() -> Path:
    """``<project>/conf/data``: one YAML file per data set."""
    return project_root() / "conf" / "data"


def known_names() -> list[str]:
    """The data-set names declared in conf/data/ (the YAML file names)."""
    return sorted(p.stem for p in conf_data_dir().glob("*.yaml"))


def _load_yaml(name: str, seen: tuple[str, ...] = ()) -> Any:
    """conf/data/<name>.yaml merged over the data sets its ``defaults`` list names (same group, then
    _self_)."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = conf_data_dir() / f"{name}.yaml"
    if not path.is_file() or name in seen:
        raise ConfigError(f"data.name={name!r} is unknown (no {path}); use one of "
                          f"{', '.join(known_names())} "
                          "or add conf/data/<name>.yaml")
    try:
        node = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: unreadable data set YAML "
                          f"({' '.join(str(err).split())}); fix the file") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: a data set YAML must be a mapping of keys; fix the file")
    parents = [d for d in node.pop("defaults", []) or [] if isinstance(d, str) and d != "_self_"]
    return OmegaConf.merge(*[_load_yaml(p, (*seen, name)) for p in parents], node)


def data_config(name: str) -> dict[str, Any]:
    """The ``data`` config of conf/data/<name>.yaml as a plain dict, with the schema's defaults
    filled in."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.config.schemas import DataConfig

    node = _load_yaml(name)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DataConfig), node)
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(f"conf/data/{name}.yaml does not fit the data schema "
                          f"({' '.join(str(err).split())}); fix the file") from None


def complete(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A partial ``data`` dict (no ``format`` key) completed from conf/data/<name>.yaml; a full one
    as is."""
    if "format" in cfg:
        return dict(cfg)
    return {**data_config(str(cfg.get("name"))), **cfg}


def known_files() -> dict[str, tuple[str, str, str]]:
    """SHA-256 of every IDX payload declared in conf/data/ -> (title, data name, file name); a YAML
    that does not load is skipped (its own data set reports it)."""
    out: dict[str, tuple[str, str, str]] = {}
    for name in known_names():
        try:
            cfg = data_config(name)
        except (ConfigError, RecursionError):
            continue
        files = cfg.get("files")
        for f in files.values() if isinstance(files, dict) else ():
            if isinstance(f, dict) and f.get("sha256") and f.get("name"):
                title = str(cfg.get("title") or name)
                out.setdefault(str(f["sha256"]).lower(), (title, name, str(f["name"])))
    return out
