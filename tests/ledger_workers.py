"""Child-process workers for the order-ledger tests (importable by name, as multiprocessing needs)."""

from __future__ import annotations

import os
import random
from typing import Any


def make_ledger(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "file":
        from korea_investment_stock.trading.ledger import FileOrderLedger

        return FileOrderLedger(spec["directory"])
    import redis

    from korea_investment_stock.trading.ledger_redis import RedisOrderLedger

    return RedisOrderLedger(redis.Redis.from_url(spec["url"], socket_timeout=5), spec["prefix"])


def claim_all(spec: dict[str, Any], numbers: list[str], start: Any, queue: Any) -> None:
    """Claim every number once every process is ready (``start``, a barrier); report the ones this one won."""
    ledger = make_ledger(spec)
    ledger.is_known("12345678-01", "warm-up")  # connected before the race starts
    order = list(numbers)
    random.Random(os.getpid()).shuffle(order)  # every process tries every number, each in its own order
    start.wait(60)
    queue.put([number for number in order if ledger.claim("12345678-01", number)])
