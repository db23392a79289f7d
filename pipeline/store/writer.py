"""The one writer: every file and folder curvlab produces changes as a whole or not at all.

Files: ``write_atomic(path, write)`` lets ``write`` fill a temp file in the same folder, flushes
it to disk (fsync), then ``os.replace``s it over ``path`` and fsyncs the folder; the typed
helpers (``write_text``, ``write_json``, ``write_csv``, ``write_npz``, ``write_bytes``) build on
it, and ``write_group`` puts several files in place only after all of them were written.

Folders: ``replace_dir(dest, carry=...)`` yields a fresh temporary sibling ``.<name>.new-…``;
when the block ends normally its files are fsynced, the entries of the old folder named by
``carry`` are hard-linked (or copied) in, and the new folder is swapped in with one
``renameat2(RENAME_EXCHANGE)`` (two renames where the file system lacks it); the old folder is
deleted only after that. On any exception (disk full, permission denied, Ctrl-C, SIGTERM) the
sibling is deleted and ``dest`` is left byte-identical. The new folder gets the mode, owner and
extended attributes (POSIX ACLs) of the one it replaces; a ``dest`` that is or holds a mount
point, a FIFO, a socket or a device is refused before anything is written
(``pipeline.store.tree``), and nothing but regular files is ever opened.

A file is never written in place: an output that is a link into DVC's cache (``cache.type``
hardlink or symlink, made read-only by DVC) is replaced by a new file, and the cached copy keeps
its bytes.

Temporary names carry the writer's pid (``.<name>.<pid>-<random>.tmp``, ``.<name>.new-<pid>-…``);
``clean_stale_temps(folder)`` deletes those of dead processes (SIGKILL, power loss) and runs on
every write into a folder and in ``check_writable`` (a stage's first check).

An ``OSError`` while writing (no space, read-only file system, permission denied) becomes a
``WriteError`` — a one-line ``CurvlabError`` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import errno
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Container, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import CurvlabError
from pipeline.store.tree import check_tree, copy_folder_meta, remove_tree

_UMASK = os.umask(0)
os.umask(_UMASK)
_RENAME_EXCHANGE = 2
_NEW, _OLD = ".new-", ".old-"
_STALE = re.compile(r"\.(?P<name>.+?)(?:\.(?P<kind>new|old)-(?P<pid>\d+)-.+"
                    r"|\.(?P<fpid>\d+)-[^.]+\.tmp)")


class WriteError(CurvlabError):
    """A file or folder could not be written (no space, read-only, permission denied)."""


def _hint(err: OSError) -> str:
    if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
        return "free some disk space and rerun"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "make it writable (chmod u+w) or point paths.* at a writable folder"
    if err.errno == errno.EROFS:
        return "the file system is read-only; point paths.* at a writable folder"
    return "check the folder exists and is writable, then rerun"


def write_error(path: Path | str, err: OSError) -> WriteError:
    """The one-line error for an OSError while writing ``path``."""
    reason = err.strerror or type(err).__name__
    return WriteError(f"cannot write {path}: {reason}; nothing was changed ({_hint(err)})")


@contextlib.contextmanager
def _translate(path: Path | str) -> Iterator[None]:
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise write_error(path, err) from None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    """fsync a regular file (anything else is skipped: opening a FIFO would block)."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- files


def _temp_beside(path: Path) -> Path:
    prefix = f".{path.name}.{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give it a normal file's mode
    return Path(tmp)


