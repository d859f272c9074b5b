"""``FileTokenStorage``: the default store, safe across processes on one host.

- Cross-process single flight: :mod:`filelock` on a lock file per app key
  beside the token file (``token.key.<key id>.lock``), so accounts never queue
  behind each other; a second, short lock (``token.key.lock``) guards only the
  read-modify-write of the shared file.  Lock files are never deleted
  (deleting one lets two holders lock two inodes), are created by us without
  following symlinks or truncating, and must be regular files we own.
- The token directory must not be writable by others: there a planted file or
  symlink could stand in for ours.  One that cannot exist at all (read-only
  disk) falls back to coordinating this process only, tokens kept in memory.
- Writes go to a temp file in the same directory, are fsynced, then
  ``os.replace``-d over the token file, so readers never see a torn file and
  never need the lock.
- JSON, one entry per app key, so a real and a mock key do not evict each
  other; a keyed fingerprint replaces the app secret.
- Damaged, hostile or legacy files never crash the caller: they read as "no
  token" (with a warning) and are replaced on the next save.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import (
    ConfigurationError,
    LockFileUnavailable,
    StorageError,
    TokenWaitTimeout,
    Uncoordinated,
    UnsafeDirectory,
    UnsafeLockFile,
)
from ..files import (
    check_private_directory,
    create_lock_file,
    fsync_directory,
)
from .credentials import Credentials
from .lease import ISSUE, Acquired, HeldLease, IssuanceLease, LongWait, SaveOutcome, check_purpose
from .legacy import load_plain_pickle, looks_like_pickle
from .record import TokenRecord, key_id, token_digest
from .status import StorageDescription, StorageHealth
from .storage import RecordTokenStorage, key_lock

logger = logging.getLogger(__name__)

ENV_TOKEN_FILE = "KOREA_INVESTMENT_TOKEN_FILE"
DEFAULT_TOKEN_FILE = Path("~/.cache/kis/token.key")
FILE_FORMAT = "korea-investment-stock/tokens"
FILE_VERSION = 1
#: Token files are a few hundred bytes per key; anything this large is not ours.
MAX_FILE_BYTES = 1 << 20
#: How often a waiting process re-checks the lock and the token file.  Waiting
#: processes stop as soon as the file changes, so this bounds their latency.
LOCK_POLL_INTERVAL = 0.002

#: Characters of the app key's id in its lock file's name: enough to never collide.
LOCK_ID_CHARS = 16

#: Tokens this process could not write to disk (read-only directory, full disk), per
#: token file (real path), shared by every instance: a second client built in a
#: read-only deployment must reuse the token, not issue again (KIS would answer
#: EGW00133 for a minute).  Entries change under :func:`~.storage.key_lock`.
_UNSAVED: dict[str, dict[str, TokenRecord]] = {}


@dataclass
class _Snapshot:
    """What one read of the token file found."""

    records: dict[str, TokenRecord] = field(default_factory=dict)
    #: Per app key id: digests of tokens found dead (compare-and-delete) -> when they would expire.
    dead: dict[str, dict[str, float]] = field(default_factory=dict)
    legacy: bool = False
    problem: str | None = None

    def is_dead(self, record: TokenRecord) -> bool:
        """True when ``record``'s token was found dead: no save may store it again."""
        return token_digest(record.access_token) in self.dead.get(key_id(record.api_key), {})

    def bury(self, record: TokenRecord) -> None:
        """Remember ``record``'s token as dead for as long as it could live."""
        self.dead.setdefault(key_id(record.api_key), {})[token_digest(record.access_token)] = record.expires_at

    def live_tombstones(self, now: float) -> dict[str, dict[str, float]]:
        """The tombstones of tokens that have not expired yet (the others can never be stored anyway)."""
        kept = {ident: {d: t for d, t in graves.items() if t > now} for ident, graves in self.dead.items()}
        return {ident: graves for ident, graves in kept.items() if graves}


def default_token_path() -> Path:
    """``$KOREA_INVESTMENT_TOKEN_FILE`` or ``~/.cache/kis/token.key`` (the 0.6.x path)."""
    configured = os.environ.get(ENV_TOKEN_FILE)
    return Path(configured or DEFAULT_TOKEN_FILE).expanduser()


