"""What a folder swap may touch: one file system, and only regular files, folders and symlinks.

``check_tree(dest)`` walks a folder with ``os.lstat`` only (it opens nothing) and refuses, with one
line naming the entry, a mount point anywhere in it (a swap would copy the mounted files into a
plain folder and then delete them from the mounted file system) and any FIFO, socket or device
(opening a FIFO blocks until a writer appears). ``copy_folder_meta`` gives a new folder the mode,
owner and extended attributes (POSIX ACLs included) of the folder it replaces; ``remove_tree``
deletes a folder without ever descending into another file system.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from pipeline.core.errors import CurvlabError

ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}
_NO_XATTR = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.ENOSYS)


class TreeError(CurvlabError):
    """A folder holds what a swap must not touch (a mount point, a FIFO, a socket, a device)."""


def special_kind(mode: int) -> str | None:
    """'a FIFO' / 'a socket' / 'a … device' for a special file's ``st_mode``; None for a regular
    file, folder or symlink."""
    return _KINDS.get(stat.S_IFMT(mode))


def is_mount_point(path: Path) -> bool:
    """``path`` is a folder on another file system than its parent (st_dev differs) or a mount
    point by ``os.path.ismount``."""
    try:
        st, up = os.lstat(path), os.lstat(path.parent)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and (st.st_dev != up.st_dev or os.path.ismount(path))


def check_tree(dest: Path, what: str = "replace") -> None:
    """Refuse (TreeError) a ``dest`` that is or holds a mount point, or holds a FIFO, socket or
    device."""
    if not dest.is_dir() or dest.is_symlink():
        return
    if is_mount_point(dest):
        raise TreeError(f"cannot {what} {dest}: it is a mount point (another file system); "
                        "point paths.* at a folder inside it, or unmount it, and rerun")
    dev = os.lstat(dest).st_dev
    for dirpath, dirs, files in os.walk(dest):
        for name in [*dirs, *files]:
            p = Path(dirpath) / name
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and (st.st_dev != dev or os.path.ismount(p)):
                raise TreeError(f"cannot {what} {dest}: {p} is a mount point (another file "
                                "system); unmount it or move it out of the folder, and rerun")
            kind = special_kind(st.st_mode)
            if kind:
                raise TreeError(f"cannot {what} {dest}: {p} is {kind}, not a regular file or "
                                "folder; move it out of the folder and rerun")


def copy_folder_meta(src: Path, dst: Path) -> None:
    """Give ``dst`` the owner, extended attributes (POSIX ACLs) and mode of the folder ``src``."""
    st = os.lstat(src)
    if (st.st_uid, st.st_gid) != (os.lstat(dst).st_uid, os.lstat(dst).st_gid):
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    _copy_xattrs(src, dst)
    os.chmod(dst, stat.S_IMODE(st.st_mode))  # after the ACL: the mode sets its mask entry


def _copy_xattrs(src: Path, dst: Path) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as err:
        if err.errno in _NO_XATTR:
            return
        raise
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
        except OSError as err:  # security.* / trusted.* may be the kernel's alone to set
            if name in ACL_XATTRS or err.errno not in (*_NO_XATTR, errno.EPERM, errno.EACCES):
                raise
    for name in ACL_XATTRS:  # an ACL the new folder inherited from its parent, not the old one
        if name not in names:
            with contextlib.suppress(OSError):
                os.removexattr(dst, name, follow_symlinks=False)


def remove_tree(path: Path) -> None:
    """Delete ``path`` and what it holds, never entering another file system (best effort)."""
    try:
        dev = os.lstat(path).st_dev
    except OSError:
        return
    _remove(path, dev)


def _remove(path: Path | str, dev: int) -> None:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        if st.st_dev != dev or os.path.ismount(path):
            return  # a mount point: the mounted files are not ours to delete
        with os.scandir(path) as it:
            entries = [e.path for e in it]
        for entry in entries:
            _remove(entry, dev)
        os.rmdir(path)
