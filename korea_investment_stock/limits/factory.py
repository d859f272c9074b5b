"""The limiter a client gets by default: it follows the token store, so a fleet needs no new setting.

A file store brings the file limiter (processes of one host), a Redis store
the Redis limiter on the same client and key prefix (servers), any other store
the in-process one.  ``KOREA_INVESTMENT_RATE_LIMIT`` sets the rate, or ``off``.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from ..token.file import FileTokenStorage
from ..token.storage import TokenStorage
from .budget import NoRateLimit, ProcessRateLimiter, RateLimiter, rate_from_env
from .file import FileRateLimiter


class _Guard:
    """The factory's lock, renewed in a forked child: a thread of the parent may have held it in
    :func:`limiter_for` when the process forked, and would never release the child's copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_GUARD = _Guard()
#: Shared per directory and rate: every client of a process whose file store keeps its token in one
#: directory spends one budget, through one set of descriptors.
_FILE_LIMITERS: dict[tuple[str, float | None], FileRateLimiter] = {}
#: Per Redis store instance (by id, dropped when the store is collected) and rate.
_REDIS_LIMITERS: dict[tuple[int, float | None], RateLimiter] = {}
#: Per rate, for every other store.
_PROCESS_LIMITERS: dict[float | None, ProcessRateLimiter] = {}


def limiter_for(storage: TokenStorage, environ: Mapping[str, str] | None = None) -> RateLimiter:
    """The default limiter for clients of ``storage`` (see the module docstring).

    Never hashes ``storage``: a custom store may be unhashable (a ``@dataclass``
    with the default ``eq=True``), as 0.6.1 allowed.
    """
    setting = rate_from_env(os.environ if environ is None else environ)
    if setting is False:
        return NoRateLimit()
    rate = None if setting is None or setting is True else float(setting)
    with _GUARD:
        if isinstance(storage, FileTokenStorage):
            return _shared_file(str(storage.file_path.parent), rate)
        redis_stores = sys.modules.get("korea_investment_stock.token.redis")  # loaded if a Redis store exists
        if redis_stores is not None and isinstance(storage, redis_stores.RedisTokenStorage):
            return _per_redis_store(storage, rate)
        shared = _PROCESS_LIMITERS.get(rate)
        if shared is None:
            shared = _PROCESS_LIMITERS[rate] = ProcessRateLimiter(rate)
        return shared


def _shared_file(directory: str, rate: float | None) -> FileRateLimiter:
    shared = _FILE_LIMITERS.get((directory, rate))
    if shared is None:
        shared = _FILE_LIMITERS[(directory, rate)] = FileRateLimiter(directory, rate)
    return shared


def _per_redis_store(storage: Any, rate: float | None) -> RateLimiter:
    key = (id(storage), rate)
    limiter = _REDIS_LIMITERS.get(key)
    if limiter is None:
        from .redis import RedisRateLimiter

        limiter = _REDIS_LIMITERS[key] = RedisRateLimiter(storage.redis_client, storage.key_prefix, rate)
        # Dropped when the store is collected, before its id can be another object's.
        weakref.finalize(storage, _REDIS_LIMITERS.pop, key, None)
    return limiter
