"""Helpers for the Redis tests, and the functions ``multiprocessing`` children run.

Children are started with the ``spawn`` context (nothing of pytest's threads or
sockets is inherited), so everything they run must be importable by name.
Each child builds its own store and HTTP session, waits on a shared barrier,
then runs ``threads`` callers at once and reports one result dict on a queue.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import requests

from korea_investment_stock.token.issuer import TokenIssuer
from korea_investment_stock.token.record import TokenRecord, format_kst
from korea_investment_stock.token.storage import TokenStorage

API_KEY = "PSredisredisredisredisredisredis0001"
API_SECRET = "R" * 60 + "redis-secret-that-must-never-reach-redis" + "r" * 80
HANG = 60.0


def make_record(
    token: str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.redis-0001.signature",
    *,
    api_key: str = API_KEY,
    api_secret: str = API_SECRET,
    lifetime: float = 86400.0,
) -> TokenRecord:
    """A record as tokenP would answer it, expiring ``lifetime`` seconds from now."""
    body = {"access_token": token, "access_token_token_expired": format_kst(time.time() + lifetime)}
    return TokenRecord.from_issue_response(body, api_key, api_secret)


def issuer(url: str, app_key: str, app_secret: str) -> Callable[[], TokenRecord]:
    """The real tokenP call against ``url`` (the fake KIS server)."""
    return TokenIssuer(requests.Session(), url, app_key, app_secret).issue


def run_callers(
    storage: TokenStorage, issue: Callable[[], TokenRecord], app_key: str, app_secret: str, threads: int, barrier: Any
) -> dict[str, Any]:
    """``threads`` callers released together; their tokens, errors, start and finish times."""
    tokens: list[str] = []
    errors: list[str] = []
    started: list[float] = []
    finished: list[float] = []
    lock = threading.Lock()

    def body() -> None:
        try:
            barrier.wait(HANG)
            begun = time.time()
            record = storage.get_token(app_key, app_secret, issue)
            done = time.time()
            with lock:
                tokens.append(record.access_token)
                started.append(begun)
                finished.append(done)
        except BaseException as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(HANG)
    hung = sum(worker.is_alive() for worker in workers)
    if hung:
        errors.append(f"{hung} callers hung")
    return {"pid": os.getpid(), "tokens": tokens, "errors": errors, "started": started, "finished": finished}


def stampede_worker(kwargs: dict[str, Any], barrier: Any, results: Any) -> None:
    """One "server": a LockingRedisTokenStorage of its own and ``threads`` callers."""
    try:
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        storage_kwargs = dict(kwargs.get("storage", {}))
        storage = LockingRedisTokenStorage(kwargs["redis_url"], key_prefix=kwargs["prefix"], **storage_kwargs)
        issue = issuer(kwargs["kis_url"], kwargs["app_key"], kwargs["app_secret"])
        result = run_callers(storage, issue, kwargs["app_key"], kwargs["app_secret"], kwargs["threads"], barrier)
    except BaseException:
        result = {"pid": os.getpid(), "tokens": [], "errors": [traceback.format_exc()], "finished": []}
    results.put(result)


def env_worker(env: dict[str, str], kwargs: dict[str, Any], barrier: Any, results: Any) -> None:
    """A "server" configured only by environment variables, as a deployment would be."""
    try:
        os.environ.update(env)
        from korea_investment_stock.token.factory import storage_from_env

        storage = storage_from_env()
        issue = issuer(kwargs["kis_url"], kwargs["app_key"], kwargs["app_secret"])
        result = run_callers(storage, issue, kwargs["app_key"], kwargs["app_secret"], kwargs["threads"], barrier)
        result["storage"] = type(storage).__name__
    except BaseException:
        result = {"pid": os.getpid(), "tokens": [], "errors": [traceback.format_exc()], "finished": []}
    results.put(result)


def forked_child(storage: Any, app_key: str, app_secret: str, kis_url: str, results: Any) -> None:
    """Run in a *forked* child: use the parent's store object and report what happened."""
    try:
        client_id = storage._client.client_id()
        record = storage.get_token(app_key, app_secret, issuer(kis_url, app_key, app_secret))
        results.put({"pid": os.getpid(), "client_id": client_id, "token": record.access_token, "error": None})
    except BaseException:
        results.put({"pid": os.getpid(), "client_id": None, "token": None, "error": traceback.format_exc()})
