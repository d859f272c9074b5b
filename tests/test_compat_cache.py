"""0.6.1's response cache, as its users call it: CacheEntry, CacheManager, CachedKoreaInvestment.

The counters are exact in 0.6.1 and users' tests pin them, so these do too.
The wrapper runs against the fake KIS server over loopback; the fake's own
request counter shows what was served from the cache.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from korea_investment_stock import CachedKoreaInvestment, CacheEntry, CacheManager, FileTokenStorage, KoreaInvestment

from .workers import ACCOUNT


# ---------------------------------------------------------------------------------- CacheEntry
def test_cache_entry():
    entry = CacheEntry({"rt_cd": "0"}, ttl_seconds=300)
    assert entry.data == {"rt_cd": "0"}
    assert isinstance(entry.cached_at, datetime) and entry.cached_at.tzinfo is None  # naive local time
    assert (entry.expires_at - entry.cached_at).total_seconds() == 300
    assert not entry.is_expired() and 0 <= entry.age_seconds() < 60
    assert CacheEntry("old", ttl_seconds=-1).is_expired()


# -------------------------------------------------------------------------------- CacheManager
def test_one_miss_then_hits():
    cache = CacheManager()
    assert cache.get("k") is None
    cache.set("k", "v", ttl_seconds=60)
    assert cache.get("k") == "v" and cache.get("k") == "v"
    assert cache.get_stats() == {"cache_size": 1, "hits": 2, "misses": 1, "evictions": 0, "hit_rate": "66.67%"}


def test_stats_before_any_lookup():
    assert CacheManager().get_stats() == {"cache_size": 0, "hits": 0, "misses": 0, "evictions": 0, "hit_rate": "0.00%"}


def test_an_expired_entry_is_seen_until_read_then_counts_an_eviction_and_a_miss():
    cache = CacheManager()
    cache.set("k", "v", ttl_seconds=-1)  # already past its expiry
    info = cache.get_cache_info("k")
    assert info is not None and info["is_expired"] is True
    assert cache.get_stats()["cache_size"] == 1
    assert cache.get("k") is None
    assert cache.get_stats() == {"cache_size": 0, "hits": 0, "misses": 1, "evictions": 1, "hit_rate": "0.00%"}
    assert cache.get("k") is None  # gone now: a plain miss
    assert cache.get_stats()["evictions"] == 1 and cache.get_stats()["misses"] == 2


def test_invalidate_and_clear_count_what_they_remove():
    cache = CacheManager()
    for key in ("a", "b", "c"):
        cache.set(key, key.upper(), ttl_seconds=60)
    cache.invalidate("a")
    cache.invalidate("not-there")
    assert cache.get_stats()["evictions"] == 1
    cache.set("b", "B2", ttl_seconds=60)  # overwrites, no eviction
    assert cache.get("b") == "B2"
    cache.clear()
    assert cache.get_stats() == {"cache_size": 0, "hits": 1, "misses": 0, "evictions": 3, "hit_rate": "100.00%"}


def test_get_cache_info_counts_nothing():
    cache = CacheManager()
    cache.set("k", [1, 2, 3], ttl_seconds=10)
    info = cache.get_cache_info("k")
    assert set(info) == {"cached_at", "expires_at", "age_seconds", "is_expired"}
    assert datetime.fromisoformat(info["expires_at"]) > datetime.fromisoformat(info["cached_at"])
    assert cache.get_cache_info("missing") is None
    assert cache.get_stats()["hits"] == cache.get_stats()["misses"] == 0


def test_counts_stay_exact_across_threads():
    cache = CacheManager()
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait(30)
        for i in range(500):
            key = f"k{(n + i) % 20}"
            if cache.get(key) is None:
                cache.set(key, i, ttl_seconds=60)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stats = cache.get_stats()
    assert stats["hits"] + stats["misses"] == 8 * 500
    assert stats["cache_size"] == 20 and stats["evictions"] == 0


# ------------------------------------------------------------------------ CachedKoreaInvestment
def test_a_repeated_price_is_served_from_the_cache(broker, fake_kis):
    cached = CachedKoreaInvestment(broker, price_ttl=60)
    first = cached.fetch_price("005930", "KR")
    assert first["rt_cd"] == "0" and fake_kis.stats.rest_requests == 2  # product info, then the price
    assert cached.fetch_price("005930", "KR") is first
    assert fake_kis.stats.rest_requests == 2
    stats = cached.get_cache_stats()
    assert (stats["hits"], stats["misses"], stats["cache_size"], stats["cache_enabled"]) == (1, 1, 1, True)
    assert cached.cache.get_cache_info("fetch_price:005930_KR:") is not None  # 0.6.1's key


def test_each_method_and_market_has_its_own_entry_and_ttl(broker, fake_kis):
    cached = CachedKoreaInvestment(broker, price_ttl=7, stock_info_ttl=70)
    cached.fetch_price("005930", "KR")
    cached.fetch_price("AAPL", "US")
    cached.fetch_domestic_price("J", "005930")
    cached.fetch_etf_domestic_price("J", "069500")
    cached.fetch_price_detail_oversea("AAPL", "US")
    cached.fetch_stock_info("005930", "KR")
    cached.fetch_search_stock_info("005930", "KR")
    cached.fetch_ipo_schedule()
    sent = fake_kis.stats.rest_requests
    for _ in range(2):
        cached.fetch_price("005930", "KR")
        cached.fetch_price("AAPL", "US")
        cached.fetch_domestic_price("J", "005930")
        cached.fetch_etf_domestic_price("J", "069500")
        cached.fetch_price_detail_oversea("AAPL", "US")
        cached.fetch_stock_info("005930", "KR")
        cached.fetch_search_stock_info("005930", "KR")
        cached.fetch_ipo_schedule()
    assert fake_kis.stats.rest_requests == sent
    stats = cached.get_cache_stats()
    assert (stats["cache_size"], stats["misses"], stats["hits"]) == (8, 8, 16)

    def ttl(key: str) -> float:
        info = cached.cache.get_cache_info(key)
        return (datetime.fromisoformat(info["expires_at"]) - datetime.fromisoformat(info["cached_at"])).total_seconds()

    assert ttl("fetch_price:AAPL_US:") == 7 and ttl("fetch_domestic_price:J_005930:") == 7
    assert ttl("fetch_stock_info:005930_KR:") == 70 and ttl("fetch_ipo_schedule:None_None_:") == 1800


def test_ttl_defaults_and_zero_means_default(broker):
    cached = CachedKoreaInvestment(broker, price_ttl=0, symbols_ttl=None, ipo_ttl=60)
    assert CachedKoreaInvestment.DEFAULT_TTL == {"price": 5, "stock_info": 300, "symbols": 3600, "ipo": 1800}
    assert cached.ttl == {"price": 5, "stock_info": 300, "symbols": 3600, "ipo": 60}
    assert cached.get_cache_stats()["ttl_config"] == cached.ttl
    assert cached.broker is broker and cached.enable_cache is True and isinstance(cached.cache, CacheManager)


def test_an_answer_that_is_not_a_success_is_not_cached(fake_kis_factory, token_file):
    mock_kis = fake_kis_factory(environment="mock")  # KIS has no IPO schedule for mock accounts
    broker = KoreaInvestment(
        mock_kis.app_key, mock_kis.app_secret, ACCOUNT, FileTokenStorage(token_file), base_url=mock_kis.url
    )
    cached = CachedKoreaInvestment(broker)
    answer = cached.fetch_ipo_schedule()
    assert answer["rt_cd"] != "0"
    cached.fetch_ipo_schedule()
    assert mock_kis.stats.rest_requests == 2
    assert cached.get_cache_stats()["cache_size"] == 0
    broker.shutdown()


def test_the_expiry_is_the_ttl(broker, fake_kis):
    cached = CachedKoreaInvestment(broker, price_ttl=1)
    cached.fetch_domestic_price("J", "005930")
    time.sleep(1.05)  # the TTL itself is what is tested: wall time has to pass
    cached.fetch_domestic_price("J", "005930")
    stats = cached.get_cache_stats()
    assert (stats["misses"], stats["evictions"], stats["hits"]) == (2, 1, 0)
    assert fake_kis.stats.rest_requests == 2


def test_invalidate_cache_clears_everything_whatever_the_method(broker, fake_kis):
    cached = CachedKoreaInvestment(broker, price_ttl=60)
    cached.fetch_domestic_price("J", "005930")
    cached.fetch_stock_info("005930", "KR")
    cached.invalidate_cache("fetch_price")
    assert cached.get_cache_stats()["cache_size"] == 0
    cached.fetch_domestic_price("J", "005930")
    assert fake_kis.stats.rest_requests == 3


def test_disabled_passes_through(broker, fake_kis):
    cached = CachedKoreaInvestment(broker, enable_cache=False)
    assert cached.cache is None
    cached.fetch_domestic_price("J", "005930")
    cached.fetch_domestic_price("J", "005930")
    assert fake_kis.stats.rest_requests == 2
    cached.invalidate_cache()
    assert cached.get_cache_stats() == {"cache_enabled": False}
    with cached as same:
        assert same is cached


def test_the_context_manager_clears_the_cache_and_leaves_the_broker_open(broker):
    with CachedKoreaInvestment(broker, price_ttl=60) as cached:
        cached.fetch_domestic_price("J", "005930")
        assert cached.get_cache_stats()["cache_size"] == 1
    assert cached.get_cache_stats()["cache_size"] == 0
    assert broker.fetch_domestic_price("J", "005930")["rt_cd"] == "0"


def test_symbol_lists_are_cached_as_they_are(broker, fake_kis, monkeypatch):
    pytest.importorskip("pandas")
    monkeypatch.setenv("KOREA_INVESTMENT_MASTER_URL", fake_kis.url)
    cached = CachedKoreaInvestment(broker)
    kospi = cached.fetch_kospi_symbols()
    assert cached.fetch_kospi_symbols() is kospi
    assert "삼성전자" in set(kospi["한글명"])
    kosdaq = cached.fetch_kosdaq_symbols()
    assert cached.fetch_kosdaq_symbols() is kosdaq
    assert cached.cache.get_cache_info("fetch_kospi_symbols")["is_expired"] is False
    assert fake_kis.stats.master_downloads == {"kospi_code.mst.zip": 1, "kosdaq_code.mst.zip": 1}
    stats = cached.get_cache_stats()
    assert (stats["hits"], stats["misses"]) == (2, 2)
