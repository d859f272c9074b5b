"""0.6.1's in-memory response cache: :class:`CacheEntry`, :class:`CacheManager`, :class:`CachedKoreaInvestment`.

Per instance and per process, as in 0.6.1; the token and the rate budget are
what the fleet shares, a price five seconds old is not.  The counting rules are
0.6.1's and its users' tests pin them exactly:

- ``get`` counts a hit or a miss; an entry found expired is dropped then, and
  counts as an eviction and a miss (entries are not purged in the background,
  so ``cache_size`` and :meth:`CacheManager.get_cache_info` still see an expired
  entry until it is read);
- ``invalidate`` counts an eviction when the key was there, ``clear`` one per entry;
- ``get_cache_info`` counts nothing.

Why no caching library: ``cachetools``' per-item TTL cache (``TLRUCache``) drops
expired entries on every write and hides them from reads, so it cannot give
those counts without reaching into its private state.  A dict under a lock is
the whole algorithm, and the base install stays ``requests`` and ``filelock``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from ..client import KoreaInvestment

__all__ = ["CacheEntry", "CacheManager", "CachedKoreaInvestment"]


class CacheEntry:
    """One cached value: ``data``, ``cached_at`` and ``expires_at`` (naive local datetimes, as in 0.6.1)."""

    def __init__(self, data: Any, ttl_seconds: float) -> None:
        self.data = data
        self.cached_at = datetime.now()
        self.expires_at = self.cached_at + timedelta(seconds=ttl_seconds)

    def is_expired(self) -> bool:
        """True once the wall clock is past ``expires_at``."""
        return datetime.now() > self.expires_at

    def age_seconds(self) -> float:
        """Seconds since the value was cached."""
        return (datetime.now() - self.cached_at).total_seconds()

    def __repr__(self) -> str:  # the data may be a large answer: not shown
        return f"CacheEntry(cached_at={self.cached_at.isoformat()!r}, expires_at={self.expires_at.isoformat()!r})"


class CacheManager:
    """A thread-safe in-memory cache with a TTL per entry and hit/miss/eviction counters."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key: str) -> Any:
        """The cached data, or None when missing or expired (an expired entry is dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.is_expired():
                del self._entries[key]
                self._evictions += 1
                entry = None
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            return entry.data

    def set(self, key: str, data: Any, ttl_seconds: float) -> None:
        """Cache ``data`` under ``key`` for ``ttl_seconds``, replacing what was there."""
        entry = CacheEntry(data, ttl_seconds)
        with self._lock:
            self._entries[key] = entry

    def invalidate(self, key: str) -> None:
        """Drop ``key`` (an eviction, if it was there)."""
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._evictions += 1

    def clear(self) -> None:
        """Drop every entry (one eviction each)."""
        with self._lock:
            self._evictions += len(self._entries)
            self._entries.clear()

    def get_stats(self) -> dict[str, Any]:
        """``cache_size``, ``hits``, ``misses``, ``evictions`` and ``hit_rate`` (text such as ``"66.67%"``)."""
        with self._lock:
            looked_up = self._hits + self._misses
            rate = self._hits / looked_up * 100 if looked_up else 0.0
            return {
                "cache_size": len(self._entries),
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
                "hit_rate": f"{rate:.2f}%",
            }

    def get_cache_info(self, key: str) -> dict[str, Any] | None:
        """When ``key`` was cached and expires (ISO text), its age and whether it expired; counts nothing."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            return {
                "cached_at": entry.cached_at.isoformat(),
                "expires_at": entry.expires_at.isoformat(),
                "age_seconds": entry.age_seconds(),
                "is_expired": entry.is_expired(),
            }


