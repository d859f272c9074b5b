"""0.6.1's pacing, as its users call it: RateLimiter and RateLimitedKoreaInvestment.

Spacing and counters are asserted, not speed (0.6.1's own suite times them;
that run is kept outside this repository).  The wrapper runs against the fake
KIS server over loopback, and its requests still take their slots in the app
key's shared budget: two wrappers at 15/s each stay under KIS's 20/s together.
"""

from __future__ import annotations

import threading
import time

import pytest

from korea_investment_stock import (
    AppKeyRateLimiter,
    FileRateLimiter,
    FileTokenStorage,
    KoreaInvestment,
    RateLimitedKoreaInvestment,
    RateLimiter,
)
from korea_investment_stock import limits as limits_module

from .test_client import RecordingSession
from .workers import ACCOUNT

STATS_KEYS = {
    "calls_per_second",
    "min_interval",
    "last_call",
    "total_calls",
    "throttled_calls",
    "throttle_rate",
    "total_wait_time",
    "avg_wait_time",
}


# --------------------------------------------------------------------------------- the names
def test_the_top_level_rate_limiter_is_0_6_1s_and_ours_keeps_its_names():
    assert RateLimiter(calls_per_second=15).get_stats()["calls_per_second"] == 15
    assert AppKeyRateLimiter is limits_module.RateLimiter
    assert issubclass(FileRateLimiter, AppKeyRateLimiter)
    from korea_investment_stock.rate_limit import RateLimiter as OldPath
    from korea_investment_stock.rate_limit.rate_limited_korea_investment import RateLimitedKoreaInvestment as Wrapper

    assert OldPath is RateLimiter and Wrapper is RateLimitedKoreaInvestment


# ------------------------------------------------------------------------------- RateLimiter
def test_stats_before_any_call():
    stats = RateLimiter().get_stats()
    assert set(stats) == STATS_KEYS
    assert stats["calls_per_second"] == 15.0 and stats["min_interval"] == pytest.approx(1 / 15)
    assert (stats["last_call"], stats["total_calls"], stats["throttled_calls"]) == (0.0, 0, 0)
    assert (stats["throttle_rate"], stats["total_wait_time"], stats["avg_wait_time"]) == (0.0, 0.0, 0.0)


def test_calls_are_spaced_and_every_call_after_the_first_is_throttled():
    limiter = RateLimiter(calls_per_second=100)
    stamps = []
    for _ in range(10):
        limiter.wait()
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.01 * 0.95  # sleep never returns early; a little slack for clock granularity
    stats = limiter.get_stats()
    assert (stats["total_calls"], stats["throttled_calls"]) == (10, 9)
    assert stats["throttle_rate"] == pytest.approx(0.9)
    assert stats["total_wait_time"] > 0
    assert stats["avg_wait_time"] == pytest.approx(stats["total_wait_time"] / 9)
    assert abs(stats["last_call"] - time.time()) < 60  # epoch seconds


def test_the_first_call_is_never_throttled():
    limiter = RateLimiter(calls_per_second=0.001)  # one call every 1000 s
    limiter.wait()
    assert limiter.get_stats()["throttled_calls"] == 0


def test_threads_take_turns():
    limiter = RateLimiter(calls_per_second=50)
    barrier = threading.Barrier(3)

    def worker() -> None:
        barrier.wait(30)
        for _ in range(5):
            limiter.wait()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stats = limiter.get_stats()
    assert stats["total_calls"] == 15
    assert stats["throttled_calls"] == 14  # each call waited for the one before it
    assert stats["total_wait_time"] >= 14 * 0.02 * 0.9


def test_adjust_rate_limit_keeps_the_counters():
    limiter = RateLimiter(calls_per_second=10)
    limiter.wait()
    limiter.adjust_rate_limit(calls_per_second=20)
    stats = limiter.get_stats()
    assert stats["calls_per_second"] == 20 and stats["min_interval"] == pytest.approx(0.05)
    assert stats["total_calls"] == 1


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan")])
def test_a_rate_that_is_not_positive_is_a_value_error(bad):
    with pytest.raises(ValueError, match="calls_per_second must be positive"):
        RateLimiter(calls_per_second=bad)
    limiter = RateLimiter(10)
    with pytest.raises(ValueError, match="calls_per_second must be positive"):
        limiter.adjust_rate_limit(calls_per_second=bad)
    assert limiter.get_stats()["calls_per_second"] == 10


