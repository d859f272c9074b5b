"""The realtime session, hub and streams against the fake KIS WebSocket over loopback (no patching).

Waits are on events (the stream's queue, the fake's counters), never on sleeps; counts are
asserted at the fake, which is the only honest witness of what went over the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest

pytest.importorskip("websockets")
pytest.importorskip("cryptography")

from korea_investment_stock.errors import ConfigurationError, SessionInUseError, SubscriptionLimitError
from korea_investment_stock.realtime import ExecutionNotice, Gap, OrderBook, SubscriptionRegistry, Trade
from korea_investment_stock.realtime.approval import LocalApprovalKeys, issue_approval_key
from korea_investment_stock.realtime.backoff import Backoff
from korea_investment_stock.realtime.hub import Hub
from korea_investment_stock.realtime.stream import Stream
from korea_investment_stock.testing import FakeKIS

HTS = "HTSUSER01"
E = TypeVar("E")


@pytest.fixture
def fake() -> Iterator[FakeKIS]:
    with FakeKIS(rest_rate_limit=None, websocket=True) as server:
        yield server


@pytest.fixture
def make_hub(fake: FakeKIS) -> Iterator[Callable[..., Hub]]:
    hubs: list[Hub] = []
    keys = LocalApprovalKeys(lambda: issue_approval_key(fake.url, fake.app_key, fake.app_secret))

    def make(**options: Any) -> Hub:
        settings: dict[str, Any] = {
            "hts_id": HTS,
            "answer_timeout": 5.0,
            "silence_timeout": 30.0,
            "backoff": Backoff(base=0.01, cap=0.05),
            "reconnects_per_minute": 100,
        }
        settings.update(options)
        source = settings.pop("approval_keys", keys)
        hub = Hub(fake.ws_url, source, **settings)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def next_of(stream: Stream, kind: type[E], timeout: float = 5.0) -> E:
    """The next event of ``kind`` (others are skipped); fails after ``timeout``."""
    while True:
        event = stream.get(timeout=timeout)
        assert event is not None, f"no {kind.__name__} within {timeout} s"
        if isinstance(event, kind):
            return event


def test_trades_multi_record_with_extra_fields(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    with make_hub().stream() as stream:
        stream.subscribe(trades=["005930"])
        fake.stream.configure(extra_fields=4)
        assert fake.stream.emit_trades("005930", records=3) == 1
        trades = [next_of(stream, Trade) for _ in range(3)]
    assert [t.symbol for t in trades] == ["005930"] * 3
    assert [t.volume for t in trades] == [2, 3, 4]  # the fake: sequence 1.. gives volume sequence % 10 + 1
    assert all(isinstance(t.price, Decimal) and t.time.utcoffset() is not None for t in trades)
    assert len(trades[0].raw) == 50


def test_orderbooks(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    with make_hub().stream() as stream:
        stream.subscribe(orderbooks=["000660"])
        fake.stream.emit_orderbooks("000660")
        book = next_of(stream, OrderBook)
    assert book.symbol == "000660" and len(book.asks) == 10 and book.asks[0][0] > book.bids[0][0]


def test_execution_notices_decrypted(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    with make_hub().stream() as stream:
        stream.subscribe(notices=True)
        assert fake.stream.emit_notice(HTS, "0000054321", "005930", "sell", 5, 70900) == 1
        notice = next_of(stream, ExecutionNotice)
    assert (notice.order_number, notice.symbol, notice.side) == ("0000054321", "005930", "sell")
    assert (notice.filled_quantity, notice.price, notice.filled) == (5, Decimal(70900), True)


def test_mock_notices_use_h0stcni9(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    with make_hub(mock=True).stream() as stream:
        stream.subscribe(notices=True)
        assert fake.stream.emit_notice(HTS, "1", "005930", "buy", 1, 100) == 1
        assert next_of(stream, ExecutionNotice).side == "buy"


def test_notices_without_an_hts_id_is_a_clear_error(make_hub: Callable[..., Hub]) -> None:
    with make_hub(hts_id=None).stream() as stream, pytest.raises(ConfigurationError, match="KOREA_INVESTMENT_HTS_ID"):
        stream.subscribe(notices=True)


def test_registry_refuses_the_42nd_before_sending(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    symbols = [f"{n:06d}" for n in range(20)]
    with make_hub().stream() as stream:
        stream.subscribe(trades=symbols, orderbooks=symbols, notices=True)
        assert fake.stream.stats.subscriptions == {fake.app_key: 41}
        with pytest.raises(SubscriptionLimitError) as refused:
            stream.subscribe(trades=["999999"])
        assert refused.value.cap == 41 and len(refused.value.held) == 41
        assert f"notices:{HTS}" in refused.value.held
        stats = fake.stream.stats
        assert (stats.subscribes, stats.opsp0008) == (41, 0)  # nothing was sent
        fake.stream.emit_trades("000001")
        assert next_of(stream, Trade).symbol == "000001"  # the session was not disturbed


def test_opsp0008_from_kis_is_a_limit_error_and_the_session_goes_on(
    fake: FakeKIS, make_hub: Callable[..., Hub]
) -> None:
    fake.stream.configure(subscription_cap=2)
    hub = make_hub()
    with hub.stream() as stream:
        stream.subscribe(trades=["000001", "000002"])
        with pytest.raises(SubscriptionLimitError, match="OPSP0008"):
            stream.subscribe(trades=["000003"])
        assert fake.stream.stats.opsp0008 == 1
        assert set(hub.registry.held()) == {s for s in hub.registry.held() if s.key in ("000001", "000002")}
        fake.stream.emit_trades("000002")
        assert next_of(stream, Trade).symbol == "000002"


def test_a_second_session_on_the_key_is_refused(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    first, second = make_hub(), make_hub()
    with first.stream() as s1, second.stream() as s2:
        s1.subscribe(trades=["005930"])
        with pytest.raises(SessionInUseError, match="OPSP8996"):
            s2.subscribe(trades=["000660"])
        assert isinstance(second.session.failure, SessionInUseError)
        with pytest.raises(SessionInUseError):
            s2.subscribe(trades=["000660"])  # final: no second try at KIS
        fake.stream.emit_trades("005930")
        assert next_of(s1, Trade).symbol == "005930"
    stats = fake.stream.stats
    assert stats.opsp8996 == 1
    assert stats.max_concurrent == {fake.app_key: 1}
    assert stats.connections == 2


def test_a_stale_approval_key_adopts_the_newest(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    newest = [issue_approval_key(fake.url, fake.app_key, fake.app_secret)]
    asked: list[str | None] = []

    def shared_keys(stale: str | None) -> str:  # what phase 2's store does: hand out the newest key
        asked.append(stale)
        return newest[0]

    hub = make_hub(approval_keys=shared_keys)
    with hub.stream() as stream:
        stream.subscribe(trades=["005930"])
        newest[0] = issue_approval_key(fake.url, fake.app_key, fake.app_secret)  # another process re-issued
        stream.subscribe(trades=["000660"])  # refused with the old key, then done with the newest
        gap = next_of(stream, Gap)
        assert "closed" in gap.reason
        fake.stream.emit_trades("005930")
        fake.stream.emit_trades("000660")
        symbols = {next_of(stream, Trade).symbol, next_of(stream, Trade).symbol}
    assert symbols == {"005930", "000660"}
    assert asked[0] is None and asked[1] is not None and asked[1] != newest[0]
    stats = fake.stream.stats
    assert stats.stale_key_refusals == 1 and stats.max_concurrent == {fake.app_key: 1}
    assert hub.session.stats.stale_keys == 1


def test_a_silent_socket_is_reconnected_with_a_gap(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(silence_timeout=0.3)
    with hub.stream() as stream:
        stream.subscribe(trades=["005930"], orderbooks=["005930"])
        assert fake.stream.go_silent() == 1
        gap = next_of(stream, Gap)
        assert gap.reason.startswith("silent") and gap.start <= gap.end and gap.dropped == 0
        fake.stream.wait_for(lambda s: s.subscriptions.get(fake.app_key) == 2)
        fake.stream.emit_trades("005930")
        assert next_of(stream, Trade).symbol == "005930"
    stats = fake.stream.stats
    assert stats.sessions_opened == {fake.app_key: 2}
    assert stats.max_concurrent == {fake.app_key: 1}
    assert stats.opsp8996 == 0


def test_a_dropped_connection_with_refused_reconnects_recovers(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    with hub.stream() as stream:
        stream.subscribe(trades=["005930"])
        fake.stream.refuse_connections(0.3)
        assert fake.stream.drop_connections() == 1
        gap = next_of(stream, Gap)
        assert "1006" in gap.reason
        fake.stream.emit_trades("005930")
        assert next_of(stream, Trade).symbol == "005930"
    stats = fake.stream.stats
    assert stats.refused_connections >= 1 and stats.max_concurrent == {fake.app_key: 1}


def test_a_slow_consumer_drops_the_oldest_and_gets_the_count(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    with hub.stream(maxsize=5) as slow, hub.stream() as witness:
        slow.subscribe(trades=["005930"])
        witness.subscribe(trades=["005930"])
        for _ in range(4):
            fake.stream.emit_trades("005930", records=3)
        seen = [next_of(witness, Trade) for _ in range(12)]  # delivered to both in the same pass
        gap = slow.get(timeout=1)
        assert isinstance(gap, Gap) and gap.dropped == 7 and "slow consumer" in gap.reason
        kept = [slow.get(timeout=1) for _ in range(5)]
        assert kept == seen[7:]
        assert slow.get(timeout=0) is None
    assert fake.stream.stats.subscribes == 1  # one slot for two streams


def test_unsubscribe_releases_at_kis_after_the_last_holder(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    with hub.stream() as one, hub.stream() as two:
        one.subscribe(trades=["005930"])
        two.subscribe(trades=["005930"])
        one.unsubscribe(trades=["005930"])
        assert fake.stream.stats.unsubscribes == 0
        fake.stream.emit_trades("005930")
        assert next_of(two, Trade).symbol == "005930"
        assert one.get(timeout=0) is None
        two.unsubscribe(trades=["005930"])
        assert fake.stream.stats.unsubscribes == 1
        assert fake.stream.emit_trades("005930") == 0


def test_close_releases_wants_and_ends_iteration(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    stream = hub.stream()
    with stream:
        stream.subscribe(trades=["005930"], orderbooks=["005930"])
        assert fake.stream.stats.subscriptions == {fake.app_key: 2}
    assert fake.stream.stats.subscriptions == {fake.app_key: 0}
    assert stream.closed and stream.get(timeout=0) is None and list(stream) == []
    assert hub.registry.held() == {}
    with pytest.raises(ConfigurationError):
        stream.subscribe(trades=["005930"])


def test_pingpong_is_answered(fake: FakeKIS, make_hub: Callable[..., Hub]) -> None:
    fake.stream.configure(ping_interval=0.05, ping_misses=2)
    hub = make_hub()
    with hub.stream() as stream:
        stream.subscribe(trades=["005930"])
        fake.stream.wait_for(lambda s: s.pongs_text >= 5)
        assert fake.stream.stats.ping_drops == 0
        assert hub.session.stats.pings_answered >= 5
        fake.stream.emit_trades("005930")
        assert next_of(stream, Trade).symbol == "005930"


def test_registry_cap_is_per_app_key_not_per_stream(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(registry=SubscriptionRegistry(cap=2))
    with hub.stream() as one, hub.stream() as two:
        one.subscribe(trades=["000001"])
        two.subscribe(trades=["000002"])
        with pytest.raises(SubscriptionLimitError, match="cap of 2"):
            two.subscribe(orderbooks=["000001"])
        one.subscribe(trades=["000002"])  # shared: no new slot