def _refuse_a_directory(path: Path, raw: str | bytes, source: str) -> None:
    """A token path must name a file: a directory (or ``.../``) could never be saved to.

    Every save would fail and every process would issue its own token, with
    only a warning per read; so it is refused here, naming ``source`` (the
    argument or the variable the path ``raw`` came from).
    """
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    planted_link = path.is_symlink()  # never followed: read as "no token" and replaced by the next save
    if not ((path.is_dir() and not planted_link) or text.endswith(("/", os.sep))):
        return
    raise ConfigurationError(
        f"the token file {path} is a directory; {source} must name a file, e.g. {path / DEFAULT_TOKEN_FILE.name}"
    )


class FileTokenStorage(RecordTokenStorage):
    """Tokens in one JSON file, shared safely by every process on this host.

    Args:
        file_path: the token file; default ``$KOREA_INVESTMENT_TOKEN_FILE`` or
            ``~/.cache/kis/token.key``.  The lock lives beside it as ``<name>.lock``.
        refresh_margin: see :class:`TokenStorage`.
        issue_deadline: see :class:`TokenStorage`.
        wait_timeout: see :class:`TokenStorage`.
        outage_allowance: see :class:`TokenStorage`.
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str] | None = None,
        *,
        refresh_margin: float | None = None,
        issue_deadline: float | None = None,
        wait_timeout: float | None = None,
        outage_allowance: float | None = None,
    ) -> None:
        super().__init__(
            refresh_margin=refresh_margin,
            issue_deadline=issue_deadline,
            wait_timeout=wait_timeout,
            outage_allowance=outage_allowance,
        )
        self.file_path = Path(file_path).expanduser() if file_path is not None else default_token_path()
        if file_path is not None:
            _refuse_a_directory(self.file_path, os.fspath(file_path), "file_path=")
        else:
            _refuse_a_directory(self.file_path, os.environ.get(ENV_TOKEN_FILE) or "", ENV_TOKEN_FILE)
        #: The write lock: held only around one read-modify-write of the token file.
        self.lock_path = self.file_path.with_name(self.file_path.name + ".lock")
        # Resolved once: every read keys its flight and outage state by it, and realpath costs
        # a few syscalls per path component.
        real_path = os.path.realpath(self.file_path)
        self._scope: Hashable = ("file", real_path)
        self._locks: dict[Path, FileLock] = {}
        self._lock_pid = os.getpid()
        self._directory_checked = False
        # Tokens this process could not write to disk, shared with other instances on this file.
        self._memory: dict[str, TokenRecord] = _UNSAVED.setdefault(real_path, {})

    def __repr__(self) -> str:
        return f"FileTokenStorage(file_path={str(self.file_path)!r})"

    @property
    def token_file(self) -> Path:
        """The token file (0.6.1's name for :attr:`file_path`)."""
        return self.file_path

    def issuance_lock_path(self, api_key: str) -> Path:
        """The lock file held while a token for ``api_key`` is being issued."""
        return self.file_path.with_name(f"{self.file_path.name}.{key_id(api_key)[:LOCK_ID_CHARS]}.lock")

    def lock_beside(self, name: str) -> FileLock:
        """The store's lock on a file ``name`` beside the token file, for a short read-modify-write.

        Created as the token file's own locks are (ours, 0600, no symlink followed, never
        deleted); the real-time room keeps its shared state under one.
        """
        self._ensure_directory()
        return self._safe_lock(self.file_path.with_name(name))

    def lease_lock_path(self, api_key: str, purpose: str) -> Path:
        """The lock file of ``api_key``'s lease for ``purpose``: the issuance lock, or ``….<purpose>.lock``."""
        if check_purpose(purpose) == ISSUE:
            return self.issuance_lock_path(api_key)
        return self.file_path.with_name(f"{self.file_path.name}.{key_id(api_key)[:LOCK_ID_CHARS]}.{purpose}.lock")

    def purpose_lease(self, api_key: str, purpose: str) -> FileHeldLease:
        """A long-lived hold of ``api_key``'s lease for ``purpose`` (see :class:`~.lease.HeldLease`).

        The same kind of lock as the token issuer's (:meth:`issuance_lock_path`), on the purpose's
        own lock file beside the token file.
        """
        return FileHeldLease(self, api_key, purpose)

    def _lock_for(self, path: Path) -> FileLock:
        """This process's lock object for ``path``.

        filelock refuses a lock object inherited across ``fork``, and a
        pre-fork server (gunicorn ``--preload``, a prefork pool) builds its
        storage before forking, so each process makes its own.  Two threads of
        a new child may both make one; that is harmless, as every caller
        releases the very object it acquired, and two lock objects on one path
        exclude each other as two processes do.
        """
        if self._lock_pid != os.getpid():
            self._locks = {}
            self._lock_pid = os.getpid()
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = FileLock(str(path), mode=0o600)
        return lock

    # ------------------------------------------------------------------ 0.6.x API
    def save_token(self, token_data: dict[str, Any]) -> bool:
        """Store a 0.6.x-shaped token dict; False if it could only be kept in memory."""
        record = TokenRecord.from_legacy_dict(token_data)
        with self._locked():
            return self._store(record) is SaveOutcome.STORED

    def describe(self) -> StorageDescription:
        """``file`` and the token file's path."""
        return StorageDescription("file", str(self.file_path))

    def health_check(self) -> StorageHealth:
        """Time one read of the token file, and check that its directory can be written."""
        location = str(self.file_path)
        started = time.perf_counter()
        snapshot = self._read_file()
        rtt = (time.perf_counter() - started) * 1000.0
        probe_dir = self.file_path.parent
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent  # the directory is created on first save, inside this one
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            return StorageHealth(False, rtt, location, error=f"directory {probe_dir} is not writable")
        if snapshot.problem:
            return StorageHealth(False, rtt, location, error=snapshot.problem)
        if not self.file_path.exists():
            return StorageHealth(True, rtt, location, detail="no token file yet (created on first issuance)")
        count = len(snapshot.records)
        return StorageHealth(True, rtt, location, detail=f"readable, {count} app key{'s' if count != 1 else ''}")

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        """Remove this app key's entry; other keys' entries stay."""
        del api_secret  # the entry is the app key's, whichever secret asks
        with self._locked():
            return self._remove(api_key, None)

    # ------------------------------------------------------------------ the hooks
    def _flight_scope(self) -> Hashable:
        return self._scope

    def _read_record(self, credentials: Credentials) -> TokenRecord | None:
        ident = key_id(credentials.api_key)
        snapshot = self._read_file()
        if snapshot.legacy:
            self._migrate_legacy()
        candidates = [r for r in (snapshot.records.get(ident), self._memory.get(ident)) if r is not None]
        matching = [r for r in candidates if r.belongs_to(credentials.api_key, credentials.fingerprint)]
        return max(matching, key=lambda r: r.expires_at, default=None)

    def _new_lease(self, credentials: Credentials) -> IssuanceLease:
        return FileLease(self, credentials)

    def _compare_and_delete(self, credentials: Credentials, access_token: str) -> bool:
        with self._locked():
            return self._remove(credentials.api_key, access_token)

    # ---------------------------------------------------------------- internals
    def _locked(self) -> Any:
        """The write lock as a context manager, or a no-op when it cannot be created."""
        try:
            self._ensure_directory()
            lock = self._safe_lock(self.lock_path)
            return lock.acquire(timeout=self.wait_timeout, poll_interval=LOCK_POLL_INTERVAL)
        except Timeout:
            raise TokenWaitTimeout(
                f"waited {self.wait_timeout:.0f}s for the lock {self.lock_path}; "
                "retry, or look for a process stuck while holding it"
            ) from None
        except Uncoordinated as exc:
            self._warn_once("lock", "cannot use the lock file %s (%s)", self.lock_path, exc)
            return contextlib.nullcontext()

    def _safe_lock(self, path: Path, *, own: bool = False) -> FileLock:
        """The lock object for ``path``, once the file is known to be a regular file of ours.

        We create the file ourselves (``O_NOFOLLOW``, no ``O_TRUNC``, 0600)
        before filelock opens it, so a symlink planted at the path can neither
        redirect the lock nor truncate its target.  :class:`Uncoordinated`
        when the file cannot be created at all (read-only disk).  ``own``: a
        new object of the caller's alone, usable from any thread (a held lease
        is asked from several), never the process's shared, reentrant one.
        """
        try:
            create_lock_file(path)
        except LockFileUnavailable as exc:
            raise Uncoordinated(str(exc)) from None
        except UnsafeLockFile as exc:
            raise StorageError(str(exc)) from None
        if own:
            return FileLock(str(path), mode=0o600, thread_local=False)
        return self._lock_for(path)

    def _store(self, record: TokenRecord) -> SaveOutcome:
        """Write ``record`` beside the other keys' entries (caller holds the lock).

        REFUSED for a token found dead; LOCAL when the disk refused it and this
        process keeps it in memory.
        """
        ident = key_id(record.api_key)
        snapshot = self._read_file()
        if snapshot.is_dead(record):
            logger.info("not storing a token that was found dead (a delayed save of an invalidated token)")
            return SaveOutcome.REFUSED
        snapshot.records[ident] = record
        saved = self._write_file(snapshot)
        with key_lock(self._flight_scope(), record.api_key):
            if saved:
                self._memory.pop(ident, None)
            else:
                self._memory[ident] = record
        return SaveOutcome.STORED if saved else SaveOutcome.LOCAL

    def _remove(self, api_key: str, only_token: str | None) -> bool:
        """Drop this key's entry, if ``only_token`` is None or still stored (lock held)."""
        ident = key_id(api_key)
        removed = False
        with key_lock(self._flight_scope(), api_key):
            held = self._memory.get(ident)
            if held is not None and only_token in (None, held.access_token):
                del self._memory[ident]
                removed = True
        snapshot = self._read_file()
        stored = snapshot.records.get(ident)
        if stored is not None and only_token in (None, stored.access_token):
            del snapshot.records[ident]
            if only_token is not None:  # compare-and-delete: found dead, never to come back
                snapshot.bury(stored)
            self._write_file(snapshot)
            removed = True
        return removed

    def _migrate_legacy(self) -> None:
        """Rewrite a 0.6.0 pickle as JSON now, so the plaintext secret leaves the disk."""
        try:
            self._ensure_directory()
            acquired = self._safe_lock(self.lock_path).acquire(timeout=0, poll_interval=LOCK_POLL_INTERVAL)
        except (Timeout, OSError, StorageError):
            return  # somebody else is writing, or we cannot: the next save migrates it
        with acquired:
            snapshot = self._read_file()
            if snapshot.legacy and self._write_file(snapshot):
                logger.info("migrated legacy pickle token file %s to JSON", self.file_path)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.file_path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _ensure_directory(self) -> None:
        """Create the token directory (0700) if needed, and refuse one that others can write to.

        :class:`Uncoordinated` when it cannot be created: the caller falls back
        to this process only, as on a read-only disk.
        """
        directory = self.file_path.parent
        if self._directory_checked and directory.is_dir():
            return  # checked once; a directory removed since is created again below
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            if not directory.is_dir():
                raise Uncoordinated(f"cannot create the token directory {directory}: {exc.strerror or exc}") from None
        self._check_directory_once()

    def _check_directory_once(self) -> None:
        """:func:`check_directory` the first time the directory exists; a missing one has nothing to trust."""
        if self._directory_checked:
            return
        try:
            check_directory(self.file_path.parent)  # a directory replaced later is checked on the slow path
        except Uncoordinated:
            return
        self._directory_checked = True

    def _read_file(self) -> _Snapshot:
        """Parse the token file; any problem reads as "no tokens" plus a warning."""
        self._check_directory_once()
        # O_NONBLOCK: opening a FIFO planted at the path must not wait for a writer forever.
        flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.file_path, flags)
        except FileNotFoundError:
            return _Snapshot()
        except OSError as exc:
            problem = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            return self._damaged(problem)
        try:
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):  # a directory, FIFO, device...
                    return self._damaged("it is not a regular file")
                # Ask for the size fstat reports, not the cap: a 1 MiB read buffer costs more
                # than the whole rest of the fast path.  More data than that (a file that grew,
                # a size that lied) is read on, up to the cap, as before.
                data = handle.read(min(info.st_size, MAX_FILE_BYTES) + 1)
                if len(data) > info.st_size:
                    data += handle.read(MAX_FILE_BYTES + 1 - len(data))
        except OSError as exc:
            return self._damaged(exc.strerror or str(exc))
        if len(data) > MAX_FILE_BYTES:
            return self._damaged(f"it is larger than {MAX_FILE_BYTES} bytes")
        if not data.strip():
            return self._damaged("it is empty")
        if looks_like_pickle(data):
            return self._parse_legacy(data)
        return self._parse_json(data)

    def _parse_json(self, data: bytes) -> _Snapshot:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            return self._damaged("it is not valid JSON")
        if not isinstance(document, Mapping) or document.get("format") != FILE_FORMAT:
            return self._damaged("it is not a korea-investment-stock token file")
        entries = document.get("tokens")
        if not isinstance(entries, Mapping):
            return self._damaged("its 'tokens' field is not an object")
        snapshot = _Snapshot(dead=_tombstones(document.get("dead")))
        for ident, entry in entries.items():
            try:
                record = TokenRecord.from_json(entry)
            except ValueError as exc:
                snapshot.problem = f"entry {str(ident)[:16]!r}: {exc}"
                continue
            if ident == key_id(record.api_key):
                snapshot.records[ident] = record
        if snapshot.problem:
            self._warn_once(snapshot.problem, "ignoring a damaged entry in %s (%s)", self.file_path, snapshot.problem)
        return snapshot

    def _parse_legacy(self, data: bytes) -> _Snapshot:
        try:
            loaded = load_plain_pickle(data)
            if not isinstance(loaded, Mapping):
                raise ValueError("not a dict")
            record = TokenRecord.from_legacy_dict(loaded)
        except ValueError:
            return self._damaged("it is a pickle that is not a 0.6.x token")
        return _Snapshot(records={key_id(record.api_key): record}, legacy=True)

    def _damaged(self, problem: str) -> _Snapshot:
        self._warn_once(
            problem,
            "ignoring token file %s: %s; it will be replaced on the next save",
            self.file_path,
            problem,
        )
        return _Snapshot(problem=problem)

    def _write_file(self, snapshot: _Snapshot) -> bool:
        """Atomically replace the token file with ``snapshot``; False (with a warning) if the disk refuses."""
        document: dict[str, Any] = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "tokens": {ident: record.to_json() for ident, record in sorted(snapshot.records.items())},
        }
        dead = snapshot.live_tombstones(time.time())
        if dead:
            document["dead"] = dead
        payload = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
        directory = self.file_path.parent
        temp_path: str | None = None
        try:
            self._ensure_directory()
            fd, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{self.file_path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_path, self.file_path)
            temp_path = None
            fsync_directory(directory)
        except (OSError, StorageError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._warn_once(
                "write", "cannot write token file %s (%s); keeping the token in memory", self.file_path, reason
            )
            return False
        finally:
            if temp_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp_path)
        self._problem_solved("write")
        return True


