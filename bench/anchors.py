"""Anchors: the locks a user would pick, each wrapped in "check, lock, double-check, issue, save".

Every caller (thread) runs the same textbook recipe with its own lock object:

1. read the store; a valid token ends the call (no lock);
2. take the lock;
3. read again (a peer may have stored a token meanwhile);
4. call the issue function;
5. save, note the time, release.

Stores are the simplest correct ones: a JSON file replaced atomically for
the file locks, one Redis string for the Redis locks.  Each lock keeps its
library's default polling / wake-up behaviour.  Only the waits that default
to "forever" are capped (:data:`WAIT_CAP`) so a stuck run ends; the cap
changes nothing in a run that completes.

Anchors (``kind`` names used in the tables):

- ``redis-py Lock``: ``redis.lock.Lock`` (``SET NX``; waiters sleep 100 ms between tries)
- ``python-redis-lock``: ``redis_lock.Lock`` (``SET NX``; a release wakes one ``BLPOP`` waiter)
- ``filelock``: ``filelock.FileLock`` (``flock``; waiters poll every 50 ms)
- ``portalocker file``: ``portalocker.Lock`` (``flock``; waiters poll every 250 ms)
- ``portalocker RedisLock``: ``portalocker.RedisLock`` (pub/sub subscription; waiters retry every 250 ms)
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from korea_investment_stock.token.record import TokenRecord

#: Seconds a caller may wait for a lock before the bench gives up on it.
WAIT_CAP = 60.0
#: Same refresh margin as the library, so "valid" means the same thing.
MARGIN = 300.0


@dataclass
class Outcome:
    """What one caller got: the token, whether it issued it, when it saved it."""

    token: str
    issued: bool
    stored_at: float | None


class JsonFileStore:
    """A token in a JSON file, replaced atomically so readers never see a torn file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            with open(self.path, "rb") as handle:
                doc = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        if doc.get("expires_at", 0) > time.time() + MARGIN:
            return str(doc["access_token"])
        return None

    def write(self, record: TokenRecord) -> None:
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".anchor.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump({"access_token": record.access_token, "expires_at": record.expires_at}, handle)
        os.replace(temp, self.path)


class RedisStringStore:
    """A token in one Redis string with a TTL."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key

    def read(self) -> str | None:
        raw = self.client.get(self.key)
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc.get("expires_at", 0) > time.time() + MARGIN:
            return str(doc["access_token"])
        return None

    def write(self, record: TokenRecord) -> None:
        payload = json.dumps({"access_token": record.access_token, "expires_at": record.expires_at})
        self.client.set(self.key, payload, ex=max(1, int(record.expires_at - time.time())))


class Anchor:
    """Base: one instance per process, :meth:`obtain` once per caller thread."""

    name = ""
    family = ""  # "file" or "redis"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.store: JsonFileStore | RedisStringStore

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def obtain(self, issue: Callable[[], TokenRecord]) -> Outcome:
        token = self.store.read()
        if token is not None:
            return Outcome(token, False, None)
        with self.lock():
            token = self.store.read()
            if token is not None:
                return Outcome(token, False, None)
            record = issue()
            self.store.write(record)
            return Outcome(record.access_token, True, time.time())

    def close(self) -> None:
        """Drop connections (Redis anchors)."""


class _FileAnchor(Anchor):
    family = "file"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        workdir = Path(config["workdir"])
        self.store = JsonFileStore(workdir / "anchor-token.json")
        self.lock_path = str(workdir / "anchor-token.json.lock")


class FileLockAnchor(_FileAnchor):
    name = "filelock"

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        from filelock import FileLock

        # Default poll_interval (50 ms); a new instance per caller, as each caller would build one.
        return FileLock(self.lock_path, timeout=WAIT_CAP)


class PortalockerFileAnchor(_FileAnchor):
    name = "portalocker file"

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        import portalocker

        # Default check_interval (250 ms) and flags (exclusive, non-blocking tries).
        return portalocker.Lock(self.lock_path, timeout=WAIT_CAP)


class _RedisAnchor(Anchor):
    family = "redis"
    decode = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        import redis

        self.client = redis.Redis.from_url(config["redis_url"], decode_responses=self.decode)
        prefix = config["key_prefix"]
        self.store = RedisStringStore(self.client, f"{prefix}:anchor-token")
        self.lock_name = f"{prefix}:anchor-lock"

    def close(self) -> None:
        self.client.close()


class RedisPyLockAnchor(_RedisAnchor):
    name = "redis-py Lock"

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        # Defaults: no expiry (timeout=None), sleep=0.1 between tries; only the wait is capped.
        return self.client.lock(self.lock_name, blocking_timeout=WAIT_CAP)  # type: ignore[no-any-return]


class PythonRedisLockAnchor(_RedisAnchor):
    name = "python-redis-lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        import redis_lock

        lock = redis_lock.Lock(self.client, self.lock_name)  # defaults: no expiry, BLPOP wake-up
        if not lock.acquire(blocking=True, timeout=WAIT_CAP):
            raise TimeoutError(f"python-redis-lock: not acquired within {WAIT_CAP:.0f}s")
        try:
            yield
        finally:
            lock.release()


class PortalockerRedisAnchor(_RedisAnchor):
    name = "portalocker RedisLock"
    decode = True  # what portalocker builds for itself (DEFAULT_REDIS_KWARGS)

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        import portalocker

        # Defaults: check_interval 250 ms, thread_sleep_time 100 ms.  interrupt_on_lost=False
        # (portalocker >= 4.2) only silences a deprecation warning; no lock is lost here.
        extra: dict[str, Any] = {}
        if "interrupt_on_lost" in inspect.signature(portalocker.RedisLock.__init__).parameters:
            extra["interrupt_on_lost"] = False
        return portalocker.RedisLock(self.lock_name, connection=self.client, timeout=WAIT_CAP, **extra)


ANCHORS: dict[str, type[Anchor]] = {
    cls.name: cls
    for cls in (RedisPyLockAnchor, PythonRedisLockAnchor, FileLockAnchor, PortalockerFileAnchor, PortalockerRedisAnchor)
}
