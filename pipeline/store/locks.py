"""Advisory per-folder locks: one writer of a run folder at a time (``fcntl.flock``).

The lock file is ``.<name>.lock`` beside the folder (never inside it: the folder itself is swapped
as a whole). It holds the holder's pid and is deleted on release, so no lock file outlives a
writer; a waiter that locked a file deleted meanwhile locks the new one instead. The kernel drops
the lock when its holder dies (SIGKILL included), so a dead writer never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import CurvlabError
from pipeline.store.writer import write_error

LOCK_TIMEOUT_S = 600.0  # how long a writer waits for the one holding the folder
_POLL_S = 0.1


class LockedError(CurvlabError):
    """Another process holds the folder's lock for longer than the wait allows."""


def lock_path(folder: Path) -> Path:
    """``<parent>/.<name>.lock``: the lock file of ``folder``."""
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}.lock")


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(path.read_text(encoding='ascii').strip() or 'x')}"
    return "another process"


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock of ``path`` (created if missing), or None when taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    try:
        same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # the holder before us deleted this file on release: lock the current one
        os.close(fd)
        return _try_lock(path)
    return fd


def _try_lock_or_fail(path: Path) -> int | None:
    """``_try_lock``; an OSError (read-only, no space) becomes the writer's one-line WriteError."""
    try:
        return _try_lock(path)
    except OSError as err:
        raise write_error(path, err) from None


@contextlib.contextmanager
def folder_lock(folder: Path, who: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock for the block; wait up to ``timeout_s`` (default
    ``LOCK_TIMEOUT_S``) for another holder, saying so once on stderr, then a LockedError."""
    path = lock_path(folder)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    limit = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    deadline, said = time.monotonic() + limit, False
    while (fd := _try_lock_or_fail(path)) is None:
        if time.monotonic() >= deadline:
            raise LockedError(f"{folder} is being written by {_holder(path)} (lock {path}); "
                              f"wait for it to finish, or stop it, and rerun")
        if not said:
            print(f"{who}: waiting for {_holder(path)} to finish writing {folder}",
                  file=sys.stderr, flush=True)
            said = True
        time.sleep(_POLL_S)
    try:
        with contextlib.suppress(OSError):  # the pid only names the holder (a full disk: none)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before the unlock: a waiter then sees a new inode and retries
        os.close(fd)