def check_directory(directory: Path) -> None:
    """Refuse a token directory that another user owns or that group or others may write to."""
    try:
        check_private_directory(directory, ENV_TOKEN_FILE)
    except OSError as exc:
        raise Uncoordinated(f"cannot inspect the token directory {directory}: {exc.strerror or exc}") from None
    except UnsafeDirectory as exc:
        raise StorageError(f"refusing the token directory: {exc}") from None


def _tombstones(value: object) -> dict[str, dict[str, float]]:
    """The ``dead`` field of a token file: ``{key id: {token digest: expiry}}``; anything else is none."""
    if not isinstance(value, Mapping):
        return {}
    dead: dict[str, dict[str, float]] = {}
    for ident, graves in value.items():
        if isinstance(ident, str) and isinstance(graves, Mapping):
            dead[ident] = {
                str(digest): float(expiry)
                for digest, expiry in graves.items()
                if isinstance(expiry, int | float) and not isinstance(expiry, bool) and math.isfinite(expiry)
            }
    return dead


class FileLease(IssuanceLease):
    """The issuance lease of the file store: this app key's lock file, held with filelock.

    A kernel lock cannot be lost while its process lives, and it is released
    when the process dies, so :meth:`held` needs no I/O.  Where the lock file
    cannot exist (read-only disk) the lease coordinates this process only.
    """

    def __init__(self, storage: FileTokenStorage, credentials: Credentials) -> None:
        super().__init__(credentials)
        self._storage = storage
        self._lock: FileLock | None = None

    def acquire(self, deadline: float) -> Acquired:
        storage = self._storage
        path = storage.issuance_lock_path(self.credentials.api_key)
        try:
            storage._ensure_directory()
            lock = storage._safe_lock(path)
        except Uncoordinated as exc:
            storage._warn_once("lock", "cannot use the lock file %s (%s); only this process is coordinated", path, exc)
            self.taken = True
            return Acquired.HELD
        seen = storage._signature()
        long_wait = LongWait(f"another process (lock {path})", deadline)

        def file_changed() -> bool:  # asked at every poll of the lock
            long_wait.tick()
            return storage._signature() != seen

        self.taken = True  # from here the lock may be ours: the with block releases it
        self._lock = lock  # before acquire: an interrupt right after it must still release it
        try:
            lock.acquire(
                timeout=max(0.0, deadline - time.monotonic()),
                poll_interval=LOCK_POLL_INTERVAL,
                cancel_check=file_changed,
            )
        except Timeout:
            self.taken = False
            self._lock = None
            if file_changed():
                return Acquired.LOOK_AGAIN
            raise TokenWaitTimeout(
                f"waited {storage.wait_timeout:.0f}s for another process holding {path} to store a token; "
                "retry, or look for a process stuck while holding that lock"
            ) from None
        except BaseException:
            if lock.is_locked:
                lock.release()
            self.taken = False
            self._lock = None
            raise
        return Acquired.HELD

    def held(self) -> bool:
        return self.taken and not self.settled

    def save(self, record: TokenRecord) -> SaveOutcome:
        storage = self._storage
        with storage._locked():
            outcome = storage._store(record)
        self.release()
        return outcome

    def _release(self, failure: BaseException | None) -> None:
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()  # the very object acquired, whatever the store's lock map is by now
        self._lock = None


