"""Small file-system steps that the token store and the master-file cache both need to get right.

Why in one place: a lock file must never be a planted symlink or another
user's file (filelock would lock, or truncate, what it points to), and a rename
is only durable once its directory is fsynced.  Callers turn the two errors
into their own (a token :class:`~.errors.StorageError`, a
:class:`~.errors.MasterFileError`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import LockFileUnavailable, UnsafeDirectory, UnsafeLockFile

#: ``os.open`` failures that mean "this cannot be created here" (a read-only or full disk,
#: a directory we may not write), as opposed to something wrong with what is there.
UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOSPC, errno.EDQUOT})


def create_lock_file(path: Path) -> None:
    """Create ``path`` as a 0600 regular file of ours if missing, without following a symlink or truncating.

    Raises :class:`UnsafeLockFile` or :class:`LockFileUnavailable` with a message
    that says what to do.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeLockFile(
                f"the lock file {path} is a symbolic link; refusing to follow it. Remove it, and check who "
                "can write to that directory"
            ) from None
        if exc.errno in UNWRITABLE_ERRNOS:
            raise LockFileUnavailable(exc.strerror or str(exc)) from None
        raise UnsafeLockFile(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeLockFile(f"the lock file {path} is not a regular file; remove it")
    if info.st_uid != os.geteuid():
        raise UnsafeLockFile(f"the lock file {path} belongs to another user (uid {info.st_uid}); remove it")


def check_private_directory(directory: Path, setting: str) -> None:
    """Refuse ``directory`` if another user (but root) owns it or group or others may write to it.

    There, anyone could plant a file or a symlink where ours goes.  ``OSError``
    when it cannot be inspected; :class:`UnsafeDirectory` saying how to fix it:
    another directory through ``setting``, and ``chmod 700`` only for a directory
    that is plainly the caller's own (see :func:`_yours_to_tighten`), never for a
    shared one such as ``/tmp``, where it would break the machine.
    """
    info = os.stat(directory)
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafeDirectory(
            f"the directory {directory} belongs to another user (uid {info.st_uid}); "
            f"use a directory of your own ({setting})"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        own = f"use a directory of your own that only you can write to ({setting})"
        advice = f"run 'chmod 700 {directory}' if it is yours alone, or {own}" if _yours_to_tighten(info) else own
        raise UnsafeDirectory(
            f"the directory {directory} can be written by other users (mode {stat.filemode(info.st_mode)}); {advice}"
        )


def _yours_to_tighten(info: os.stat_result) -> bool:
    """Whether ``chmod 700`` is safe advice: a non-sticky directory owned by the (non-root) caller.

    A sticky directory is shared on purpose (``/tmp``, ``/var/tmp``, ``/dev/shm``),
    and for root every directory, system ones included, is its own: there the
    advice would break the machine, so only another directory is suggested.
    """
    euid = os.geteuid()
    return euid != 0 and info.st_uid == euid and not info.st_mode & stat.S_ISVTX


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
