"""The budget shared by the processes of one host: a small state file per app key, under ``flock``.

Why not filelock here: an acquire is a few microseconds of work, and filelock
opens and closes its lock file on every acquire.  This keeps one descriptor
per budget open and locks the state file itself with ``flock``: the kernel
drops the lock when its holder dies, so a process killed mid-acquire stalls
nobody.  A stopped (``SIGSTOP``) holder is waited for only up to the caller's
timeout.  A state file removed or replaced under load is noticed under the
lock (lock, then verify the inode) and reopened, with its state carried over:
the host keeps one budget whatever happens to the file.  One ``pwrite`` of a
fixed-size header is the whole update, so a kill cannot leave half a state
behind.

The clock is ``time.monotonic()``: one clock for every process of the host,
immune to wall-clock steps.  Each write records the clock reading and the
kernel's boot id; a state from another boot is discarded, and one written by
a clock ahead of ours (which the monotonic clock of one boot never is) is
moved back onto ours.  Either way it never blocks a call longer than the
backlog it held when written.  No state is discarded for being far ahead, so
every accepted rate, down to :data:`~.budget.MIN_RATE`, is enforced.  (A
directory shared by several hosts, over NFS, is not one host: use Redis.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import math
import os
import stat
import struct
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import LimiterStoreUnavailable, UnsafeDirectory
from ..files import check_private_directory
from ..token.file import ENV_TOKEN_FILE, default_token_path
from ..validation import MAX_SECONDS
from .budget import BUCKET_NAME, RECENT_GRANTS, SharedRateLimiter, Usage, reserve

#: magic, version, ring size, rate, tat, penalty_until, head, written_at, boot id
_HEADER = struct.Struct("<4sHHdddId16s")
_MAGIC = b"KISR"
_VERSION = 2
_RING_OFFSET = 64
_SLOT = struct.Struct("<d")
_EMPTY_RING = bytes(RECENT_GRANTS * _SLOT.size)
#: The grant counter (a 32-bit field) wraps here; a multiple of the ring size, so ring positions do not jump.
_HEAD_WRAP = 2**32
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
#: The longest a pause (after ``EGW00201``) or a read of a budget waits for its state file.
STORE_WAIT = 1.0
#: Backoff between two tries of a lock another process holds (its holder needs microseconds).
_LOCK_FIRST_DELAY = 0.0002
_LOCK_MAX_DELAY = 0.002


@functools.cache
def boot_id() -> bytes:
    """This boot's id (16 bytes): ``time.monotonic()`` readings of another boot mean nothing here.

    All zeros where the kernel does not say (not Linux): only the clock rule applies then.
    """
    try:
        with open(_BOOT_ID_FILE, encoding="ascii") as source:
            return uuid.UUID(source.read().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)


@dataclass(frozen=True)
class _State:
    """A budget's state as read from its header, already on our clock."""

    tat: float = 0.0
    penalty_until: float = 0.0
    head: int = 0
    #: False when the file held no state of ours (new, foreign, another boot): its ring means nothing.
    ours: bool = False


def _pack(rate: float, tat: float, penalty_until: float, head: int, now: float) -> bytes:
    return _HEADER.pack(_MAGIC, _VERSION, RECENT_GRANTS, rate, tat, penalty_until, head, now, boot_id())


def _reason(exc: OSError) -> str:
    """An OS error as a reader wants it: a refusal says "permission denied", whatever errno it had."""
    text = exc.strerror or str(exc)
    return f"permission denied ({text})" if _is_denial(exc) and "permission denied" not in text.lower() else text


def _is_denial(exc: OSError) -> bool:
    return exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def _check_ours(path: Path, info: os.stat_result) -> None:
    """What sits at ``path`` is a state file we may use: not a symlink, a regular file, ours."""
    if stat.S_ISLNK(info.st_mode):
        raise LimiterStoreUnavailable(f"{path} is a symbolic link; refusing to follow it; remove it")
    if not stat.S_ISREG(info.st_mode):
        raise LimiterStoreUnavailable(f"{path} is not a regular file; remove it")
    if info.st_uid != os.geteuid():
        raise LimiterStoreUnavailable(
            f"{path} belongs to another user (uid {info.st_uid}), not to us (uid {os.geteuid()}); remove it"
        )