# ------------------------------------------------------------------ RateLimitedKoreaInvestment
def test_the_wrapper_counts_its_own_calls_not_requests(broker, fake_kis):
    paced = RateLimitedKoreaInvestment(broker, calls_per_second=200)
    for _ in range(3):
        assert paced.fetch_price("005930", "KR")["rt_cd"] == "0"
    stats = paced.get_rate_limit_stats()
    assert stats["calls_per_second"] == 200 and stats["total_calls"] == 3
    assert fake_kis.stats.rest_requests == 6  # a Korean price is two requests


def test_every_paced_method_reaches_the_broker(broker, fake_kis):
    paced = RateLimitedKoreaInvestment(broker, calls_per_second=200)
    assert paced.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert paced.fetch_etf_domestic_price("J", "069500")["rt_cd"] == "0"
    assert paced.fetch_price_detail_oversea("AAPL", "US")["rt_cd"] == "0"
    assert paced.fetch_stock_info("AAPL", "US")["rt_cd"] == "0"
    assert paced.fetch_search_stock_info("005930", "KR")["rt_cd"] == "0"
    assert paced.fetch_ipo_schedule()["rt_cd"] == "0"
    assert paced.get_rate_limit_stats()["total_calls"] == 6
    assert paced.broker is broker


@pytest.mark.parametrize(
    "name",
    [
        "get_ipo_schedule_details",
        "get_upcoming_ipos",
        "get_recent_ipos",
        "get_ipo_by_company",
        "get_ipo_by_date_range",
        "get_ipo_statistics",
        "filter_ipos_by_market",
        "get_ipo_calendar",
        "format_ipo_schedule",
    ],
)
def test_the_nine_ipo_helpers_0_6_1s_client_never_had_raise_attribute_error(broker, name):
    paced = RateLimitedKoreaInvestment(broker, calls_per_second=200)
    with pytest.raises(AttributeError, match=name):
        getattr(paced, name)("anything")


def test_adjust_rate_limit_at_runtime(broker):
    paced = RateLimitedKoreaInvestment(broker)
    assert paced.get_rate_limit_stats()["calls_per_second"] == 15.0
    paced.adjust_rate_limit(calls_per_second=10)
    assert paced.get_rate_limit_stats()["calls_per_second"] == 10
    with pytest.raises(ValueError, match="calls_per_second must be positive"):
        paced.adjust_rate_limit(0)


def test_the_context_manager_closes_the_broker(fake_kis, token_file):
    session = RecordingSession()
    broker = KoreaInvestment(
        fake_kis.app_key, fake_kis.app_secret, ACCOUNT, FileTokenStorage(token_file), session=session
    )
    with RateLimitedKoreaInvestment(broker, calls_per_second=200) as paced:
        assert isinstance(paced, RateLimitedKoreaInvestment)
        assert paced.fetch_price("005930", "KR")["rt_cd"] == "0"
        assert session.closed == 0
    assert session.closed == 1


def test_two_wrappers_at_15_per_second_stay_inside_kis_20_per_second_together(
    fake_kis_factory, token_file, monkeypatch
):
    """The wrapper paces its own calls; the app key's shared budget still paces every request."""
    from testsupport.environment import rate_limited

    rate_limited(monkeypatch)  # the default limiter, on (the test suite turns it off elsewhere)
    kis = fake_kis_factory(rest_rate_limit=20)  # KIS's own limit: more in any second is EGW00201
    store = FileTokenStorage(token_file)
    brokers = [KoreaInvestment(kis.app_key, kis.app_secret, ACCOUNT, store, base_url=kis.url) for _ in range(2)]
    wrappers = [RateLimitedKoreaInvestment(broker, calls_per_second=15) for broker in brokers]
    answers: list[str] = []
    barrier = threading.Barrier(2)

    def caller(paced: RateLimitedKoreaInvestment) -> None:
        barrier.wait(30)
        for _ in range(12):
            answers.append(paced.fetch_price("005930", "KR")["rt_cd"])  # two requests each

    threads = [threading.Thread(target=caller, args=(w,)) for w in wrappers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == ["0"] * 24
    assert kis.stats.rest_requests == 48 and kis.stats.rest_rejected == {}, kis.stats.rest_rejected
    for broker in brokers:
        broker.shutdown()
