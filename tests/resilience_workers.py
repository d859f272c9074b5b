"""Top-level worker functions for the multi-process resilience tests.

A ``spawn`` child imports these by name, so they live outside the test module.
Each child process runs ``threads`` callers that each build their own
``KoreaInvestment`` from the shared store (so they all hold the current token),
meet the parent at ``ready``, wait for ``go`` (the parent kills the token in
between), then make one quotation call.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

HANG = 60.0
ACCOUNT = "12345678-01"
SYMBOL = "005930"


def make_storage(config: dict[str, Any]) -> Any:
    """The store named by ``config["storage"]``: a token file, or a Redis URL plus key prefix."""
    # A short issue deadline: a client that wrongly re-issues hits EGW00133 and fails in
    # seconds, instead of waiting out the 70 s default and the test's timeout.
    settings = {"issue_deadline": 5.0, "wait_timeout": 20.0}
    if config["storage"] == "redis":
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        return LockingRedisTokenStorage(config["redis_url"], key_prefix=config["key_prefix"], **settings)
    from korea_investment_stock.token.file import FileTokenStorage

    return FileTokenStorage(config["token_file"], **settings)


def dead_token_process(config: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """Run ``config["threads"]`` callers; put one dict per caller on ``results``."""
    from korea_investment_stock import KoreaInvestment

    storage = make_storage(config)
    reports: list[dict[str, Any]] = []
    lock = threading.Lock()

    def caller() -> None:
        report: dict[str, Any] = {"pid": os.getpid(), "ok": False}
        client = None
        try:
            client = KoreaInvestment(
                config["app_key"], config["app_secret"], ACCOUNT, token_storage=storage, base_url=config["url"]
            )
            report["before"] = client.access_token
            ready.wait(HANG)
            go.wait(HANG)
            answer = client.fetch_domestic_price("J", SYMBOL)
            report["rt_cd"] = answer.get("rt_cd")
            report["price"] = (answer.get("output") or {}).get("stck_prpr")
            report["after"] = client.access_token
            report["ok"] = answer.get("rt_cd") == "0"
        except BaseException:
            report["error"] = traceback.format_exc(limit=3)
            for barrier in (ready, go):
                try:  # do not leave the parent and the other callers waiting on us
                    barrier.abort()
                except Exception:
                    pass
        finally:
            if client is not None:
                client.shutdown()
            with lock:
                reports.append(report)

    threads = [threading.Thread(target=caller) for _ in range(config["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    if any(thread.is_alive() for thread in threads):
        reports.append({"pid": os.getpid(), "ok": False, "error": "a caller thread hung"})
    results.put(reports)
