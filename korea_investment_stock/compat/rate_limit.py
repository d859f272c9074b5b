"""0.6.1's pacing: :class:`RateLimiter` and the :class:`RateLimitedKoreaInvestment` wrapper.

Two limits hold at once for a wrapped client:

- **the wrapper's pace** (0.6.1's): each wrapper call waits until
  ``1 / calls_per_second`` has passed since the previous call through the same
  limiter.  It paces wrapper calls, not requests (a Korean ``fetch_price`` is
  two requests, a US one up to three), and counts them in :meth:`RateLimiter.get_stats`;
- **the app key's budget** (ours): every request the wrapped client sends still
  takes its slot from the client's ``rate_limiter``, shared by the threads,
  processes and servers on that app key (see :mod:`..limits`).  So two wrappers
  at 15/s on one app key, or fifty processes each with its own, stay inside
  KIS's 20 requests a second together.

The top-level name ``RateLimiter`` is this class, as in 0.6.1.  The per-app-key
limiter interface is :class:`korea_investment_stock.limits.RateLimiter`, also
exported as ``korea_investment_stock.AppKeyRateLimiter``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import KoreaInvestment

__all__ = ["RateLimitedKoreaInvestment", "RateLimiter"]

logger = logging.getLogger(__name__)

DEFAULT_CALLS_PER_SECOND = 15.0


def _interval(calls_per_second: float) -> float:
    """``1 / calls_per_second``, or 0.6.1's ``ValueError`` for a rate that is not positive."""
    if isinstance(calls_per_second, bool) or not isinstance(calls_per_second, int | float):
        raise TypeError(f"calls_per_second must be a number, not {type(calls_per_second).__name__}")
    if not calls_per_second > 0:  # also NaN
        raise ValueError("calls_per_second must be positive")
    return 0.0 if math.isinf(calls_per_second) else 1.0 / calls_per_second


class RateLimiter:
    """Spaces calls at least ``1 / calls_per_second`` apart, for the threads of one process (0.6.1's class).

    The first call never waits, and there is no burst.  Callers are served one
    at a time, in turn: a call that has to wait holds the others back while it
    sleeps, so the spacing is kept between any two calls.  A call that slept
    counts as throttled, and its sleep adds to the wait time.
    """

    def __init__(self, calls_per_second: float = DEFAULT_CALLS_PER_SECOND) -> None:
        self._min_interval = _interval(calls_per_second)
        self._calls_per_second = calls_per_second
        self._lock = threading.Lock()
        #: ``time.monotonic()`` of the previous call (None before any): spacing ignores wall-clock jumps.
        self._previous: float | None = None
        self._last_call = 0.0  # the same moment as epoch seconds, for the stats
        self._total_calls = 0
        self._throttled_calls = 0
        self._total_wait_time = 0.0

    def wait(self) -> None:
        """Return once this call may go: at once, or ``min_interval`` after the previous call."""
        with self._lock:
            now = time.monotonic()
            if self._previous is not None:
                pause = self._previous + self._min_interval - now
                if pause > 0:
                    logger.debug("pacing: waiting %.3fs (call #%d)", pause, self._total_calls + 1)
                    time.sleep(pause)
                    self._throttled_calls += 1
                    self._total_wait_time += pause
                    now = time.monotonic()
            self._previous = now
            self._last_call = time.time()
            self._total_calls += 1

    def get_stats(self) -> dict[str, Any]:
        """``calls_per_second``, ``min_interval``, ``last_call`` (epoch; 0.0 before any), ``total_calls``,
        ``throttled_calls``, ``throttle_rate``, ``total_wait_time`` and ``avg_wait_time`` (0.0 before any)."""
        with self._lock:
            calls, throttled, waited = self._total_calls, self._throttled_calls, self._total_wait_time
            return {
                "calls_per_second": self._calls_per_second,
                "min_interval": self._min_interval,
                "last_call": self._last_call,
                "total_calls": calls,
                "throttled_calls": throttled,
                "throttle_rate": throttled / calls if calls else 0.0,
                "total_wait_time": waited,
                "avg_wait_time": waited / throttled if throttled else 0.0,
            }

    def adjust_rate_limit(self, calls_per_second: float) -> None:
        """Change the pace from the next call on; the counters stay."""
        interval = _interval(calls_per_second)
        with self._lock:
            self._calls_per_second = calls_per_second
            self._min_interval = interval

    def __repr__(self) -> str:
        return f"RateLimiter(calls_per_second={self._calls_per_second!r})"


