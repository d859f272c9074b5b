"""The fault matrix for orders: what KIS ends up holding, and what the caller was told.

For each fault the fake counts the orders it placed; the caller sees an
``Order``, a refusal, ``OrderStatusUnknown`` (then ``reconcile_order``) or a
``KISConnectionError`` that says the request never left.  The invariant under
every fault: after reconciliation, the orders at the fake are exactly the ones
callers were told about.  Never more (a hidden live order), never a resend.

Run with ``-s`` to see the matrix as a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from korea_investment_stock import (
    FileTokenStorage,
    KISConnectionError,
    KoreaInvestment,
    Order,
    OrderStatusUnknown,
)
from korea_investment_stock.testing import FakeKIS
from testsupport.faultproxy import FaultProxy

ACCOUNT = "12345678-01"
SAMSUNG = "005930"
READ_TIMEOUT = 1.0
SETTLE = 0.2  # the fake acts before it misbehaves, so a short settle is honest here


@dataclass
class Row:
    fault: str
    at_fake: int
    caller_saw: str
    reconciled: str
    told: int


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def _print_matrix() -> Iterator[None]:
    yield
    if ROWS:
        print("\n| fault | orders at the fake | the caller saw | reconcile_order | orders callers know |")
        print("|---|---|---|---|---|")
        for row in ROWS:
            print(f"| {row.fault} | {row.at_fake} | {row.caller_saw} | {row.reconciled} | {row.told} |")


@pytest.fixture
def fake(fake_kis_factory: Callable[..., FakeKIS]) -> FakeKIS:
    server = fake_kis_factory()
    server.open_account(ACCOUNT, cash_krw=100_000_000)
    return server


def client(fake: FakeKIS, tmp_path: Path, base_url: str | None = None, **kwargs: object) -> KoreaInvestment:
    return KoreaInvestment(
        fake.app_key,
        fake.app_secret,
        ACCOUNT,
        False,
        FileTokenStorage(tmp_path / "token.key"),
        base_url=base_url or fake.url,
        timeout=(2.0, READ_TIMEOUT),
        **kwargs,  # type: ignore[arg-type]
    )


def at_fake(fake: FakeKIS) -> set[str]:
    return {row["odno"] for row in fake.orders(ACCOUNT)}


def place_and_settle(kis: KoreaInvestment, quantity: int, price: Decimal | None) -> tuple[str, str, set[str]]:
    """Place one order; on an unknown outcome reconcile it.  Returns (what the caller saw, reconcile, known)."""
    try:
        order = kis.place_order(SAMSUNG, "buy", quantity, price)
    except OrderStatusUnknown as unknown:
        assert unknown.intent.quantity == quantity and unknown.cause
        found = kis.reconcile_order(unknown, settle=SETTLE)
        if found is None:
            return f"OrderStatusUnknown ({_gist(unknown.cause)})", "None: not placed", set()
        assert isinstance(found, Order) and found.quantity == quantity
        return f"OrderStatusUnknown ({_gist(unknown.cause)})", "the Order", {found.order_no}
    except KISConnectionError as error:
        assert error.request_sent is False
        return "KISConnectionError, request_sent=False", "not needed", set()
    return "Order", "not needed", {order.order_no}


def _gist(cause: str) -> str:
    """The part of a cause that names the failure (the transport's own word, or the answer's shape)."""
    if cause.endswith(")") and "(" in cause:
        return cause[cause.rindex("(") + 1 : -1]
    return cause.rsplit(": ", 1)[-1][:60]


# Faults where KIS processed the order and then misbehaved: the order is live, the caller must learn of it.
AFTER = ["drop_after", "slow_after", "http500_empty", "reset_after"]


@pytest.mark.parametrize("kind", [*AFTER, "drop_before"])
def test_each_order_fault(kind: str, fake: FakeKIS, tmp_path: Path) -> None:
    kis = client(fake, tmp_path)
    try:
        price = fake.current_price(SAMSUNG) - 100  # rests: the order stays live to be found
        kis.fetch_balance()  # the token first, so the fault hits the order itself
        fake.set_order_fault(kind, times=1, delay=READ_TIMEOUT * 4 if kind == "slow_after" else None)
        saw, reconciled, known = place_and_settle(kis, 11, price)
        placed = at_fake(fake)
        assert fake.stats.order_faults.get(kind) == 1
        assert fake.stats.orders_received == 1  # never sent twice
        if kind == "drop_before":
            assert placed == set() and reconciled.startswith("None")
        else:
            assert len(placed) == 1 and reconciled == "the Order"
        assert placed == known  # nothing live that no caller knows of
        ROWS.append(Row(kind, len(placed), saw, reconciled, len(known)))
    finally:
        kis.shutdown()


def test_a_refused_connection_is_retried_and_then_reported_unsent(fake: FakeKIS, tmp_path: Path) -> None:
    proxy = FaultProxy("127.0.0.1", int(fake.url.rsplit(":", 1)[1]))
    kis = client(fake, tmp_path, base_url=f"http://127.0.0.1:{proxy.port}")
    try:
        kis.fetch_balance()  # token and a balance through the proxy
        proxy.close()  # nobody listens on that port any more: connections are refused
        saw, reconciled, known = place_and_settle(kis, 12, None)
        assert saw.startswith("KISConnectionError")
        assert fake.stats.orders_received == 0 and at_fake(fake) == set() == known
        ROWS.append(Row("connection refused", 0, saw, reconciled, 0))
    finally:
        proxy.close()
        kis.shutdown()


def test_egw00201_is_retried_because_kis_did_not_act(fake_kis_factory: Callable[..., FakeKIS], tmp_path: Path) -> None:
    fake = fake_kis_factory(rest_rate_limit=1)
    fake.open_account(ACCOUNT)
    kis = client(fake, tmp_path)
    try:
        kis.fetch_balance()  # spends this second's one call: the order's first try gets EGW00201
        saw, reconciled, known = place_and_settle(kis, 13, None)
        assert saw == "Order"
        assert fake.stats.rest_rejected.get("EGW00201", 0) >= 1
        assert len(at_fake(fake)) == 1 and at_fake(fake) == known
        ROWS.append(Row("EGW00201 (per-second limit)", 1, "Order (after retry)", reconciled, len(known)))
    finally:
        kis.shutdown()


def test_a_dead_token_is_replaced_and_the_order_sent_once(fake: FakeKIS, tmp_path: Path) -> None:
    kis = client(fake, tmp_path)
    try:
        kis.fetch_balance()
        fake.advance(61)  # past KIS's one-issuance-a-minute window, so a new token can be had
        fake.expire_all()
        issued = fake.stats.tokens_issued
        saw, reconciled, known = place_and_settle(kis, 14, None)
        assert saw == "Order" and fake.stats.tokens_issued == issued + 1
        assert fake.stats.rest_rejected.get("EGW00123", 0) >= 1
        assert len(at_fake(fake)) == 1 and at_fake(fake) == known
        ROWS.append(Row("dead token (EGW00123)", 1, "Order (after a new token)", reconciled, len(known)))
    finally:
        kis.shutdown()


@pytest.mark.parametrize("kind", AFTER)
def test_a_faulted_cancel_is_reconciled_too(kind: str, fake: FakeKIS, tmp_path: Path) -> None:
    kis = client(fake, tmp_path)
    try:
        resting = kis.place_order(SAMSUNG, "buy", 15, fake.current_price(SAMSUNG) - 100)
        fake.set_order_fault(kind, times=1, delay=READ_TIMEOUT * 4 if kind == "slow_after" else None)
        with pytest.raises(OrderStatusUnknown) as caught:
            kis.cancel_order(resting)
        cancel = kis.reconcile_order(caught.value, settle=SETTLE)
        assert cancel is not None and cancel.kind == "cancel" and cancel.original_order_no == resting.order_no
        assert at_fake(fake) == {resting.order_no, cancel.order_no}
    finally:
        kis.shutdown()


def test_several_unknowns_in_one_process_each_get_their_own_order(fake: FakeKIS, tmp_path: Path) -> None:
    """Identical symbol and side, different quantities: each unknown finds its own, none is claimed twice."""
    kis = client(fake, tmp_path)
    try:
        kis.fetch_balance()
        fake.set_order_fault("drop_after", times=None)
        errors = []
        for quantity in (21, 22, 23):
            with pytest.raises(OrderStatusUnknown) as caught:
                kis.place_order(SAMSUNG, "buy", quantity)
            errors.append(caught.value)
        fake.clear_order_faults()
        found = [kis.reconcile_order(error, settle=SETTLE) for error in errors]
        assert [order.quantity for order in found if order] == [21, 22, 23]
        assert {order.order_no for order in found if order} == at_fake(fake)
    finally:
        kis.shutdown()


def test_every_order_goes_on_a_connection_of_its_own(tmp_path: Path) -> None:
    """Even when the host keeps connections alive: a reused connection the host just closed would turn
    an order that never left into an unknown one (seen as a reset on the fake, before this rule held)."""
    import http.server
    import itertools
    import json
    import threading

    from tests.test_client import preloaded
    from tests.workers import API_KEY, API_SECRET

    connections = itertools.count()
    numbers = itertools.count(1)

    class KeepAlive(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            next(connections)
            super().setup()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(
                {"rt_cd": "0", "msg_cd": "APBK0013", "msg1": "ok", "output": {"ODNO": f"{next(numbers):010d}"}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = False  # ignore the client's Connection: close, as a proxy might

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    storage = FileTokenStorage(tmp_path / "token.key")
    preloaded(API_KEY, API_SECRET, storage)
    kis = KoreaInvestment(
        API_KEY, API_SECRET, ACCOUNT, False, storage, base_url=f"http://127.0.0.1:{server.server_port}"
    )
    try:
        orders = [kis.place_order(SAMSUNG, "buy", n) for n in (1, 2, 3)]
        assert len({order.order_no for order in orders}) == 3
        assert next(connections) == 3  # one connection per order, none reused
    finally:
        kis.shutdown()
        server.shutdown()
        server.server_close()


def test_an_order_kis_acts_on_after_losing_the_answer_is_found_by_the_second_look(
    fake: FakeKIS, tmp_path: Path
) -> None:
    """A gateway that gives up while its backend still works: absent at first, live a moment later.

    reconcile_order must not call it "not placed" before ``settle`` has passed.
    """
    kis = client(fake, tmp_path)
    try:
        kis.fetch_balance()
        fake.set_order_fault("late", delay=1.0)
        with pytest.raises(OrderStatusUnknown) as caught:
            kis.place_order(SAMSUNG, "buy", 16)
        assert at_fake(fake) == set()  # not yet: a single early look would say "not placed"
        found = kis.reconcile_order(caught.value, settle=3.0)
        assert found is not None and found.quantity == 16
        assert at_fake(fake) == {found.order_no}
        saw = f"OrderStatusUnknown ({_gist(caught.value.cause)})"
        ROWS.append(Row("late (acted on 1 s after the drop)", len(at_fake(fake)), saw, "the Order", 1))
    finally:
        kis.shutdown()
