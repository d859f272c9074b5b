"""The reconciliation rule on its own: which of today's orders an unknown order is, if any.

Pure functions over typed records (no server): the loopback tests in
``test_order_faults.py`` prove the same rule against the fake's real answers.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

import pytest

from korea_investment_stock import AmbiguousOrderError, OrderStatusUnknown
from korea_investment_stock.trading.ledger import LocalOrderLedger
from korea_investment_stock.trading.models import Order, OrderIntent, OrderRecord
from korea_investment_stock.trading.orders import CLOCK_SLACK_SECONDS, matches, reconcile
from korea_investment_stock.trading.values import KST

_numbers = itertools.count(7_000_000)
LEDGER = LocalOrderLedger()
T0 = 1_900_000_000.0  # a fixed epoch: the rule compares times, never reads the clock


def account() -> str:
    """A fresh account per test, so no claim of one test is seen by another."""
    return f"{next(_numbers) % 100_000_000:08d}-01"


def intent(acct: str, **changes: object) -> OrderIntent:
    fields: dict[str, object] = {
        "kind": "new",
        "symbol": "005930",
        "side": "buy",
        "quantity": 7,
        "price": Decimal("71000"),
        "market": "KR",
        "order_type": "00",
        "account": acct,
        "mock": False,
    }
    fields.update(changes)
    return OrderIntent(**fields)  # type: ignore[arg-type]


def record(at: float, **changes: object) -> OrderRecord:
    fields: dict[str, object] = {
        "order_no": f"{next(_numbers):010d}",
        "original_order_no": None,
        "branch": "06010",
        "symbol": "005930",
        "name": "",
        "side": "buy",
        "kind": "new",
        "quantity": 7,
        "price": Decimal("71000"),
        "filled_quantity": 0,
        "average_fill_price": Decimal(0),
        "filled_amount": Decimal(0),
        "remaining_quantity": 7,
        "rejected_quantity": 0,
        "order_type": "00",
        "market": "KR",
        "ordered_at": datetime.fromtimestamp(int(at), KST),
    }
    fields.update(changes)
    return OrderRecord(**fields)  # type: ignore[arg-type]


def unknown(what: OrderIntent, started: float = T0, ended: float = T0 + 2) -> OrderStatusUnknown:
    return OrderStatusUnknown("test", intent=what, cause="test", started_at=started, ended_at=ended)


def test_the_order_placed_during_the_attempt_is_found() -> None:
    acct = account()
    mine = record(T0 + 1)
    found = reconcile(unknown(intent(acct)), [record(T0 + 1, quantity=8), mine], now=T0 + 3, ledger=LEDGER)
    assert found is not None and found.order_no == mine.order_no
    assert LEDGER.is_known(acct, mine.order_no)


def test_nothing_matching_means_not_placed() -> None:
    acct = account()
    others = [record(T0 + 1, side="sell"), record(T0 + 1, price=Decimal("70900")), record(T0 + 1, symbol="000660")]
    assert reconcile(unknown(intent(acct)), others, now=T0 + 3, ledger=LEDGER) is None


def test_an_identical_order_from_well_before_the_attempt_is_not_it() -> None:
    acct = account()
    older = record(T0 - CLOCK_SLACK_SECONDS - 60)
    assert reconcile(unknown(intent(acct)), [older], now=T0 + 3, ledger=LEDGER) is None


def test_an_order_this_process_was_told_about_is_never_claimed_again() -> None:
    acct = account()
    told = record(T0 + 1)
    LEDGER.claim(acct, told.order_no)
    assert reconcile(unknown(intent(acct)), [told], now=T0 + 3, ledger=LEDGER) is None


def test_a_claimed_order_is_not_handed_to_a_second_unknown() -> None:
    acct = account()
    only = record(T0 + 1)
    assert reconcile(unknown(intent(acct)), [only], now=T0 + 3, ledger=LEDGER) is not None
    assert reconcile(unknown(intent(acct)), [only], now=T0 + 3, ledger=LEDGER) is None


def test_identical_candidates_go_one_to_each_unknown_and_never_twice() -> None:
    """Requests that asked the same are interchangeable: each unknown gets one, the extra one gets None."""
    acct = account()
    orders = [record(T0 + 1), record(T0 + 1)]
    got = [reconcile(unknown(intent(acct)), orders, now=T0 + 3, ledger=LEDGER) for _ in range(3)]
    assert [g.order_no for g in got if g] == sorted(o.order_no for o in orders)
    assert got[2] is None  # two live orders, two callers hold them: the third was not placed


def test_a_matching_order_stamped_after_the_lookup_means_the_clocks_disagree() -> None:
    """KIS cannot have an order from the future: the host's clock is off, so "not placed" would be a guess.

    Saying None here would invite the caller to place the order again, and it is live.
    """
    acct = account()
    ahead = record(T0 + 3 * 3600)
    with pytest.raises(AmbiguousOrderError) as caught:
        reconcile(unknown(intent(acct)), [ahead], now=T0 + 3, ledger=LEDGER)
    assert [order.order_no for order in caught.value.candidates] == [ahead.order_no]
    assert "clock" in str(caught.value)


def test_a_market_order_matches_whatever_price_kis_recorded() -> None:
    acct = account()
    market = intent(acct, price=None, order_type="01")
    filled = record(T0 + 1, price=Decimal("70500"), order_type="01")
    assert matches(market, filled, T0, T0 + 2)
    assert not matches(market, record(T0 + 1, price=None, order_type="00"), T0, T0 + 2)


def test_a_revise_matches_only_a_revise_of_the_same_original() -> None:
    acct = account()
    original = Order("0000000001", "06010", "005930", "buy", 7, Decimal("71000"), "KR", "00", None)
    revise = intent(acct, kind="revise", price=Decimal("70000"), original=original, all_remaining=True, quantity=0)
    right = record(T0 + 1, kind="revise", original_order_no="0000000001", price=Decimal("70000"))
    wrong_original = record(T0 + 1, kind="revise", original_order_no="0000000002", price=Decimal("70000"))
    a_cancel = record(T0 + 1, kind="cancel", original_order_no="0000000001")
    assert matches(revise, right, T0, T0 + 2)
    assert not matches(revise, wrong_original, T0, T0 + 2)
    assert not matches(revise, a_cancel, T0, T0 + 2)


def test_reconcile_refuses_what_is_not_an_order_failure() -> None:
    from korea_investment_stock import ConfigurationError

    bare = OrderStatusUnknown("x", intent=None, cause="x", started_at=T0, ended_at=T0)
    with pytest.raises(ConfigurationError):
        reconcile(bare, [], now=T0, ledger=LEDGER)


def test_a_failure_before_the_order_leaves_says_it_was_not_sent() -> None:
    """The hashkey call failing after it reached KIS is not the order reaching KIS: request_sent is False."""
    from korea_investment_stock import KISConnectionError
    from korea_investment_stock.trading.context import TradingContext
    from korea_investment_stock.trading.orders import OrderDesk

    posted: list[str] = []

    def call(method: str, path: str, tr_id: str, **kwargs: object) -> object:
        posted.append(path)
        raise AssertionError("nothing may be sent")

    def hashkey(body: dict) -> str:
        raise KISConnectionError("hashkey: read timeout", cause="read timeout", request_sent=True)

    context = TradingContext(call=call, account_prefix="12345678", account_suffix="01", mock=False, hashkey=hashkey)
    desk = OrderDesk(context, lambda symbol, market: None)
    with pytest.raises(KISConnectionError) as caught:
        desk.place("005930", "buy", 1, None, "KR", None)
    assert caught.value.request_sent is False and "not sent" in str(caught.value)
    assert posted == []


def test_a_malformed_stamp_costs_the_timestamp_not_the_order() -> None:
    from korea_investment_stock.trading.values import kst_datetime

    assert kst_datetime("20261205", "12:34:56") is None  # colons: not KIS's HHMMSS
    assert kst_datetime("20261205", "250000") is None  # hour 25
    assert kst_datetime("2026-12-05") is None
    assert kst_datetime("20261205", "093000") == datetime(2026, 12, 5, 9, 30, tzinfo=KST)
