"""The one read-error ladder of every stored file: missing → not readable → damaged, each one
line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.core.errors import DataError
from pipeline.store.tree import special_kind

T = TypeVar("T")


def short(err: BaseException) -> str:
    """An exception's message on one line, at most 200 characters (its type when empty)."""
    return " ".join(str(err).split())[:200] or type(err).__name__


def damaged(path: Path | str, what: str, err: BaseException | None, fix: str) -> DataError:
    """The one-line error for a file that exists but cannot be used: ``<path>: <what> (<why>);
    <fix>``."""
    why = f" ({short(err)})" if err is not None else ""
    return DataError(f"{path}: {what}{why}; {fix}")


def not_readable(path: Path | str, err: OSError) -> DataError:
    """The one-line error for a file the user may not read."""
    return DataError(f"{path}: cannot read it ({err.strerror}); make it readable (chmod u+r)")


def read_file(
    path: Path | str,
    read: Callable[[Path], T],
    what: str,
    fix: str,
    missing: str | None = None,
    damage: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """``read(path)``; a missing file, a permission error or a ``damage`` exception is one DataError
    (``missing`` replaces the fix in the not-found line); anything but a regular file (a FIFO, a
    socket, a device) is refused unopened: opening a FIFO would block."""
    try:
        kind = special_kind(os.stat(path).st_mode)
    except OSError:
        kind = None  # missing or not readable: ``read`` says which
    if kind:
        raise damaged(path, f"is {kind}, not a regular file", None, fix)
    try:
        return read(Path(path))
    except FileNotFoundError:
        raise DataError(f"{path} not found; {missing or fix}") from None
    except PermissionError as err:
        raise not_readable(path, err) from None
    except damage as err:
        raise damaged(path, what, err, fix) from None
