"""Reconnect pacing: exponential backoff with full jitter, and a bound per minute.

Why both: jitter keeps a fleet from reconnecting in lockstep after a KIS hiccup, and KIS's
2026-02 notice says repeated connect/close loops can get the IP or app key blocked, so however
the backoff is tuned, no more than ``per_minute`` attempts happen in any 60 s.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Backoff", "ReconnectBudget"]


class Backoff:
    """Delays ``uniform(0, min(cap, base * 2**n))`` for the n-th retry since the last :meth:`reset`."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] = random.random) -> None:
        if base < 0 or cap < base:
            raise ValueError("backoff needs 0 <= base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.cap, self.base * float(1 << self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return ceiling * self._rng()

    def reset(self) -> None:
        """After a healthy connection: start small again."""
        self._attempt = 0


class ReconnectBudget:
    """At most ``per_minute`` attempts in any sliding 60 s (monotonic clock)."""

    def __init__(self, per_minute: int = 6, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self.per_minute = per_minute
        self._clock = clock
        self._attempts: deque[float] = deque()

    def wait_time(self) -> float:
        """Seconds until one more attempt fits (0 if it fits now)."""
        now = self._clock()
        while self._attempts and now - self._attempts[0] >= 60.0:
            self._attempts.popleft()
        if len(self._attempts) < self.per_minute:
            return 0.0
        return 60.0 - (now - self._attempts[0])

    def record(self) -> None:
        """Count an attempt made now."""
        self._attempts.append(self._clock())
