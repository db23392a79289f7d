"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any


class CurvlabError(Exception):
    """A problem with the user's input (data, config, environment), reported as one line.

    The message must say what is wrong and what to do, e.g.
    ``"train-images-idx3-ubyte.gz: SHA-256 mismatch (file corrupt?); delete it and rerun to
    re-download"``.
    """


class DataError(CurvlabError):
    """A missing, truncated, corrupt or mismatching data file."""


class ConfigError(CurvlabError):
    """A config value out of range or inconsistent with the others."""


class NumericalError(CurvlabError):
    """A computation that cannot proceed: a singular covariance, a non-finite result."""


EXIT_USER_ERROR = 2


# ---------------------------------------------------------------- options in the caller's words
# The core names an option by the component it belongs to: ``{solver.lr}``, ``{objective.l2}``,
# ``{transform.eps}``, ``{dataset.classes}``; ``{solver}`` alone is the choice of a component (the
# method, model, transform). Bare by default (``lr``, ``method``); a caller that knows them under
# other names (a config group: ``<group>.lr``) words every message made inside ``OptionNames(...)``.

COMPONENTS = {"solver": "method", "objective": "model", "transform": "transform", "dataset": "data"}
_GROUPS: ContextVar[Mapping[str, str] | None] = ContextVar("curvlab_option_groups", default=None)


class _Named:
    """A component in a message template: ``{c}`` is its choice, ``{c.option}`` an option of it."""

    def __init__(self, component: str, group: str | None) -> None:
        self._choice = group or COMPONENTS[component]
        self._prefix = f"{group}." if group else ""

    def __format__(self, spec: str) -> str:
        return format(self._choice, spec)

    def __getattr__(self, option: str) -> str:
        return self._prefix + option


def worded(template: str, **values: Any) -> str:
    """``template.format(**values)`` with ``{component.option}`` and ``{component}`` named in the
    caller's words (``OptionNames``): ``{solver.lr}`` → ``lr``, or ``<group>.lr`` for a config."""
    groups = _GROUPS.get() or {}
    named = {c: _Named(c, groups.get(c)) for c in COMPONENTS}
    return template.format(**values, **named)


class OptionNames(contextlib.ContextDecorator):
    """Within (a ``with`` block, or a function it decorates): core messages name an option ``o`` of
    component ``c`` as ``groups[c].o`` and the choice of ``c`` as ``groups[c]``
    (``{"solver": "opt"}``: ``opt.lr``, ``opt=gd``). Picklable, so decorated functions are too."""

    def __init__(self, groups: Mapping[str, str]) -> None:
        self.groups = dict(groups)
        self._tokens: list[Token[Mapping[str, str] | None]] = []

    def __enter__(self) -> None:
        self._tokens.append(_GROUPS.set(self.groups))

    def __exit__(self, *exc: object) -> None:
        _GROUPS.reset(self._tokens.pop())


class OptionError(ConfigError):
    """An option of a core component out of range: ``<option>=<value> <problem>``, the option in the
    caller's words (``worded``); ``problem`` is a template too (``values`` fill it)."""

    def __init__(self, component: str, option: str, value: Any, problem: str, *,
                 show: Callable[[Any], str] = repr, **values: Any) -> None:
        self.component, self.option, self.value = component, option, value
        template = f"{{{component}.{option}}}={{_shown}} {problem}"
        super().__init__(worded(template, _shown=show(value), **values))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (to another process) as the ConfigError it reads as."""
        return ConfigError, self.args
