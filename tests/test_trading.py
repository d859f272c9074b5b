"""Trading through KoreaInvestment against the fake KIS account, over real loopback HTTP.

Every method runs on both profiles: the real host (``T…`` ids) and the mock
host (``V…`` ids, which refuses real ones).  Counts come from the fake's own
counters, never from our client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from korea_investment_stock import (
    AccountMismatchError,
    Balance,
    Bar,
    ConfigurationError,
    FileTokenStorage,
    InsufficientCashError,
    InsufficientQuantityError,
    KoreaInvestment,
    MarketClosedError,
    NothingToReviseError,
    Order,
    OrderRecord,
    OrderRejectedError,
    PagingError,
    TradingUnsupportedError,
    UnknownSymbolError,
    WrongEnvironmentError,
)
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.trading.values import KST

ACCOUNT = "12345678-01"
SAMSUNG = "005930"
HYNIX = "000660"
NOWHERE_KR = "999999"  # a code the fake's quote generator does not know


@dataclass
class Desk:
    """A fake host and a client on it, for one profile."""

    fake: FakeKIS
    kis: KoreaInvestment
    mock: bool

    def ids(self, real: str, mock: str) -> str:
        return mock if self.mock else real

    @property
    def us(self) -> str:
        """``US`` (looked up) on the real host; the mock host has no price-detail to look with."""
        return "NASD" if self.mock else "US"


@pytest.fixture(params=["real", "mock"])
def desk(request: pytest.FixtureRequest, fake_kis_factory: Callable[..., FakeKIS], tmp_path: Path) -> Iterator[Desk]:
    mock = request.param == "mock"
    fake = fake_kis_factory(environment=request.param)
    kis = KoreaInvestment(
        fake.app_key,
        fake.app_secret,
        ACCOUNT,
        mock,
        FileTokenStorage(tmp_path / "token.key"),
        base_url=fake.url,
    )
    fake.open_account(ACCOUNT, cash_krw=50_000_000, cash_usd=20_000)
    yield Desk(fake, kis, mock)
    kis.shutdown()


def fake_order(fake: FakeKIS, odno: str) -> dict:
    found = [row for row in fake.orders(ACCOUNT) if row["odno"] == odno]
    assert len(found) == 1, f"the fake has {len(found)} orders numbered {odno}"
    return found[0]


# ---------------------------------------------------------------------------- orders
def test_a_market_buy_fills_at_once_and_shows_in_balance_and_orders(desk: Desk) -> None:
    price = desk.fake.current_price(SAMSUNG)
    order = desk.kis.place_order(SAMSUNG, "buy", 3)
    assert isinstance(order, Order)
    assert order.symbol == SAMSUNG and order.side == "buy" and order.quantity == 3 and order.price is None
    assert order.market == "KR" and order.order_type == "01" and order.kind == "new"
    assert order.order_no and order.branch
    assert order.ordered_at is not None and order.ordered_at.tzinfo is not None
    assert order.raw["rt_cd"] == "0"
    row = fake_order(desk.fake, order.order_no)
    assert row["quantity"] == 3 and row["filled"] == 3 and row["remaining"] == 0
    assert row["tr_id"] == desk.ids("TTTC0012U", "VTTC0012U")

    balance = desk.kis.fetch_balance()
    assert isinstance(balance, Balance)
    held = {p.symbol: p for p in balance.positions}
    assert held[SAMSUNG].quantity == 3
    assert held[SAMSUNG].average_price == price
    assert balance.cash == Decimal(50_000_000) - 3 * price
    assert isinstance(balance.cash, Decimal)

    records = desk.kis.fetch_orders()
    assert [r.order_no for r in records] == [order.order_no]
    record = records[0]
    assert isinstance(record, OrderRecord)
    assert record.filled_quantity == 3 and record.remaining_quantity == 0
    assert record.average_fill_price == price
    assert record.ordered_at is not None and record.ordered_at.tzinfo is not None


def test_a_resting_limit_order_is_revised_to_a_new_number_then_cancelled(desk: Desk) -> None:
    low = desk.fake.current_price(HYNIX) - 1000  # a buy below the market rests
    placed = desk.kis.place_order(HYNIX, "buy", 10, low)
    assert placed.price == low and placed.order_type == "00"
    assert fake_order(desk.fake, placed.order_no)["remaining"] == 10

    lower = low - 500
    revised = desk.kis.revise_order(placed, price=lower)
    assert revised.order_no != placed.order_no  # KIS gives a revise its own number
    assert revised.kind == "revise" and revised.original_order_no == placed.order_no
    assert revised.price == lower
    assert fake_order(desk.fake, revised.order_no)["price"] == lower
    assert fake_order(desk.fake, placed.order_no)["remaining"] == 0

    part = desk.kis.cancel_order(revised, 4)
    assert part.kind == "cancel" and part.original_order_no == revised.order_no
    assert fake_order(desk.fake, revised.order_no)["remaining"] == 6
    rest = desk.kis.cancel_order(revised)  # None: all that is left
    assert fake_order(desk.fake, rest.order_no)["kind"] == "cancel"
    assert fake_order(desk.fake, revised.order_no)["remaining"] == 0

    kinds = {r.order_no: r.kind for r in desk.kis.fetch_orders()}
    assert kinds == {
        placed.order_no: "new",
        revised.order_no: "revise",
        part.order_no: "cancel",
        rest.order_no: "cancel",
    }
    with pytest.raises(NothingToReviseError) as caught:
        desk.kis.cancel_order(revised, 1)
    assert caught.value.msg_cd and caught.value.msg1  # KIS's code and words ride along


def test_revising_all_that_remains_reports_the_quantity_it_moved(desk: Desk) -> None:
    low = desk.fake.current_price(SAMSUNG) - 3000
    placed = desk.kis.place_order(SAMSUNG, "buy", 9, low)
    desk.fake.fill_order(placed.order_no, 2)  # 7 remain
    revised = desk.kis.revise_order(placed, price=low - 100)
    assert revised.quantity == 7 == fake_order(desk.fake, revised.order_no)["quantity"]
    cancelled = desk.kis.cancel_order(revised)
    assert cancelled.quantity == 7


def test_a_marketable_limit_sell_fills_and_frees_the_holding(desk: Desk) -> None:
    desk.fake.open_account(ACCOUNT, cash_krw=1_000_000, positions={SAMSUNG: (20, Decimal("60000"))})
    price = desk.fake.current_price(SAMSUNG)
    sold = desk.kis.place_order(SAMSUNG, "sell", 5, price)
    row = fake_order(desk.fake, sold.order_no)
    assert row["filled"] == 5 and row["tr_id"] == desk.ids("TTTC0011U", "VTTC0011U")
    position = next(p for p in desk.kis.fetch_balance().positions if p.symbol == SAMSUNG)
    assert position.quantity == 15 and position.average_price == Decimal("60000")


def test_fetch_orders_reads_every_page_of_a_long_day(desk: Desk) -> None:
    desk.fake.configure(orders_page_size=3)
    low = desk.fake.current_price(SAMSUNG) - 2000
    placed = [desk.kis.place_order(SAMSUNG, "buy", n, low) for n in range(1, 11)]
    before = desk.fake.stats.rest_by_tr_id.get(desk.ids("TTTC0081R", "VTTC0081R"), 0)
    records = desk.kis.fetch_orders()
    pages = desk.fake.stats.rest_by_tr_id[desk.ids("TTTC0081R", "VTTC0081R")] - before
    assert sorted(r.order_no for r in records) == sorted(o.order_no for o in placed)
    assert pages == math.ceil(10 / 3)
    assert {r.quantity for r in records} == set(range(1, 11))


def test_a_date_range_before_today_finds_none_of_todays_orders(desk: Desk) -> None:
    desk.kis.place_order(SAMSUNG, "buy", 1)
    today = datetime.now(KST).date()
    assert desk.kis.fetch_orders(today - timedelta(days=5), today - timedelta(days=1)) == []
    with pytest.raises(ConfigurationError):
        desk.kis.fetch_orders(today, today - timedelta(days=1))


# -------------------------------------------------------------------------- balance
def test_a_501_position_balance_is_read_to_the_last_page(desk: Desk) -> None:
    symbols = [f"{n:06d}" for n in range(100_000, 100_501)]
    desk.fake.open_account(
        ACCOUNT, cash_krw=1_000, positions={s: (n + 1, Decimal("1000")) for n, s in enumerate(symbols)}
    )
    balance_id = desk.ids("TTTC8434R", "VTTC8434R")
    before = desk.fake.stats.rest_by_tr_id.get(balance_id, 0)
    balance = desk.kis.fetch_balance()
    pages = desk.fake.stats.rest_by_tr_id[balance_id] - before
    assert sorted(p.symbol for p in balance.positions) == symbols  # every one, none twice
    assert {p.symbol: p.quantity for p in balance.positions} == {s: n + 1 for n, s in enumerate(symbols)}
    per_page = 20 if desk.mock else 50  # KIS's page sizes, which the fake keeps by default
    assert pages == math.ceil(501 / per_page)
    print(f"\n501 positions, {'mock' if desk.mock else 'real'}: {pages} pages of {per_page}")


def test_the_restart_case_reads_from_the_first_page_again(desk: Desk) -> None:
    symbols = [f"{n:06d}" for n in range(200_000, 200_120)]
    desk.fake.open_account(ACCOUNT, positions={s: (1, Decimal("500")) for s in symbols})
    desk.fake.set_paging_restart(2)
    balance = desk.kis.fetch_balance()
    assert sorted(p.symbol for p in balance.positions) == symbols
    assert desk.fake.stats.rest_rejected.get("SYDB0050", 0) == 2


def test_a_host_that_keeps_changing_its_data_is_a_paging_error_not_a_loop(desk: Desk) -> None:
    desk.fake.open_account(ACCOUNT, positions={f"{n:06d}": (1, Decimal("500")) for n in range(300_000, 300_060)})
    desk.fake.set_paging_restart(1000)
    with pytest.raises(PagingError):
        desk.kis.fetch_balance()


def test_buyable_counts_the_cash_that_resting_buys_hold(desk: Desk) -> None:
    price = desk.fake.current_price(SAMSUNG)
    first = desk.kis.fetch_buyable(SAMSUNG, price)
    assert first.cash == Decimal(50_000_000)
    assert first.quantity == int(Decimal(50_000_000) // price)
    desk.kis.place_order(SAMSUNG, "buy", 100, price - 1000)  # rests, holding cash
    second = desk.kis.fetch_buyable(SAMSUNG, price)
    assert second.cash == Decimal(50_000_000) - 100 * (price - 1000)
    assert second.quantity < first.quantity


# ------------------------------------------------------------------------ rejections
def test_insufficient_cash_raises_its_type(desk: Desk) -> None:
    desk.fake.open_account(ACCOUNT, cash_krw=1_000)
    with pytest.raises(InsufficientCashError) as caught:
        desk.kis.place_order(SAMSUNG, "buy", 1)
    assert isinstance(caught.value, OrderRejectedError)
    assert "fetch_buyable" in str(caught.value)  # the message says what to do
    assert desk.fake.orders(ACCOUNT) == []


def test_insufficient_quantity_raises_its_type(desk: Desk) -> None:
    with pytest.raises(InsufficientQuantityError):
        desk.kis.place_order(SAMSUNG, "sell", 1)


def test_an_unknown_symbol_raises_its_type(desk: Desk) -> None:
    with pytest.raises(UnknownSymbolError):
        desk.kis.place_order(NOWHERE_KR, "buy", 1, 1000)


def test_a_closed_market_raises_its_type(desk: Desk) -> None:
    desk.fake.configure(market_open=False)
    with pytest.raises(MarketClosedError) as caught:
        desk.kis.place_order(SAMSUNG, "buy", 1)
    assert caught.value.msg1  # KIS's own words, verbatim


def test_a_key_bound_to_another_account_raises_its_type(desk: Desk) -> None:
    desk.fake.configure(bind_account="87654321-01")
    with pytest.raises(AccountMismatchError) as caught:
        desk.kis.place_order(SAMSUNG, "buy", 1)
    assert "account" in str(caught.value).lower()
    with pytest.raises(AccountMismatchError):
        desk.kis.fetch_balance()


def test_the_wrong_host_for_the_profile_raises_wrong_environment(
    fake_kis_factory: Callable[..., FakeKIS], tmp_path: Path
) -> None:
    fake = fake_kis_factory(environment="mock")
    real_client = KoreaInvestment(
        fake.app_key, fake.app_secret, ACCOUNT, False, FileTokenStorage(tmp_path / "t.key"), base_url=fake.url
    )
    try:
        with pytest.raises(WrongEnvironmentError):
            real_client.place_order(SAMSUNG, "buy", 1)
        assert fake.orders() == []
    finally:
        real_client.shutdown()


def test_bad_arguments_never_reach_kis(desk: Desk) -> None:
    for args, kwargs in [
        ((SAMSUNG, "hold", 1), {}),
        ((SAMSUNG, "buy", 0), {}),
        ((SAMSUNG, "buy", 1.5), {}),
        ((SAMSUNG, "buy", 1, -5), {}),
        ((SAMSUNG, "buy", 1, "abc"), {}),
        (("", "buy", 1), {}),
        ((SAMSUNG, "buy", 1, 70000), {"order_type": "01"}),
    ]:
        with pytest.raises(ConfigurationError):
            desk.kis.place_order(*args, **kwargs)
    with pytest.raises(TradingUnsupportedError):
        desk.kis.place_order(SAMSUNG, "buy", 1, market="MARS")
    assert desk.fake.stats.orders_received == 0


# -------------------------------------------------------------------------- overseas
def test_a_us_order_finds_its_exchange_and_uses_the_profiles_ids(desk: Desk) -> None:
    price = desk.fake.current_price("AAPL")
    bought = desk.kis.place_order("AAPL", "buy", 4, price, market=desk.us)
    row = fake_order(desk.fake, bought.order_no)
    assert bought.market == row["market"] and row["market"] in ("NASD", "NYSE", "AMEX")
    assert row["tr_id"] == desk.ids("TTTT1002U", "VTTT1002U") and row["filled"] == 4

    sold = desk.kis.place_order("AAPL", "sell", 1, price, market=desk.us)
    assert fake_order(desk.fake, sold.order_no)["tr_id"] == desk.ids("TTTT1006U", "VTTT1001U")  # not derived

    balance = desk.kis.fetch_balance("US")
    assert balance.currency == "USD"
    assert [(p.symbol, p.quantity) for p in balance.positions] == [("AAPL", 3)]  # once, not once per exchange
    records = desk.kis.fetch_orders(market="US")
    assert sorted(r.order_no for r in records) == sorted([bought.order_no, sold.order_no])
    with pytest.raises(TradingUnsupportedError):
        desk.kis.place_order("AAPL", "buy", 1, market="US")  # KIS has no market order overseas: give a price


def test_a_resting_us_order_is_revised_and_cancelled(desk: Desk) -> None:
    low = desk.fake.current_price("AAPL") - 5
    placed = desk.kis.place_order("AAPL", "buy", 6, low, market=desk.us)
    revised = desk.kis.revise_order(placed, price=low - 1)
    assert revised.order_no != placed.order_no and revised.price == low - 1
    cancelled = desk.kis.cancel_order(revised)
    assert fake_order(desk.fake, cancelled.order_no)["kind"] == "cancel"
    assert fake_order(desk.fake, revised.order_no)["remaining"] == 0


def test_us_buyable_without_a_price_uses_the_last_price(desk: Desk) -> None:
    price = desk.fake.current_price("AAPL")
    if desk.mock:
        with pytest.raises(TradingUnsupportedError, match="price="):
            desk.kis.fetch_buyable("AAPL", market="NASD")
        return
    buyable = desk.kis.fetch_buyable("AAPL", market="US")
    assert buyable.currency == "USD"
    assert buyable.quantity == int(Decimal(20_000) // price)


# --------------------------------------------------------------------------- history
def test_bars_over_a_long_range_take_several_requests_and_come_back_once_each(desk: Desk) -> None:
    start, end = date(2025, 1, 1), date(2025, 12, 31)
    before = desk.fake.stats.rest_by_tr_id.get("FHKST03010100", 0)
    bars = desk.kis.fetch_daily_prices(SAMSUNG, start, end)
    requests_made = desk.fake.stats.rest_by_tr_id["FHKST03010100"] - before
    weekdays = sum(1 for n in range((end - start).days + 1) if (start + timedelta(days=n)).weekday() < 5)
    assert len(bars) == weekdays  # every business day, none twice
    assert [b.day for b in bars] == sorted({b.day for b in bars})
    assert bars[0].day >= start and bars[-1].day <= end
    assert requests_made == math.ceil(weekdays / 100)
    for bar in bars:
        assert isinstance(bar, Bar) and isinstance(bar.close, Decimal) and isinstance(bar.volume, int)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.time.tzinfo is not None


def test_weekly_bars_and_overseas_bars(desk: Desk) -> None:
    weekly = desk.kis.fetch_daily_prices(SAMSUNG, "20250101", "20250331", period="W")
    assert 12 <= len(weekly) <= 14
    us = desk.kis.fetch_daily_prices("AAPL", date(2025, 1, 1), date(2025, 9, 30), market=desk.us)
    assert len(us) > 100 and us[0].day >= date(2025, 1, 1) and us[-1].day <= date(2025, 9, 30)
    assert len({b.day for b in us}) == len(us)


# ---------------------------------------------------------------------------- hashkey
def test_hashkey_is_sent_only_when_asked_and_the_fake_accepts_it(desk: Desk, tmp_path: Path) -> None:
    desk.kis.place_order(SAMSUNG, "buy", 1)
    assert desk.fake.stats.hashkey_requests == 0 and desk.fake.stats.hashkeys_checked == 0
    with_hash = KoreaInvestment(
        desk.fake.app_key,
        desk.fake.app_secret,
        ACCOUNT,
        desk.mock,
        FileTokenStorage(tmp_path / "token.key"),  # the desk's store: no second tokenP
        base_url=desk.fake.url,
        use_hashkey=True,
    )
    try:
        order = with_hash.place_order(SAMSUNG, "buy", 2)
        assert fake_order(desk.fake, order.order_no)["quantity"] == 2
        assert desk.fake.stats.hashkey_requests == 1 and desk.fake.stats.hashkeys_checked == 1
    finally:
        with_hash.shutdown()


def test_the_0_6_1_methods_still_answer_dicts(desk: Desk) -> None:
    answer = desk.kis.fetch_domestic_price("J", SAMSUNG)
    assert isinstance(answer, dict) and answer["rt_cd"] == "0"
    assert Decimal(answer["output"]["stck_prpr"]) == desk.fake.current_price(SAMSUNG)


def test_overseas_order_times_are_read_in_korean_time(desk: Desk) -> None:
    """KIS's overseas list stamps ord_dt/ord_tmd in the market's own time; the Korean time is elsewhere.

    Read as Korean time, a US order would look 14 hours old, and a reconciliation would call it absent.
    """
    placed = desk.kis.place_order("AAPL", "buy", 2, desk.fake.current_price("AAPL") - 5, market=desk.us)
    record = next(r for r in desk.kis.fetch_orders(market="US") if r.order_no == placed.order_no)
    assert record.ordered_at is not None
    assert abs(record.ordered_at.timestamp() - time.time()) < 120
    assert record.ordered_at.utcoffset() == timedelta(hours=9)


def test_the_mock_host_asks_for_the_exchange_instead_of_looking_it_up(desk: Desk) -> None:
    if not desk.mock:
        pytest.skip("the real host looks the exchange up")
    before = desk.fake.stats.rest_requests
    with pytest.raises(TradingUnsupportedError, match="NASD"):
        desk.kis.place_order("AAPL", "buy", 1, 100, market="US")
    assert desk.fake.stats.rest_requests == before  # refused here, nothing sent
