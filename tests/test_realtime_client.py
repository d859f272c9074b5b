"""``kis.stream()``: its settings, the notices rule, and one process's node over the file store.

The fake KIS server is the witness of what reached the wire; the process's node is closed after
each test so the next one elects afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("websockets")
pytest.importorskip("cryptography")

from korea_investment_stock.client import KoreaInvestment
from korea_investment_stock.errors import ConfigurationError, SubscriptionLimitError
from korea_investment_stock.realtime import ExecutionNotice, Trade
from korea_investment_stock.realtime.node import close_nodes
from korea_investment_stock.realtime.owner import backend_for
from korea_investment_stock.realtime.settings import MOCK_WS_URL, REAL_WS_URL
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.token.file import FileTokenStorage

HTS = "HTSUSER01"


@pytest.fixture
def fake() -> Iterator[FakeKIS]:
    with FakeKIS(rest_rate_limit=None, websocket=True) as server:
        yield server
    close_nodes()


@pytest.fixture
def store(tmp_path: Path) -> FileTokenStorage:
    return FileTokenStorage(tmp_path / "kis" / "token.key")


def client(fake: FakeKIS, store: FileTokenStorage, **kwargs: object) -> KoreaInvestment:
    options: dict[str, object] = {"base_url": fake.url, "ws_url": fake.ws_url, "token_storage": store}
    options.update(kwargs)
    return KoreaInvestment(fake.app_key, fake.app_secret, "12345678-01", **options)  # type: ignore[arg-type]


def test_ws_url_and_hts_id_arguments_win_over_variables(
    fake: FakeKIS, store: FileTokenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOREA_INVESTMENT_WS_URL", "ws://from-env:1")
    monkeypatch.setenv("KOREA_INVESTMENT_HTS_ID", "ENVUSER")
    kis = client(fake, store, ws_url=None)
    assert (kis.ws_url, kis.hts_id) == ("ws://from-env:1", "ENVUSER")
    kis = client(fake, store, ws_url="ws://arg:2", hts_id="ARGUSER")
    assert (kis.ws_url, kis.hts_id) == ("ws://arg:2", "ARGUSER")
    monkeypatch.delenv("KOREA_INVESTMENT_WS_URL")
    monkeypatch.delenv("KOREA_INVESTMENT_HTS_ID")
    assert client(fake, store, ws_url=None).ws_url == REAL_WS_URL
    assert client(fake, store, ws_url=None, mock=True).ws_url == MOCK_WS_URL
    with pytest.raises(ConfigurationError, match="ws://"):
        client(fake, store, ws_url="http://not-a-socket")


def test_notices_without_an_hts_id_is_a_clear_error(
    fake: FakeKIS, store: FileTokenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KOREA_INVESTMENT_HTS_ID", raising=False)
    with client(fake, store).stream() as stream, pytest.raises(ConfigurationError, match="KOREA_INVESTMENT_HTS_ID"):
        stream.subscribe(notices=True)
    assert fake.stream.stats.subscribes == 0


def test_one_process_subscribes_receives_and_releases_at_close(fake: FakeKIS, store: FileTokenStorage) -> None:
    kis = client(fake, store, hts_id=HTS)
    app = fake.app_key
    with kis.stream() as first, kis.stream() as second:
        first.subscribe(trades=["005930"], notices=True)
        second.subscribe(trades=["005930", "000660"])
        stats = fake.stream.wait_for(lambda s: s.subscriptions.get(app) == 3)
        assert stats.max_concurrent[app] == 1 and stats.subscribes == 3
        fake.stream.emit_trades("005930")
        fake.stream.emit_trades("000660")
        assert isinstance(first.get(timeout=5), Trade)
        got = [second.get(timeout=5), second.get(timeout=5)]
        assert sorted(e.symbol for e in got if isinstance(e, Trade)) == ["000660", "005930"]
        assert first.get(timeout=0.2) is None  # 000660 is second's alone
        fake.stream.emit_notice(HTS, "0000012345", "005930", "buy", 3, 70000)
        notice = first.get(timeout=5)
        assert isinstance(notice, ExecutionNotice) and notice.order_number == "0000012345"
        second.unsubscribe(trades=["000660"])
        fake.stream.wait_for(lambda s: s.subscriptions.get(app) == 2)
    # close() released the wants at once: the owner unsubscribes without waiting for expiry
    fake.stream.wait_for(lambda s: s.subscriptions.get(app) == 0, timeout=3)
    assert backend_for(store, app).wants.union() == {}


def test_the_cap_counts_the_union_and_disturbs_nothing(fake: FakeKIS, store: FileTokenStorage) -> None:
    kis = client(fake, store)
    app = fake.app_key
    with kis.stream() as stream:
        stream.subscribe(trades=[f"{100000 + i}" for i in range(40)])
        with pytest.raises(SubscriptionLimitError, match="41") as refused:
            stream.subscribe(trades=["005930", "000660"])
        assert refused.value.cap == 41 and len(refused.value.held) == 40
        stream.subscribe(trades=["005930"])  # the 41st fits
        stats = fake.stream.wait_for(lambda s: s.subscriptions.get(app) == 41)
        assert stats.opsp0008 == 0 and stats.max_concurrent[app] == 1


def test_a_fill_of_the_fake_account_arrives_as_an_execution_notice(fake: FakeKIS, store: FileTokenStorage) -> None:
    fake.open_account("12345678-01", cash_krw=10_000_000, hts_id=HTS)
    fake.set_price("005930", 70000)
    kis = client(fake, store, hts_id=HTS)
    with kis.stream() as stream:
        stream.subscribe(notices=True)
        order = kis.place_order("005930", "buy", 3)  # a market order: the fake fills it at once
        notice = stream.get(timeout=5)
    assert isinstance(notice, ExecutionNotice)
    assert (notice.order_number.lstrip("0"), notice.symbol, notice.side) == (
        order.order_no.lstrip("0"),
        "005930",
        "buy",
    )
    assert (notice.filled, notice.filled_quantity) == (True, 3)
    assert fake.stream.stats.notices_sent == 1
