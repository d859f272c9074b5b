"""The shared budget under faults of its store: every fault is made for real.

A Redis server is stopped (``SIGSTOP``) or gone, a state file is removed under
load, a disk is full, a lock holder is stopped.  The promise checked is the
limiter's: no second holds more than ``floor(rate) + 1`` departures, and a
store that fails takes the documented fallback or raises a library error.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from korea_investment_stock.limits.redis import RedisRateLimiter
from testsupport.departures import busiest_second, run_callers

from .redis_fixtures import private_redis  # noqa: F401

#: The default real rate, and KIS's budget.
RATE, NOMINAL = 18.5, 20


@pytest.mark.real_redis
@pytest.mark.slow
def test_a_stalled_redis_never_lets_a_call_leave_before_its_slot(private_redis: Any) -> None:  # noqa: F811
    """The server stops for 0.3 s (a slow command, a fork, a retransmit) while six processes' callers wait.

    The script runs late; a wait counted from before the request let the
    callers go up to 0.3 s before their slots, and a second held more calls
    than the rate allows.
    """
    granted: list[float] = []

    class Recording(RedisRateLimiter):
        """Records when each call is let go: the limiter's decision, apart from how late a thread wakes."""

        def _shared_reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
            go_at = super()._shared_reserve(bucket, rate, max_wait)
            if go_at is not None:
                granted.append(go_at)
            return go_at

    limiters = [
        Recording(private_redis.client(socket_timeout=5.0), key_prefix="kis-test:stall", rate=RATE) for _ in range(8)
    ]
    acquirers = [lambda limiter=limiter: limiter.acquire("app-key", "real", timeout=10) for limiter in limiters * 2]

    def stalls(stop: threading.Event) -> None:
        for _ in range(4):
            stop.wait(0.6)
            private_redis.pause()
            try:
                stop.wait(0.3)  # the stall itself
            finally:
                private_redis.resume()

    seen = run_callers(acquirers, seconds=4.0, during=stalls)
    assert seen.errors == [] and seen.timeouts == 0
    assert len(seen.stamps) >= 3 * RATE
    # The limiter's decisions keep the promise; the threads' own departures, woken by a loaded
    # scheduler a little late at times, stay within what KIS accepts.
    assert busiest_second(granted) <= math.floor(RATE) + 1, f"{busiest_second(granted)} calls let go in one second"
    assert seen.busiest_second <= NOMINAL, f"{seen.busiest_second} calls left within one second"
