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
#: One limiter per store (and rate), so every client of a process shares its budget and descriptors.
_BY_STORE: weakref.WeakKeyDictionary[TokenStorage, dict[float | None, RateLimiter]] = weakref.WeakKeyDictionary()
_FILE_LIMITERS: dict[tuple[str, float | None], FileRateLimiter] = {}
_PROCESS_LIMITERS: dict[float | None, ProcessRateLimiter] = {}


def limiter_for(storage: TokenStorage, environ: Mapping[str, str] | None = None) -> RateLimiter:
    """The default limiter for clients of ``storage`` (see the module docstring)."""
    setting = rate_from_env(os.environ if environ is None else environ)
    if setting is False:
        return NoRateLimit()
    rate = None if setting is None or setting is True else float(setting)
    with _GUARD:
        per_store = _BY_STORE.setdefault(storage, {})
        limiter = per_store.get(rate)
        if limiter is None:
            limiter = per_store[rate] = _build(storage, rate)
        return limiter


def _build(storage: TokenStorage, rate: float | None) -> RateLimiter:
    if isinstance(storage, FileTokenStorage):
        directory = str(storage.file_path.parent)
        shared = _FILE_LIMITERS.get((directory, rate))
        if shared is None:
            shared = _FILE_LIMITERS[(directory, rate)] = FileRateLimiter(directory, rate)
        return shared
    redis_stores = sys.modules.get("korea_investment_stock.token.redis")  # loaded if a Redis store exists
    if redis_stores is not None and isinstance(storage, redis_stores.RedisTokenStorage):
        from .redis import RedisRateLimiter

        return RedisRateLimiter(storage.redis_client, storage.key_prefix, rate)
    shared_process = _PROCESS_LIMITERS.get(rate)
    if shared_process is None:
        shared_process = _PROCESS_LIMITERS[rate] = ProcessRateLimiter(rate)
    return shared_process
