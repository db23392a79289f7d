"""Hydra composition of an app's config from a conf/ folder, as ``python -m pipeline.<app>``
composes it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pipeline.config.schemas import register_configs
from support.repo_copy import REPO_ROOT

CONF = REPO_ROOT / "conf"


@contextmanager
def hydra_conf(conf: Path = CONF) -> Iterator[None]:
    """Hydra initialised on ``conf`` (the schemas registered): ``hydra.compose`` works inside."""
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        yield


def compose_app(app: str, overrides: Sequence[str] = (), conf: Path = CONF,
                **kw: Any) -> DictConfig:
    """conf/<app>.yaml composed with ``overrides`` (``kw``: e.g. ``return_hydra_config=True``)."""
    with hydra_conf(conf):
        return compose(config_name=app, overrides=list(overrides), **kw)
