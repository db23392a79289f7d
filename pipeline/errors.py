"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class CurvlabError(Exception):
    """A problem with the user's input (data, config, environment), reported as one line.

    The message must say what is wrong and what to do, e.g.
    ``"train-images-idx3-ubyte.gz: SHA-256 mismatch (file corrupt?); delete it and rerun to re-download"``.
    """


class DataError(CurvlabError):
    """A missing, truncated, corrupt or mismatching data file."""


class ConfigError(CurvlabError):
    """A config value out of range or inconsistent with the others."""


class NumericalError(CurvlabError):
    """A computation that cannot proceed: a singular covariance, a non-finite result."""


EXIT_USER_ERROR = 2


def report_and_exit(err: CurvlabError, prog: str = "curvlab") -> None:
    """Print ``prog: error: <message>`` on one line to stderr and exit with status 2."""
    msg = " ".join(str(err).split())
    print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def user_errors_exit(prog: str = "curvlab") -> Callable[[F], F]:
    """Decorator for entry points: a CurvlabError becomes one stderr line and exit status 2; any
    other exception one line too (``pipeline.cli.exit_with``: 2 for OS/config errors, 1 for bugs)."""

    def deco(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CurvlabError as err:
                report_and_exit(err, prog)
            except Exception as err:  # noqa: BLE001 - one line, never a traceback
                from pipeline.cli import exit_with

                exit_with(err, prog)

        return wrapper  # type: ignore[return-value]

    return deco