def write_atomic(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then ``os.replace`` it into
    place."""
    write_group({Path(path): write})


def write_group(writers: Mapping[Path, Callable[[Path], None]]) -> None:
    """Write every file to a temp beside it first; only when all succeeded, replace them in
    order."""
    temps: dict[Path, Path] = {}
    current: Path | None = None
    try:
        for path, write in writers.items():
            current = Path(path)
            with _translate(current):
                current.parent.mkdir(parents=True, exist_ok=True)
                clean_stale_temps(current.parent)
                tmp = _temp_beside(current)
                temps[current] = tmp
                write(tmp)
                _fsync_file(tmp)
        for path, tmp in temps.items():
            current = path
            with _translate(path):
                os.replace(tmp, path)
        for parent in {p.parent for p in temps}:
            _fsync_dir(parent)
    finally:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def json_safe(obj: Any) -> Any:
    """NaN/inf → null and numpy scalars/arrays → Python (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(data: Any) -> str:
    """Strict, indented JSON text (non-finite floats as null) ending in a newline."""
    return json.dumps(json_safe(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_bytes(path: Path | str, data: bytes) -> None:
    """Bytes, atomically."""
    write_atomic(path, lambda t: t.write_bytes(data))


def write_text(path: Path | str, text: str) -> None:
    """A UTF-8 text file, atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, data: Any) -> None:
    """Strict JSON (non-finite floats written as null), atomically."""
    write_text(path, json_text(data))


def csv_text(columns: Mapping[str, np.ndarray]) -> str:
    """Equal-length columns as CSV text with a header row (floats in repr precision)."""
    names = list(columns)
    arrays = [np.asarray(columns[n]).ravel() for n in names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    w.writerows(zip(*(a.tolist() for a in arrays), strict=True))
    return buf.getvalue()


def write_csv(path: Path | str, columns: Mapping[str, np.ndarray]) -> None:
    """Equal-length columns as CSV with a header row, atomically."""
    write_text(path, csv_text(columns))


def npz_writer(arrays: Mapping[str, np.ndarray],
               deflate: Container[str] = ()) -> Callable[[Path], None]:
    """A ``write(tmp)`` function saving arrays as an ``.npz`` (no pickles), uncompressed except the
    members named in ``deflate`` (zlib level 1: fast; fixed zip timestamps, so the same bytes)."""

    def _w(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez adds no suffix
            if not deflate:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
                return
            with zipfile.ZipFile(fh, mode="w", allowZip64=True, compresslevel=1) as zf:
                for k, v in arrays.items():
                    # each member is dated 1980-01-01 (ZipInfo's default), as np.savez does
                    deflated = k in deflate
                    zf.compression = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
                    with zf.open(f"{k}.npy", "w", force_zip64=True) as out:
                        np.lib.format.write_array(out, np.asarray(v), allow_pickle=False)

    return _w


def write_npz(path: Path | str, arrays: Mapping[str, np.ndarray]) -> None:
    """Arrays as an uncompressed ``.npz`` (no pickles), atomically."""
    write_atomic(path, npz_writer(arrays))


# ---------------------------------------------------------------- folders


def _libc_renameat2() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if
    unsupported."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(dest: Path) -> None:
    """Delete temporary siblings of ``dest`` left by a killed process (``clean_stale_temps``)."""
    clean_stale_temps(dest.parent)


def clean_stale_temps(folder: Path) -> None:
    """Delete the temporary files and folders of dead writers in ``folder`` (SIGKILL, power loss).

    A leftover ``.old-`` sibling while its folder itself is missing is the previous folder of a
    swap that was cut between its two renames: it is moved back instead.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _STALE.fullmatch(name)
        if m is None or _pid_alive(int(m["pid"] or m["fpid"])):
            continue
        p, dest = folder / name, folder / m["name"]
        with contextlib.suppress(OSError):
            if m["fpid"]:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    os.unlink(p)
            elif m["kind"] == "old" and not os.path.lexists(dest):
                os.rename(p, dest)
            else:
                remove_tree(p)


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst`` with hard links (copies across devices / where links fail)."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError as err:
        if err.errno == errno.EXDEV or not stat.S_ISREG(os.lstat(src).st_mode):
            raise  # never copy across file systems, never open a special file
        shutil.copy2(src, dst)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            _fsync_file(Path(dirpath) / f)
        _fsync_dir(Path(dirpath))


def _swap_in(new: Path, dest: Path) -> Path | None:
    """Put ``new`` at ``dest``; returns where the old folder now is (to delete), or None."""
    while True:
        if not dest.exists():
            try:
                os.rename(new, dest)  # fails if dest appeared meanwhile (non-empty) -> retry
                return None
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue
        if exchange(new, dest):
            return new
        old = dest.with_name(f".{dest.name}{_OLD}{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(dest, old)
        try:
            os.rename(new, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        return old


@contextlib.contextmanager
def replace_dir(
    dest: Path | str, carry: Container[str] | Callable[[str], bool] = ()
) -> Iterator[Path]:
    """Yield an empty sibling folder to fill; on success swap it in for ``dest`` as a whole.

    ``carry``: names (or a predicate on names) of entries of the current ``dest`` to keep in the
    new folder unless the block wrote them itself (linked in at the swap, so the current ones).
    On an exception nothing of ``dest`` changes and the sibling is removed.
    """
    dest = Path(dest).absolute()
    keep = carry if callable(carry) else (lambda n: n in carry)  # type: ignore[operator]
    with _translate(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        check_tree(dest)
        clean_stale_temps(dest.parent)
        new = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_NEW}{os.getpid()}-", dir=dest.parent))
    old: Path | None = None
    try:
        with _translate(dest):
            if dest.is_dir() and not dest.is_symlink():
                copy_folder_meta(dest, new)  # before the block: new files inherit its default ACL
            else:
                os.chmod(new, 0o777 & ~_UMASK)
        yield new
        with _translate(dest):
            check_tree(dest)
            if dest.is_dir():
                for entry in sorted(os.listdir(dest)):
                    if keep(entry) and not os.path.lexists(new / entry):
                        _link_tree(dest / entry, new / entry)
            elif dest.exists():
                raise WriteError(f"{dest} exists and is not a folder; move it away and rerun")
            _fsync_tree(new)
            old = _swap_in(new, dest)
            _fsync_dir(dest.parent)
    finally:
        for leftover in (new, old):
            if leftover is not None and os.path.lexists(leftover):
                remove_tree(leftover)


def check_writable(dest: Path | str) -> None:
    """Fail early (a WriteError / TreeError) when ``dest`` could not be created or replaced;
    creates nothing, and deletes the temporaries of dead writers beside ``dest``.

    Probes the nearest existing folder on the way to ``dest`` with a temporary sibling.
    """
    dest = Path(dest).absolute()
    with _translate(dest):
        check_tree(dest)
        base = dest.parent
        while not base.exists() and base != base.parent:
            base = base.parent
        clean_stale_temps(base)
        probe = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_NEW}{os.getpid()}-", dir=base))
        probe.rmdir()
        # a file is replaced by a rename, never opened: a read-only file (DVC's protected link
        # into its cache) needs only a writable folder, which the probe showed
        if (dest.is_dir() and not dest.is_symlink()
                and not os.access(dest, os.W_OK | os.X_OK)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dest))


def update_dir(dest: Path | str, files: Mapping[str, Callable[[Path], None]],
               drop: Container[str] = ()) -> None:
    """Add/replace ``files`` (name → ``write(path)``) in ``dest`` and remove ``drop``, as one
    swap."""
    names = set(files)
    with replace_dir(dest, carry=lambda n: n not in names and n not in drop) as new:
        for name, write in files.items():
            with _translate(Path(dest) / name):
                write(new / name)
