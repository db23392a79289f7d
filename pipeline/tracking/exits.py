"""Hooks run when a command ends (FINISHED / FAILED / KILLED), e.g. to close open MLflow runs."""

from __future__ import annotations

from collections.abc import Callable

_HOOKS: list[Callable[[str], None]] = []


def on_exit(hook: Callable[[str], None]) -> None:
    """Call ``hook(status)`` when a command ends (FINISHED / FAILED / KILLED), e.g. to close the
    MLflow
    runs of a sweep this process started (``pipeline.tracking.mlflow`` registers itself when
    imported)."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)


def run_exit_hooks(status: str) -> None:
    for hook in _HOOKS:
        hook(status)
