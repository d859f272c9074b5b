"""Processes of one host for the host-copy tests (spawned: importable by name).

Each builds its own ``LockingRedisTokenStorage`` from the environment it is
given (the host's token directory) and short Redis timeouts, runs ``threads``
callers, and reports on a queue.  :func:`leader_then_hard_exit` then leaves
through ``os._exit``, as forked workers do: no atexit hook, no pending save.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

from .redis_workers import HANG, issuer

#: Short Redis timeouts: a partitioned call fails within a second.
TIMEOUTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def _storage(kwargs: dict[str, Any]) -> Any:
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    return LockingRedisTokenStorage(kwargs["redis_url"], key_prefix=kwargs["prefix"], **TIMEOUTS)


def _callers(kwargs: dict[str, Any], threads: int) -> dict[str, Any]:
    storage = _storage(kwargs)
    issue = issuer(kwargs["kis_url"], kwargs["app_key"], kwargs["app_secret"])
    tokens: list[str] = []
    errors: list[str] = []
    waits: list[float] = []
    lock = threading.Lock()

    def body() -> None:
        started = time.monotonic()
        try:
            record = storage.get_token(kwargs["app_key"], kwargs["app_secret"], issue)
            with lock:
                tokens.append(record.access_token)
                waits.append(time.monotonic() - started)
        except BaseException as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(HANG)
    return {"pid": os.getpid(), "tokens": tokens, "errors": errors, "waits": waits}


def host_callers(env: dict[str, str], kwargs: dict[str, Any], threads: int, results: Any) -> None:
    """A process of the host: ``threads`` callers at once; their tokens, errors and waits."""
    try:
        os.environ.update(env)
        result = _callers(kwargs, threads)
    except BaseException:
        result = {"pid": os.getpid(), "tokens": [], "errors": [traceback.format_exc()], "waits": []}
    results.put(result)


def leader_then_hard_exit(env: dict[str, str], kwargs: dict[str, Any], threads: int, results: Any) -> None:
    """:func:`host_callers`, then ``os._exit(0)`` with whatever the process holds only in memory."""
    try:
        os.environ.update(env)
        result = _callers(kwargs, threads)
    except BaseException:
        result = {"pid": os.getpid(), "tokens": [], "errors": [traceback.format_exc()], "waits": []}
    results.put(result)
    results.close()
    results.join_thread()  # the report is out; nothing else is
    os._exit(0)