class CachedKoreaInvestment:
    """A :class:`~..client.KoreaInvestment` whose quotation answers are cached for a while (0.6.1's wrapper).

    Args:
        broker: the client to call on a miss.
        enable_cache: False passes every call through, and caches nothing.
        price_ttl, stock_info_ttl, symbols_ttl, ipo_ttl: seconds per kind of
            answer; 0 or None means :attr:`DEFAULT_TTL`'s.

    Only successful answers (``rt_cd == "0"``) are cached; the symbol lists
    (DataFrames) always.  Each call's arguments make its own entry, so one
    symbol on two markets is two entries.  Leaving the ``with`` block clears
    the cache; the broker stays open.
    """

    DEFAULT_TTL: ClassVar[dict[str, int]] = {"price": 5, "stock_info": 300, "symbols": 3600, "ipo": 1800}

    def __init__(
        self,
        broker: KoreaInvestment,
        enable_cache: bool = True,
        price_ttl: int | None = None,
        stock_info_ttl: int | None = None,
        symbols_ttl: int | None = None,
        ipo_ttl: int | None = None,
    ) -> None:
        self.broker = broker
        self.enable_cache = enable_cache
        self.cache: CacheManager | None = CacheManager() if enable_cache else None
        given = {"price": price_ttl, "stock_info": stock_info_ttl, "symbols": symbols_ttl, "ipo": ipo_ttl}
        self.ttl: dict[str, int] = {kind: given[kind] or default for kind, default in self.DEFAULT_TTL.items()}

    # ------------------------------------------------------------------ quotations
    def fetch_price(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_price`, cached for the price TTL."""
        return self._answer("price", "fetch_price", (symbol, market), lambda: self.broker.fetch_price(symbol, market))

    def fetch_domestic_price(self, market_code: str, symbol: str) -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_domestic_price`, cached for the price TTL."""
        return self._answer(
            "price",
            "fetch_domestic_price",
            (market_code, symbol),
            lambda: self.broker.fetch_domestic_price(market_code, symbol),
        )

    def fetch_etf_domestic_price(self, market_code: str, symbol: str) -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_etf_domestic_price`, cached for the price TTL."""
        return self._answer(
            "price",
            "fetch_etf_domestic_price",
            (market_code, symbol),
            lambda: self.broker.fetch_etf_domestic_price(market_code, symbol),
        )

    def fetch_price_detail_oversea(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_price_detail_oversea`, cached for the price TTL (0.6.1's default market)."""
        return self._answer(
            "price",
            "fetch_price_detail_oversea",
            (symbol, market),
            lambda: self.broker.fetch_price_detail_oversea(symbol, market),
        )

    def fetch_stock_info(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_stock_info`, cached for the stock-info TTL."""
        return self._answer(
            "stock_info", "fetch_stock_info", (symbol, market), lambda: self.broker.fetch_stock_info(symbol, market)
        )

    def fetch_search_stock_info(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_search_stock_info`, cached for the stock-info TTL."""
        return self._answer(
            "stock_info",
            "fetch_search_stock_info",
            (symbol, market),
            lambda: self.broker.fetch_search_stock_info(symbol, market),
        )

    def fetch_kospi_symbols(self) -> Any:
        """:meth:`KoreaInvestment.fetch_kospi_symbols` (a DataFrame), cached for the symbols TTL."""
        return self._listing("fetch_kospi_symbols", self.broker.fetch_kospi_symbols)

    def fetch_kosdaq_symbols(self) -> Any:
        """:meth:`KoreaInvestment.fetch_kosdaq_symbols` (a DataFrame), cached for the symbols TTL."""
        return self._listing("fetch_kosdaq_symbols", self.broker.fetch_kosdaq_symbols)

    def fetch_ipo_schedule(
        self, from_date: str | None = None, to_date: str | None = None, symbol: str = ""
    ) -> dict[str, Any]:
        """:meth:`KoreaInvestment.fetch_ipo_schedule`, cached for the IPO TTL."""
        return self._answer(
            "ipo",
            "fetch_ipo_schedule",
            (from_date, to_date, symbol),
            lambda: self.broker.fetch_ipo_schedule(from_date, to_date, symbol),
        )

    # ---------------------------------------------------------------- the cache
    def invalidate_cache(self, method: str | None = None) -> None:
        """Clear the whole cache (``method`` is accepted, and as in 0.6.1 it clears everything)."""
        del method
        if self.cache is not None:
            self.cache.clear()

    def get_cache_stats(self) -> dict[str, Any]:
        """The manager's counters plus ``cache_enabled`` and ``ttl_config``; ``{'cache_enabled': False}`` when off."""
        if self.cache is None:
            return {"cache_enabled": False}
        stats = self.cache.get_stats()
        stats["cache_enabled"] = True
        stats["ttl_config"] = self.ttl
        return stats

    def __enter__(self) -> CachedKoreaInvestment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self.cache is not None:
            self.cache.clear()
        return False

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _make_cache_key(method: str, *args: Any, **kwargs: Any) -> str:
        """``method:arg1_arg2:k=v``, 0.6.1's key (so ``get_cache_info`` finds the same names)."""
        positional = "_".join(str(arg) for arg in args)
        named = "_".join(f"{name}={value}" for name, value in sorted(kwargs.items()))
        return f"{method}:{positional}:{named}"

    def _answer(self, kind: str, method: str, args: tuple[Any, ...], call: Any) -> dict[str, Any]:
        """A KIS answer from the cache, else from ``call``; cached only when KIS answered ``rt_cd == "0"``."""
        if self.cache is None:
            answer: dict[str, Any] = call()
            return answer
        key = self._make_cache_key(method, *args)
        cached = self.cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        answer = call()
        if isinstance(answer, dict) and answer.get("rt_cd") == "0":
            self.cache.set(key, answer, self.ttl[kind])
        return answer

    def _listing(self, method: str, call: Any) -> Any:
        """A symbol list from the cache, else from ``call``; always cached (under the method's bare name)."""
        if self.cache is None:
            return call()
        cached = self.cache.get(method)
        if cached is not None:
            return cached
        listing = call()
        self.cache.set(method, listing, self.ttl["symbols"])
        return listing
