"""Processes of one host for the host-copy tests (spawned: importable by name).

Each builds its own ``LockingRedisTokenStorage`` from the environment it is
given (the host's token directory) and short Redis timeouts, runs ``threads``
callers, and reports on a queue.  :func:`leader_then_hard_exit` then leaves
through ``os._exit``, as forked workers do: no atexit hook, no pending save.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

from .redis_workers import issuer, run_callers

#: Short Redis timeouts: a partitioned call fails within a second.
TIMEOUTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def _report(env: dict[str, str], kwargs: dict[str, Any], threads: int) -> dict[str, Any]:
    """``threads`` callers at once on a store of this process: their tokens, errors and waits."""
    try:
        os.environ.update(env)
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        storage = LockingRedisTokenStorage(kwargs["redis_url"], key_prefix=kwargs["prefix"], **TIMEOUTS)
        issue = issuer(kwargs["kis_url"], kwargs["app_key"], kwargs["app_secret"])
        result = run_callers(
            storage, issue, kwargs["app_key"], kwargs["app_secret"], threads, threading.Barrier(threads)
        )
        result["waits"] = [done - begun for begun, done in zip(result["started"], result["finished"], strict=True)]
        return result
    except BaseException:
        return {"pid": os.getpid(), "tokens": [], "errors": [traceback.format_exc()], "waits": []}


def host_callers(env: dict[str, str], kwargs: dict[str, Any], threads: int, results: Any) -> None:
    """A process of the host: report its callers' outcomes."""
    results.put(_report(env, kwargs, threads))


def leader_then_hard_exit(env: dict[str, str], kwargs: dict[str, Any], threads: int, results: Any) -> None:
    """:func:`host_callers`, then ``os._exit(0)`` with whatever the process holds only in memory."""
    results.put(_report(env, kwargs, threads))
    results.close()
    results.join_thread()  # the report is out; nothing else is
    os._exit(0)