class FileHeldLease(HeldLease):
    """A long-lived hold of one app key's lease for a purpose, as a kernel lock on its own lock file.

    The same lock as :class:`FileLease` (created by us, never deleted, 0600, no symlink followed),
    taken without waiting and held for the holder's life.  The kernel frees it the moment the
    holder's process dies, even by SIGKILL, so a peer trying it takes over at once; and it cannot
    be lost while the process lives, so :meth:`held` needs no I/O, nothing is renewed, and a
    stopped holder keeps it (nobody else may take over until it runs or dies).  Each hold gets a
    generation one above the last, kept beside the lock as ``….<purpose>.generation`` and written
    only by the holder.
    """

    def __init__(self, storage: FileTokenStorage, api_key: str, purpose: str) -> None:
        super().__init__(purpose)
        self._storage = storage
        self.path = storage.lease_lock_path(api_key, purpose)
        self._counter = self.path.with_name(self.path.name.removesuffix(".lock") + ".generation")
        self._lock: FileLock | None = None
        self._pid = os.getpid()

    def try_acquire(self) -> int | None:
        if self.held():
            return self.generation
        storage = self._storage
        try:
            storage._ensure_directory()
            lock = storage._safe_lock(self.path, own=True)
        except Uncoordinated as exc:
            raise StorageError(f"cannot hold the {self.purpose} lease at {self.path}: {exc}") from None
        try:
            lock.acquire(timeout=0, blocking=False)
        except Timeout:
            return None
        try:
            generation = self._read_counter() + 1
            self._write_counter(generation)
        except OSError as exc:
            lock.release(force=True)
            raise StorageError(f"cannot write {self._counter}: {exc.strerror or exc}") from None
        except BaseException:
            lock.release(force=True)
            raise
        self._lock, self._pid, self.generation = lock, os.getpid(), generation
        logger.debug("took the %s lease %s (generation %d)", self.purpose, self.path, generation)
        return generation

    def held(self) -> bool:
        lock = self._lock
        return lock is not None and self._pid == os.getpid() and lock.is_locked

    def release(self) -> None:
        lock, self._lock = self._lock, None
        self.generation = 0
        if lock is not None and self._pid == os.getpid() and lock.is_locked:
            lock.release(force=True)

    def _read_counter(self) -> int:
        try:
            fd = os.open(self._counter, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageError(f"cannot read {self._counter}: {exc.strerror or exc}; remove it") from None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(64)
        try:
            return max(0, int(data.strip() or b"0"))
        except ValueError:
            return 0  # damaged: counting starts again, and the holder's pid still tells holds apart

    def _write_counter(self, generation: int) -> None:
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(str(generation).encode())
            os.replace(temp, self._counter)  # replaces a planted symlink itself, never its target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
