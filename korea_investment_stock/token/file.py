"""``FileTokenStorage``: the default store, safe across processes on one host.

- Cross-process single flight: :mod:`filelock` on a sibling ``.lock`` file that
  is never deleted (deleting a lock file lets two holders lock two inodes).
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
import inspect
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import StorageError, TokenWaitTimeout
from .legacy import load_plain_pickle, looks_like_pickle
from .record import TokenRecord, key_id
from .storage import NO_LOCK, TokenStorage, key_lock

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

_SUPPORTS_CANCEL = "cancel_check" in inspect.signature(FileLock.acquire).parameters

#: Tokens this process could not write to disk (read-only directory, full disk), per
#: token file (real path), shared by every instance: a second client built in a
#: read-only deployment must reuse the token, not issue again (KIS would answer
#: EGW00133 for a minute).  Entries change under :func:`~.storage.key_lock`.
_UNSAVED: dict[str, dict[str, TokenRecord]] = {}


@dataclass
class _Snapshot:
    """What one read of the token file found."""

    records: dict[str, TokenRecord] = field(default_factory=dict)
    legacy: bool = False
    problem: str | None = None


def default_token_path() -> Path:
    """``$KOREA_INVESTMENT_TOKEN_FILE`` or ``~/.cache/kis/token.key`` (the 0.6.x path)."""
    configured = os.environ.get(ENV_TOKEN_FILE)
    return Path(configured or DEFAULT_TOKEN_FILE).expanduser()


class FileTokenStorage(TokenStorage):
    """Tokens in one JSON file, shared safely by every process on this host.

    Args:
        file_path: the token file; default ``$KOREA_INVESTMENT_TOKEN_FILE`` or
            ``~/.cache/kis/token.key``.  The lock lives beside it as ``<name>.lock``.
        refresh_margin, issue_deadline, wait_timeout: see :class:`TokenStorage`.
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str] | None = None,
        *,
        refresh_margin: float | None = None,
        issue_deadline: float | None = None,
        wait_timeout: float | None = None,
    ) -> None:
        super().__init__(refresh_margin=refresh_margin, issue_deadline=issue_deadline, wait_timeout=wait_timeout)
        self.file_path = Path(file_path).expanduser() if file_path is not None else default_token_path()
        self.lock_path = self.file_path.with_name(self.file_path.name + ".lock")
        self._file_lock = FileLock(str(self.lock_path), mode=0o600)
        self._lock_pid = os.getpid()
        # Tokens this process could not write to disk, shared with other instances on this file.
        self._memory: dict[str, TokenRecord] = _UNSAVED.setdefault(os.path.realpath(self.file_path), {})
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"FileTokenStorage(file_path={str(self.file_path)!r})"

    @property
    def _lock(self) -> FileLock:
        """This process's file lock.

        filelock (4.x) refuses a lock object inherited across ``fork``, and a
        pre-fork server (gunicorn ``--preload``, a prefork pool) builds its
        storage before forking, so each process makes its own.  Two threads of
        a new child may both make one; that is harmless, as every caller
        releases the very object it acquired, and two lock objects on one path
        exclude each other as two processes do.
        """
        if self._lock_pid != os.getpid():
            self._file_lock = FileLock(str(self.lock_path), mode=0o600)
            self._lock_pid = os.getpid()
        return self._file_lock

    # ------------------------------------------------------------------ 0.6.x API
    def save_token(self, token_data: dict[str, Any]) -> bool:
        """Store a 0.6.x-shaped token dict; False if it could only be kept in memory."""
        record = TokenRecord.from_legacy_dict(token_data)
        with self._locked():
            return self._store(record)

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        """The stored token for this key and secret, valid or not, in the 0.6.x shape."""
        record = self._read_record(api_key, api_secret)
        return None if record is None else record.to_legacy_dict(api_secret)

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        """True when a token for this key and secret has more than the refresh margin left."""
        return self._read_valid(api_key, api_secret) is not None

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        """Remove this app key's entry; other keys' entries stay."""
        with self._locked():
            return self._remove(api_key, None)

    # ------------------------------------------------------------------ the hooks
    def _flight_scope(self) -> Hashable:
        return ("file", os.path.realpath(self.file_path))

    def _read_record(self, api_key: str, api_secret: str) -> TokenRecord | None:
        ident = key_id(api_key)
        snapshot = self._read_file()
        if snapshot.legacy:
            self._migrate_legacy()
        candidates = [r for r in (snapshot.records.get(ident), self._memory.get(ident)) if r is not None]
        matching = [r for r in candidates if r.matches(api_key, api_secret)]
        return max(matching, key=lambda r: r.expires_at, default=None)

    def _acquire_issue_lock(self, api_key: str, deadline: float) -> Any:
        self._ensure_directory()
        seen = self._signature()

        def file_changed() -> bool:
            return self._signature() != seen

        kwargs: dict[str, Any] = {"poll_interval": LOCK_POLL_INTERVAL}
        if _SUPPORTS_CANCEL:
            kwargs["cancel_check"] = file_changed
        lock = self._lock
        try:
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()), **kwargs)
        except Timeout:
            if file_changed():
                return None
            raise TokenWaitTimeout(
                f"waited {self.wait_timeout:.0f}s for another process holding {self.lock_path} to store a token; "
                "retry, or look for a process stuck while holding that lock"
            ) from None
        except OSError as exc:
            self._warn_once(
                "lock",
                "cannot create the lock file %s (%s); only this process is coordinated",
                self.lock_path,
                exc.strerror or exc,
            )
            return NO_LOCK
        return lock

    def _release_issue_lock(self, api_key: str, handle: Any, failure: BaseException | None) -> None:
        if isinstance(handle, FileLock):
            handle.release()  # the very object acquired, whatever self._lock is by now

    def _save_issued(self, record: TokenRecord, api_secret: str, handle: Any) -> bool:
        return self._store(record)

    def _compare_and_delete(self, api_key: str, api_secret: str, access_token: str) -> bool:
        with self._locked():
            return self._remove(api_key, access_token)

    # ---------------------------------------------------------------- internals
    def _locked(self) -> Any:
        """The file lock as a context manager, or a no-op when it cannot be created."""
        self._ensure_directory()
        try:
            return self._lock.acquire(timeout=self.wait_timeout, poll_interval=LOCK_POLL_INTERVAL)
        except Timeout:
            raise TokenWaitTimeout(
                f"waited {self.wait_timeout:.0f}s for the lock {self.lock_path}; "
                "retry, or look for a process stuck while holding it"
            ) from None
        except OSError as exc:
            self._warn_once("lock", "cannot create the lock file %s (%s)", self.lock_path, exc.strerror or exc)
            return contextlib.nullcontext()

    def _store(self, record: TokenRecord) -> bool:
        """Write ``record`` beside the other keys' entries (caller holds the lock)."""
        ident = key_id(record.api_key)
        records = self._read_file().records
        records[ident] = record
        saved = self._write_file(records)
        with key_lock(self._flight_scope(), record.api_key):
            if saved:
                self._memory.pop(ident, None)
            else:
                self._memory[ident] = record
        return saved

    def _remove(self, api_key: str, only_token: str | None) -> bool:
        """Drop this key's entry, if ``only_token`` is None or still stored (lock held)."""
        ident = key_id(api_key)
        removed = False
        with key_lock(self._flight_scope(), api_key):
            held = self._memory.get(ident)
            if held is not None and only_token in (None, held.access_token):
                del self._memory[ident]
                removed = True
        records = self._read_file().records
        stored = records.get(ident)
        if stored is not None and only_token in (None, stored.access_token):
            del records[ident]
            self._write_file(records)
            removed = True
        return removed

    def _migrate_legacy(self) -> None:
        """Rewrite a 0.6.0 pickle as JSON now, so the plaintext secret leaves the disk."""
        try:
            self._ensure_directory()
            acquired = self._lock.acquire(timeout=0, poll_interval=LOCK_POLL_INTERVAL)
        except (Timeout, OSError):
            return  # somebody else is writing, or we cannot: the next save migrates it
        with acquired:
            snapshot = self._read_file()
            if snapshot.legacy and self._write_file(snapshot.records):
                logger.info("migrated legacy pickle token file %s to JSON", self.file_path)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.file_path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _ensure_directory(self) -> None:
        directory = self.file_path.parent
        if directory.is_dir():
            return
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the token directory {directory}: {exc.strerror or exc}") from None

    def _read_file(self) -> _Snapshot:
        """Parse the token file; any problem reads as "no tokens" plus a warning."""
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
        snapshot = _Snapshot()
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

    def _write_file(self, records: Mapping[str, TokenRecord]) -> bool:
        """Atomically replace the token file; False (with a warning) if the disk refuses."""
        document = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "tokens": {ident: record.to_json() for ident, record in sorted(records.items())},
        }
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
            _fsync_directory(directory)
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
        self._warned.discard("write")
        return True

    def _warn_once(self, topic: str, message: str, *args: Any) -> None:
        """Warn once per problem per instance, so a fast path does not flood the log."""
        if topic in self._warned:
            return
        self._warned.add(topic)
        logger.warning(message, *args)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort where directories cannot be opened."""
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