def _write(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` all of ``data``; a short write (the disk filled up) is an ``OSError`` like any other."""
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _StateFile:
    """One budget's state file as this process holds it.

    Its own guard, so a caller waiting for one budget's ``flock`` (its holder
    stopped) delays no caller of another budget; and the state of a removed or
    replaced file, carried into the new one.
    """

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.fd: int | None = None
        #: (tat, penalty_until) read from a state file that was removed or replaced under us.
        self.carried = (0.0, 0.0)
        #: Closed by whoever holds the guard, when it lets go (a close() came meanwhile).
        self.close_when_done = False

    def close(self) -> None:
        """Close the descriptor; the caller holds the guard, or nobody can (a collected limiter)."""
        fd, self.fd, self.close_when_done = self.fd, None, False
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _close_all(files: dict[str, _StateFile]) -> None:
    """A collected limiter's descriptors (no thread can be using them: none holds the limiter)."""
    for held in list(files.values()):
        held.close()


class FileRateLimiter(SharedRateLimiter):
    """Per-app-key budgets in ``directory``, shared by every process on this host.

    Args:
        directory: where the state files live (``ratelimit.<key id>.<environment>``);
            the file token store puts them beside its token file.
        rate: calls per second; default by environment.

    Every wait of an acquire (this process's guard of the budget, the file's
    ``flock``) ends at the caller's deadline; a pause or a read waits at most
    :data:`STORE_WAIT` seconds.
    """

    backend = "file"
    #: State files are ``<prefix>.<key id>.<environment>``.
    prefix = "ratelimit"

    def __init__(self, directory: str | os.PathLike[str], rate: float | None = None) -> None:
        super().__init__(rate)
        self.directory = Path(directory).expanduser()
        self._files: dict[str, _StateFile] = {}
        self._files_guard = threading.Lock()  # held for dictionary lookups only, never across a wait
        weakref.finalize(self, _close_all, self._files)

    def _after_fork(self) -> None:
        super()._after_fork()
        # The child's copies share the parent's open files, and so their flock: close them, open anew.
        _close_all(self._files)
        self._files.clear()  # in place: the finalizer holds this dictionary
        self._files_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"FileRateLimiter(directory={str(self.directory)!r}, rate={self.rate!r})"

    def describe(self) -> str:
        return f"file {self.directory}"

    def state_path(self, bucket: str) -> Path:
        """The state file of one budget."""
        return self.directory / f"{self.prefix}.{bucket}"

    def buckets(self) -> list[str]:
        """Every budget that has a state file here (for ``kis-token limit``).

        Only files named like ours (``<prefix>.<key id>.<real|mock>``) count: a
        stray file is not a budget.  Raises :class:`LimiterStoreUnavailable` when
        the directory cannot be read: "no budget" would be a lie.
        """
        try:
            names = [entry.name for entry in os.scandir(self.directory)]
        except FileNotFoundError:
            return []  # nothing used yet: the directory is made by the first acquire
        except OSError as exc:
            raise LimiterStoreUnavailable(
                f"cannot list {self.directory}: {exc.strerror or exc}", denied=_is_denial(exc)
            ) from None
        found = (name.removeprefix(f"{self.prefix}.") for name in names if name.startswith(f"{self.prefix}."))
        return sorted(bucket for bucket in found if BUCKET_NAME.fullmatch(bucket))

    def close(self) -> None:
        """Close the state files this process holds open; they are opened again when next used.

        Never waits: a budget a caller is using (it may be waiting for a stopped
        holder's lock) is closed by that caller when it is done with it.  A
        collected limiter closes its files by itself.
        """
        super().close()
        with self._files_guard:
            files = list(self._files.values())
        for held in files:
            if held.guard.acquire(blocking=False):
                try:
                    held.close()
                finally:
                    held.guard.release()
            else:
                held.close_when_done = True

    # ------------------------------------------------------------------ the shared store
    def _shared_reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        deadline = time.monotonic() + max_wait
        with self._failures(bucket), self._locked(bucket, deadline) as locked:
            if locked is None:
                return None  # a holder (stopped?) kept the lock past our deadline
            held, fd = locked
            now = time.monotonic()
            state = self._state(held, fd, now)
            granted = reserve(state.tat, now, 1.0 / rate, max(0.0, deadline - now))
            if granted is None:
                return None
            slot, tat = granted
            if not state.ours:
                _write(fd, _EMPTY_RING, _RING_OFFSET)  # slots of another clock would count as recent
            _write(fd, _SLOT.pack(slot), _RING_OFFSET + (state.head % RECENT_GRANTS) * _SLOT.size)
            _write(fd, _pack(rate, tat, state.penalty_until, (state.head + 1) % _HEAD_WRAP, now), 0)
            held.carried = (0.0, 0.0)
            return slot

    def _shared_penalize(self, bucket: str, seconds: float) -> None:
        with self._failures(bucket), self._locked(bucket, time.monotonic() + STORE_WAIT) as locked:
            if locked is None:
                return  # the lock stayed taken: the pause is skipped, nobody waits on it
            held, fd = locked
            now = time.monotonic()
            state = self._state(held, fd, now)
            if now < state.penalty_until:
                return  # one penalty per window, however many callers saw EGW00201
            if not state.ours:
                _write(fd, _EMPTY_RING, _RING_OFFSET)
            _write(fd, _pack(self._rate_in(fd), max(state.tat, now) + seconds, now + seconds, state.head, now), 0)
            held.carried = (0.0, 0.0)

    def _shared_usage(self, bucket: str, rate: float) -> Usage:
        with self._failures(bucket):
            if not self._opened(bucket) and not os.path.lexists(self.state_path(bucket)):
                return Usage(bucket, rate, 0, 0.0)  # never used: reading it creates nothing
            with self._locked(bucket, time.monotonic() + STORE_WAIT) as locked:
                if locked is None:
                    raise LimiterStoreUnavailable(f"{self.state_path(bucket)} stayed locked for {STORE_WAIT:g} s")
                held, fd = locked
                now = time.monotonic()
                state = self._state(held, fd, now)
                ring = os.pread(fd, len(_EMPTY_RING), _RING_OFFSET) if state.ours else b""
                # Every slot the ring holds (never written ones read as 0.0): the count of grants
                # may have wrapped, the ring positions have not.
                slots = [_SLOT.unpack_from(ring, i * _SLOT.size)[0] for i in range(len(ring) // _SLOT.size)]
                used = sum(1 for slot in slots if now - 1.0 < slot <= now)
                return Usage(bucket, self._rate_in(fd) or rate, used, max(0.0, state.tat - now))

    @contextmanager
    def _failures(self, bucket: str) -> Iterator[None]:
        """Any OS or format failure of the state file (a full disk, an I/O error) makes the store unavailable.

        :class:`LimiterStoreUnavailable` is what takes the documented fallback;
        a raw ``OSError`` would fail every call instead.
        """
        try:
            yield
        except (OSError, struct.error) as exc:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            raise LimiterStoreUnavailable(f"cannot use {self.state_path(bucket)}: {reason}") from None

    # ------------------------------------------------------------------ file handling
    def _held(self, bucket: str) -> _StateFile:
        with self._files_guard:
            held = self._files.get(bucket)
            if held is None:
                held = self._files[bucket] = _StateFile()
            return held

    def _opened(self, bucket: str) -> bool:
        with self._files_guard:
            held = self._files.get(bucket)
        return held is not None and held.fd is not None

    @contextmanager
    def _locked(self, bucket: str, deadline: float) -> Iterator[tuple[_StateFile, int] | None]:
        """The budget's guard and its state file's ``flock``, held; None if not both had by ``deadline``.

        Lock, then verify: the descriptor must still be the file at the path.  A
        state file removed or replaced (a cleanup, a restore) while we held it
        open would otherwise split the host's budget in two, old processes
        counting in the old file and new ones in the new.  On a mismatch the old
        file's state is carried over (:meth:`_state`) and the path reopened.
        """
        held = self._held(bucket)
        if not held.guard.acquire(timeout=max(0.0, min(deadline - time.monotonic(), MAX_SECONDS))):
            yield None
            return
        try:
            path = self.state_path(bucket)
            while True:
                if held.fd is None:
                    held.fd = self._open(path)
                fd = held.fd
                if not self._flock(fd, path, deadline):
                    yield None
                    return
                if self._is_current(fd, path):
                    break
                old = self._read(fd, time.monotonic())
                held.carried = (max(old.tat, held.carried[0]), max(old.penalty_until, held.carried[1]))
                held.fd = None
                os.close(fd)  # drops our flock on the old file too
            try:
                yield held, fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            if held.close_when_done:
                held.close()
            held.guard.release()

    @staticmethod
    def _flock(fd: int, path: Path, deadline: float) -> bool:
        """``flock`` on ``fd``, retried with backoff until ``deadline``; False if not had by then."""
        delay = _LOCK_FIRST_DELAY
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(delay, left))
                delay = min(delay * 2, _LOCK_MAX_DELAY)
            except OSError as exc:
                raise LimiterStoreUnavailable(f"cannot lock {path}: {exc.strerror}") from None

    @staticmethod
    def _is_current(fd: int, path: Path) -> bool:
        """Whether ``fd`` is still the file at ``path`` (not removed, not replaced)."""
        try:
            on_disk = os.lstat(path)
            held = os.fstat(fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LimiterStoreUnavailable(f"cannot check {path}: {exc.strerror}") from None
        return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _state(self, held: _StateFile, fd: int, now: float) -> _State:
        """:meth:`_read`, merged with what a removed or replaced file of this budget held."""
        state = self._read(fd, now)
        carried_tat, carried_penalty = held.carried
        return replace(state, tat=max(state.tat, carried_tat), penalty_until=max(state.penalty_until, carried_penalty))

    def _open(self, path: Path) -> int:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_private_directory(self.directory, ENV_TOKEN_FILE)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except UnsafeDirectory as exc:
            raise LimiterStoreUnavailable(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LimiterStoreUnavailable(f"{path} is a symbolic link; refusing to follow it; remove it") from None
            raise LimiterStoreUnavailable(f"cannot open {path}: {_reason(exc)}", denied=_is_denial(exc)) from None
        try:
            _check_ours(path, os.fstat(fd))
        except LimiterStoreUnavailable:
            os.close(fd)
            raise
        return fd

    def _shared_probe(self, bucket: str, rate: float) -> Usage:
        """For ``kis-token health``: the directory and the budget's state file as an acquire would use them.

        Creates nothing that stays: a missing directory is only looked at (the
        first acquire makes it), a missing state file is stood in for by a
        temporary file the probe removes.
        """
        path = self.state_path(bucket)
        with self._failures(bucket):
            if not self.directory.exists():
                return Usage(bucket, rate, 0, 0.0)
            try:
                check_private_directory(self.directory, ENV_TOKEN_FILE)
            except UnsafeDirectory as exc:
                raise LimiterStoreUnavailable(str(exc)) from None
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                self._probe_directory()
                return Usage(bucket, rate, 0, 0.0)
            _check_ours(path, info)
            try:
                os.close(os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC))
            except OSError as exc:
                raise LimiterStoreUnavailable(f"cannot write {path}: {_reason(exc)}", denied=_is_denial(exc)) from None
        return self._shared_usage(bucket, rate)

    def _probe_directory(self) -> None:
        """Create and remove a file in the directory, as the first acquire of a budget would create one."""
        try:
            fd, name = tempfile.mkstemp(prefix=".ratelimit-probe-", dir=self.directory)
        except OSError as exc:
            raise LimiterStoreUnavailable(
                f"cannot create state files in {self.directory}: {_reason(exc)}", denied=_is_denial(exc)
            ) from None
        os.close(fd)
        os.unlink(name)

    @staticmethod
    def _read(fd: int, now: float) -> _State:
        """The header's state on our clock; a fresh one when it is missing, not ours, or from another boot.

        A state written by a clock ahead of ours (``written_at > now``) is moved
        back by the difference: it keeps the backlog it had when written, and
        never more.
        """
        raw = os.pread(fd, _HEADER.size, 0)
        if len(raw) != _HEADER.size:
            return _State()
        magic, version, ring, _rate, tat, penalty_until, head, written_at, boot = _HEADER.unpack(raw)
        if magic != _MAGIC or version != _VERSION or ring != RECENT_GRANTS or boot != boot_id():
            return _State()
        if not (math.isfinite(tat) and math.isfinite(penalty_until) and math.isfinite(written_at)):
            return _State()
        ahead = max(0.0, written_at - now)
        return _State(tat - ahead, penalty_until - ahead, head, ours=ahead == 0.0)

    @staticmethod
    def _rate_in(fd: int) -> float:
        raw = os.pread(fd, _HEADER.size, 0)
        if len(raw) == _HEADER.size:
            rate = _HEADER.unpack(raw)[3]
            if isinstance(rate, float) and rate > 0:
                return rate
        return 0.0


class HostFallbackLimiter(FileRateLimiter):
    """What the processes of a host share while their Redis budget cannot be reached.

    A state file per budget (``ratelimit-fallback.<key id>.<environment>``) in
    the host's token directory, the file token store's default directory
    (``$KOREA_INVESTMENT_TOKEN_FILE``'s, or ``~/.cache/kis``): every process of
    the host finds it without a setting, so the host as a whole keeps to
    :data:`~.budget.FALLBACK_SHARE` of the budget however many processes it runs.
    Only if this file cannot be used either does each process keep to the share
    alone.
    """

    prefix = "ratelimit-fallback"
    #: Given the host's share already (the Redis limiter reduced the rate): its own fallback spends it whole.
    fallback_share = 1.0

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        super().__init__(default_token_path().parent if directory is None else directory)

    def __repr__(self) -> str:
        return f"HostFallbackLimiter(directory={str(self.directory)!r})"

    def describe(self) -> str:
        return f"file {self.directory} (this host's fallback)"