class RateLimitedKoreaInvestment:
    """A :class:`~..client.KoreaInvestment` whose calls are paced at ``calls_per_second`` (0.6.1's wrapper).

    Each call waits for the wrapper's pace once, then goes to the broker, whose
    every request also waits for its slot in the app key's shared budget.  The
    wrapper's own stats count wrapper calls (:meth:`get_rate_limit_stats`).  As a
    context manager it enters the broker and, on exit, closes it.
    """

    def __init__(self, broker: KoreaInvestment, calls_per_second: float = DEFAULT_CALLS_PER_SECOND) -> None:
        self._broker = broker
        self._rate_limiter = RateLimiter(calls_per_second)

    @property
    def broker(self) -> KoreaInvestment:
        """The wrapped client."""
        return self._broker

    def __enter__(self) -> RateLimitedKoreaInvestment:
        self._broker.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any:
        return self._broker.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ paced calls
    def fetch_price(self, symbol: str, market: str) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_price`."""
        self._rate_limiter.wait()
        return self._broker.fetch_price(symbol, market)

    def fetch_domestic_price(self, market_code: str, symbol: str) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_domestic_price`."""
        self._rate_limiter.wait()
        return self._broker.fetch_domestic_price(market_code, symbol)

    def fetch_etf_domestic_price(self, market_code: str, symbol: str) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_etf_domestic_price`."""
        self._rate_limiter.wait()
        return self._broker.fetch_etf_domestic_price(market_code, symbol)

    def fetch_price_detail_oversea(self, symbol: str, market: str) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_price_detail_oversea`."""
        self._rate_limiter.wait()
        return self._broker.fetch_price_detail_oversea(symbol, market)

    def fetch_stock_info(self, symbol: str, market: str) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_stock_info`."""
        self._rate_limiter.wait()
        return self._broker.fetch_stock_info(symbol, market)

    def fetch_search_stock_info(self, symbol: str, market: str) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_search_stock_info`."""
        self._rate_limiter.wait()
        return self._broker.fetch_search_stock_info(symbol, market)

    def fetch_kospi_symbols(self) -> Any:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_kospi_symbols`."""
        self._rate_limiter.wait()
        return self._broker.fetch_kospi_symbols()

    def fetch_kosdaq_symbols(self) -> Any:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_kosdaq_symbols`."""
        self._rate_limiter.wait()
        return self._broker.fetch_kosdaq_symbols()

    def fetch_ipo_schedule(self) -> dict[str, Any]:
        """Wait for the wrapper's pace, then :meth:`KoreaInvestment.fetch_ipo_schedule`."""
        self._rate_limiter.wait()
        return self._broker.fetch_ipo_schedule()

    # 0.6.1 forwarded nine IPO helpers its client never had; they wait, then raise AttributeError
    # from the broker, as there.
    def get_ipo_schedule_details(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_ipo_schedule_details", args, kwargs)

    def get_upcoming_ipos(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_upcoming_ipos", args, kwargs)

    def get_recent_ipos(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_recent_ipos", args, kwargs)

    def get_ipo_by_company(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_ipo_by_company", args, kwargs)

    def get_ipo_by_date_range(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_ipo_by_date_range", args, kwargs)

    def get_ipo_statistics(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_ipo_statistics", args, kwargs)

    def filter_ipos_by_market(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("filter_ipos_by_market", args, kwargs)

    def get_ipo_calendar(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("get_ipo_calendar", args, kwargs)

    def format_ipo_schedule(self, *args: Any, **kwargs: Any) -> Any:
        """0.6.1 forwarded it; the client has no such method: waits, then raises ``AttributeError``."""
        return self._forward("format_ipo_schedule", args, kwargs)

    # ------------------------------------------------------------------ the pace
    def get_rate_limit_stats(self) -> dict[str, Any]:
        """The wrapper's :meth:`RateLimiter.get_stats` (wrapper calls, not requests)."""
        return self._rate_limiter.get_stats()

    def adjust_rate_limit(self, calls_per_second: float) -> None:
        """Change the wrapper's pace; the app key's budget is unchanged."""
        self._rate_limiter.adjust_rate_limit(calls_per_second)

    def _forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._rate_limiter.wait()
        return getattr(self._broker, name)(*args, **kwargs)
