"""The file store's coordination for one app key's session: the store's lease, a JSON state file, a Unix socket.

Why the store's own lease: one coordination primitive serves every "exactly one in the fleet" job
(architecture.md). The owner holds the token store's lease for the purpose ``stream-owner``
(:meth:`~..token.file.FileTokenStorage.purpose_lease`): the same kind of kernel lock as the token
issuer's, on ``<token file>.<key id>.stream-owner.lock`` beside the token file, held for the
owner's whole life. The kernel frees it the moment the owner's process dies (even by SIGKILL), so
a follower trying it every 0.2 s takes over at once, with no lease to wait out.

The shared state (each process's wants with an expiry, the approval key, the owner's session state)
is one small JSON file ``stream-<digest>.json`` (0600), changed under the store's lock on
``stream-<digest>.json.lock`` and replaced atomically, so readers never see half a file. Times in
it are epoch seconds: one host, one clock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import Timeout

from ..errors import StorageError
from ..files import check_private_directory
from ..token.file import ENV_TOKEN_FILE, FileHeldLease, FileTokenStorage
from ..token.lease import STREAM_OWNER
from ..token.record import key_id
from .owner import (
    APPROVAL_MAX_AGE,
    WANTS_TTL,
    HolderInfo,
    OwnerInfo,
    RelayClient,
    RelayServer,
    limit_error,
)
from .registry import SUBSCRIPTION_CAP, Subscription
from .relay import subscription_of

__all__ = ["FileBackend"]

#: Longest wait for the state file's lock (it is held for one small read-modify-write).
STATE_LOCK_TIMEOUT = 5.0
MAX_STATE_BYTES = 1 << 20


class _StateFile:
    """``stream-<digest>.json``: read without a lock (atomic replace), changed under ``.json.lock``."""

    def __init__(self, store: FileTokenStorage, path: Path) -> None:
        self._store = store
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def read(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(f"{self.path} is a symbolic link; refusing to follow it. Remove it") from None
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_STATE_BYTES)
        try:
            value = json.loads(data)
        except ValueError:
            return {}  # a damaged file is rebuilt by the next change (holders heartbeat, the owner republishes)
        return value if isinstance(value, dict) else {}

    @contextlib.contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        """The state to change in place; written back atomically (0600) when the block ends."""
        lock = self._store.lock_beside(self.lock_path.name)
        try:
            lock.acquire(timeout=STATE_LOCK_TIMEOUT, poll_interval=0.002)
        except Timeout:
            raise StorageError(
                f"waited {STATE_LOCK_TIMEOUT:g}s for {self.lock_path}; look for a process stuck holding it"
            ) from None
        try:
            state = self.read()
            yield state
            self._write(state)
        finally:
            lock.release()

    def _write(self, state: dict[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(prefix=".stream-", suffix=".tmp", dir=self.path.parent)  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle, separators=(",", ":"))
            os.replace(temp, self.path)  # replaces a planted symlink itself, never its target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


class FileCoordinator:
    """The owner election: the store's ``stream-owner`` lease, plus the owner's entry in the state file."""

    def __init__(self, lease: FileHeldLease, state: _StateFile) -> None:
        self.lease = lease
        self._state = state
        self._me: HolderInfo | None = None

    def try_acquire(self, me: HolderInfo) -> int | None:
        if self.lease.held():
            return self.lease.generation
        generation = self.lease.try_acquire()
        if generation is None:
            return None
        self._me = me
        try:
            with self._state.changing() as state:
                state["owner"] = {"info": me.to_dict(), "generation": generation, "session_since": None, "active": []}
        except BaseException:
            self.lease.release()
            raise
        return generation

    def held(self) -> bool:
        return self.lease.held()

    def keep(self) -> None:
        self.lease.keep()

    def release(self) -> None:
        if not self.lease.held():
            self.lease.release()
            return
        with contextlib.suppress(StorageError, OSError), self._state.changing() as state:
            owner = state.get("owner")
            if (
                isinstance(owner, dict)
                and self._me is not None
                and owner.get("info", {}).get("holder") == self._me.holder
            ):
                state.pop("owner", None)
        self.lease.release()

    def publish_state(self, info: OwnerInfo) -> None:
        if not self.held():
            return
        with self._state.changing() as state:
            state["owner"] = {
                "info": info.owner.to_dict(),
                "generation": info.generation,
                "session_since": info.session_since,
                "active": list(info.active),
            }

    def state(self) -> OwnerInfo | None:
        owner = self._state.read().get("owner")
        if not isinstance(owner, dict):
            return None
        info = HolderInfo.from_dict(owner.get("info"))
        if info is None or not _alive(info.pid):
            return None  # one host: a dead owner's pid tells at once (its lock is free too)
        since = owner.get("session_since")
        return OwnerInfo(
            info,
            int(owner.get("generation", 0) or 0),
            float(since) if isinstance(since, (int, float)) else None,
            tuple(str(s) for s in owner.get("active", []) if isinstance(s, str)),
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileWants:
    """The shared registry in the state file: ``wants[holder] = {info, subs, expires}``."""

    def __init__(self, state: _StateFile, cap: int = SUBSCRIPTION_CAP, ttl: float = WANTS_TTL) -> None:
        self._state = state
        self.cap = cap
        self.ttl = ttl

    @staticmethod
    def _live(state: dict[str, Any], now: float) -> dict[str, dict[str, Any]]:
        wants = state.get("wants")
        if not isinstance(wants, dict):
            return {}
        return {
            h: e
            for h, e in wants.items()
            if isinstance(e, dict) and isinstance(e.get("expires"), (int, float)) and e["expires"] >= now
        }

    def put(self, holder: HolderInfo, wants: frozenset[Subscription], *, check_cap: bool = True) -> None:
        with self._state.changing() as state:
            now = time.time()
            live = self._live(state, now)
            others = {s for h, e in live.items() if h != holder.holder for s in e.get("subs", [])}
            before = others | set(live.get(holder.holder, {}).get("subs", []))
            mine = {str(s) for s in wants}
            after = others | mine
            if check_cap and len(after) > self.cap and len(after) > len(before):
                counts: dict[str, int] = {}
                for entry in live.values():
                    for s in entry.get("subs", []):
                        counts[s] = counts.get(s, 0) + 1
                added = [s for s in (subscription_of(x) for x in mine - before) if s is not None]
                raise limit_error(self.cap, added, counts)
            if mine:
                live[holder.holder] = {"info": holder.to_dict(), "subs": sorted(mine), "expires": now + self.ttl}
            else:
                live.pop(holder.holder, None)
            state["wants"] = live

    def remove(self, holder: HolderInfo) -> None:
        self.put(holder, frozenset(), check_cap=False)

    def union(self) -> dict[Subscription, frozenset[str]]:
        found: dict[Subscription, set[str]] = {}
        for holder, entry in self._live(self._state.read(), time.time()).items():
            for text in entry.get("subs", []):
                subscription = subscription_of(text)
                if subscription is not None:
                    found.setdefault(subscription, set()).add(holder)
        return {s: frozenset(h) for s, h in found.items()}

    def holders(self) -> list[tuple[HolderInfo, frozenset[Subscription], float]]:
        now = time.time()
        rows = []
        for entry in self._live(self._state.read(), now).values():
            info = HolderInfo.from_dict(entry.get("info"))
            if info is None:
                continue
            subs = frozenset(s for s in (subscription_of(x) for x in entry.get("subs", [])) if s is not None)
            rows.append((info, subs, float(entry["expires"]) - now))
        return rows


class FileApprovals:
    """The approval key in the 0600 state file (read before anyone issues; only the owner writes).

    Written only while this process holds the ``stream-owner`` lease: each Approval call kills the
    previous key, so issuing and storing one is the owner's job alone.
    """

    def __init__(self, state: _StateFile, lease: FileHeldLease) -> None:
        self._state = state
        self._lease = lease

    def read(self) -> str | None:
        entry = self._state.read().get("approval")
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            return None
        at = entry.get("at")
        if not isinstance(at, (int, float)) or time.time() - at > APPROVAL_MAX_AGE:
            return None
        return str(entry["key"])

    def write(self, key: str) -> bool:
        if not self._lease.held():
            return False
        with self._state.changing() as state:
            state["approval"] = {"key": key, "at": time.time()}
        return True


class FileBackend:
    """Everything one app key's session needs on the file store, beside the token file."""

    kind = "file"
    silence_bound: float | None = None  # the Unix socket reports a dead owner itself (EOF)

    def __init__(self, store: FileTokenStorage, app_key: str) -> None:
        self.directory = store.file_path.parent
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private_directory(self.directory, ENV_TOKEN_FILE)
        digest = key_id(app_key)[:16]
        self.digest = digest
        self._state = _StateFile(store, self.directory / f"stream-{digest}.json")
        self.socket_path = self.directory / f"stream-{digest}.sock"
        lease = store.purpose_lease(app_key, STREAM_OWNER)
        self.coordinator = FileCoordinator(lease, self._state)
        self.wants = FileWants(self._state)
        self.approvals = FileApprovals(self._state, lease)

    def relay_server(self) -> RelayServer:
        from .relay_file import UnixRelayServer

        return UnixRelayServer(self.socket_path)

    def relay_client(self) -> RelayClient:
        from .relay_file import UnixRelayClient

        return UnixRelayClient(self.socket_path)

    def describe(self) -> str:
        return f"file:{os.path.realpath(self.directory)}:{self.digest}"
