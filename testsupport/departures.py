"""Callers that stamp the moment each REST slot lets them go, and the busiest second of those stamps.

The limiter's promise is about departures: no sliding second holds more than
``floor(rate) + 1`` of them.  The fault tests and the bench (``python -m bench.limiter_faults``)
run callers through a limiter, make the fault happen for real, and count
here, the same way:

- each caller loops ``acquire()`` and stamps ``time.monotonic()`` when it
  returns (one clock for every process of a host);
- :func:`busiest_second` is the most stamps in any window ``[t, t + 1)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from korea_investment_stock.errors import RateLimitWaitTimeout
from korea_investment_stock.limits import RateLimiter

#: The longest a harness wait may take (joins, barriers).
HANG = 60.0


def record_grants(limiter: RateLimiter) -> list[float]:
    """From now on, every go time ``limiter`` grants (``time.monotonic()``), in a list that grows.

    The limiter's own decision, apart from how late a loaded scheduler wakes the
    thread that waits for it.  It wraps the instance's ``_reserve``: the shared
    store and every fallback.
    """
    granted: list[float] = []
    reserve = limiter._reserve

    def recorded(bucket: str, rate: float, max_wait: float) -> float | None:
        go_at = reserve(bucket, rate, max_wait)
        if go_at is not None:
            granted.append(go_at)
        return go_at

    limiter._reserve = recorded  # type: ignore[method-assign]
    return granted


def busiest_second(stamps: Sequence[float]) -> int:
    """The most stamps in any one-second window ``[t, t + 1)``."""
    ordered = sorted(stamps)
    most, first = 0, 0
    for last, stamp in enumerate(ordered):
        while stamp - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass
class Departures:
    """What a group of callers saw: departure stamps, and acquires that timed out or failed."""

    stamps: list[float] = field(default_factory=list)
    per_caller: list[int] = field(default_factory=list)
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def busiest_second(self) -> int:
        return busiest_second(self.stamps)


def run_callers(
    acquirers: Sequence[Callable[[], object]],
    seconds: float,
    *,
    during: Callable[[threading.Event], None] | None = None,
) -> Departures:
    """Each of ``acquirers`` in a thread of its own, looping for ``seconds``; the departures.

    ``during(stop)`` runs in this thread once every caller has started (a fault
    schedule); the window ends after ``seconds`` or when ``during`` returns,
    whichever is later.  Callers stop once the window is over; an acquire still
    waiting for its slot then finishes (its departure counts: it left).
    """
    result = Departures(per_caller=[0] * len(acquirers))
    lock = threading.Lock()
    stop = threading.Event()
    start = threading.Barrier(len(acquirers) + 1)

    def caller(index: int, acquire: Callable[[], object]) -> None:
        start.wait(HANG)
        while not stop.is_set():
            try:
                acquire()
            except RateLimitWaitTimeout:
                with lock:
                    result.timeouts += 1
                continue
            except Exception as exc:
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                return
            left = time.monotonic()
            with lock:
                result.stamps.append(left)
                result.per_caller[index] += 1

    threads = [threading.Thread(target=caller, args=pair, daemon=True) for pair in enumerate(acquirers)]
    for thread in threads:
        thread.start()
    start.wait(HANG)
    began = time.monotonic()
    if during is not None:
        during(stop)
    stop.wait(max(0.0, seconds - (time.monotonic() - began)))
    stop.set()
    for thread in threads:
        thread.join(HANG)
        if thread.is_alive():
            raise AssertionError("a caller hung")
    return result
