"""Placing, revising and cancelling orders so that no order is ever sent twice.

The rule, exactly:

* An order request is sent again only when KIS provably did not act on it:
  no connection was made and no byte of the request was written (DNS failure,
  refused connection, connect timeout), or KIS answered ``EGW00201`` (the
  per-second limit), or KIS answered that the token is dead (``EGW00121`` /
  ``EGW00123``, replaced once through the store).  The last two are retried by
  the client's REST path, the first here, at most :data:`UNSENT_RETRIES` times.
* Every other failure may have left the order live: a read timeout, a
  connection closed or reset after sending, the call's total deadline, an
  HTTP 5xx (or any answer) without KIS's ``rt_cd`` envelope, a body that is
  not JSON, or a success without an order number.  Then nothing is resent:
  :class:`~.errors.OrderStatusUnknown` is raised, and
  :func:`reconcile` settles it from today's orders.
* A KIS refusal (``rt_cd`` not ``"0"``, with ``msg_cd``) means KIS processed the
  request and said no: a :class:`~.errors.OrderRejectedError` subclass.

Each order goes out on a fresh connection (``Connection: close``): a kept-alive
connection the host already closed would otherwise turn an order that never
arrived into an unknown one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..errors import (
    AmbiguousOrderError,
    ConfigurationError,
    KISConnectionError,
    KoreaInvestmentError,
    MalformedResponseError,
    OrderStatusUnknown,
    TradingUnsupportedError,
)
from ..transport import KISResponse
from .context import TradingContext
from .ledger import MAX_PENDING_WAIT, OrderLedger
from .models import Order, OrderIntent, OrderRecord, Side
from .rejections import rejection
from .trids import Exchange, exchange_for, id_for, tr_id
from .values import kst_datetime, kst_today, text, ymd

_log = logging.getLogger(__name__)

#: Extra tries of an order whose request provably never left (after the session's own connect retry).
UNSENT_RETRIES = 2
#: Pause before each of those tries, in seconds.
UNSENT_BACKOFF = 0.2
#: Seconds after a failed attempt before reconciliation trusts "not in today's orders": a host may
#: still be acting on a request whose answer was lost (a gateway timing out before its backend).
DEFAULT_SETTLE_SECONDS = 3.0
#: Seconds of clock difference allowed between this machine and KIS when matching order times.
CLOCK_SLACK_SECONDS = 30.0

#: KR ``ORD_DVSN``: ``00`` limit, ``01`` market (others up to ``24`` pass through ``order_type``).
KR_LIMIT, KR_MARKET = "00", "01"
#: Overseas ``ORD_DVSN`` ``00``: limit (KIS has no plain market order overseas).
OVERSEAS_LIMIT = "00"


def check_symbol(symbol: object) -> str:
    """A symbol as KIS writes it (``005930``, ``AAPL``), else a clear error."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ConfigurationError(f"symbol must be a non-empty string, got {symbol!r}")
    return symbol.strip().upper()


def check_side(side: object) -> Side:
    """``"buy"`` or ``"sell"`` (any case), else a clear error."""
    if isinstance(side, str) and side.strip().lower() in ("buy", "sell"):
        return "buy" if side.strip().lower() == "buy" else "sell"
    raise ConfigurationError(f"side must be 'buy' or 'sell', got {side!r}")


def check_quantity(name: str, value: object, *, allow_zero: bool = False) -> int:
    """A whole number of shares, at least 1 (or 0 when allowed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        low = "0" if allow_zero else "1"
        raise ConfigurationError(f"{name} must be a whole number of shares >= {low}, got {value!r}")
    return value


def check_price(value: object) -> Decimal | None:
    """A positive price as ``Decimal`` (int, str or Decimal; no float rounding surprises), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"price must be a positive number, got {value!r}")
    try:
        price = Decimal(str(value)) if isinstance(value, int | float | str | Decimal) else None
    except ArithmeticError:
        price = None
    if price is None or not price.is_finite() or price <= 0:
        raise ConfigurationError(f"price must be a positive number, got {value!r}")
    return price


def _price_text(price: Decimal | None) -> str:
    if price is None:
        return "0"
    return format(price.normalize(), "f") if price == price.to_integral() else format(price, "f")


class OrderDesk:
    """Order requests for one client; see the module docstring for the rule it keeps."""

    def __init__(self, context: TradingContext, exchange_of: Callable[[str, str], Exchange | None]) -> None:
        self._context = context
        #: (symbol, market) -> the overseas exchange, or None for KR (``US`` looked up).
        self._exchange = exchange_of

    # ------------------------------------------------------------------ requests
    def place(
        self, symbol: str, side: object, quantity: object, price: object, market: str, order_type: str | None
    ) -> Order:
        """A new order; see :meth:`KoreaInvestment.place_order`."""
        symbol = check_symbol(symbol)
        checked_side = check_side(side)
        count = check_quantity("quantity", quantity)
        limit = check_price(price)
        if order_type is not None and not (
            isinstance(order_type, str) and len(order_type) == 2 and order_type.isdigit()
        ):
            raise ConfigurationError(
                f"order_type must be KIS's two-digit ORD_DVSN code such as '03', got {order_type!r}"
            )
        try:
            exchange = self._exchange(symbol, market)
        except KISConnectionError as exc:
            raise _not_sent("order", "looking up the exchange", exc) from None
        if exchange is None:
            kind_code = order_type or (KR_MARKET if limit is None else KR_LIMIT)
            if kind_code == KR_LIMIT and limit is None:
                raise ConfigurationError("a limit order (order_type '00') needs a price")
            if kind_code == KR_MARKET and limit is not None:
                raise ConfigurationError("a market order (order_type '01') takes no price; pass price=None")
        else:
            if limit is None:
                raise TradingUnsupportedError(
                    f"KIS has no market order on {exchange.order_code}: pass a limit price (price=...)"
                )
            kind_code = order_type or OVERSEAS_LIMIT
        intent = OrderIntent(
            kind="new",
            symbol=symbol,
            side=checked_side,
            quantity=count,
            price=limit,
            market="KR" if exchange is None else exchange.order_code,
            order_type=kind_code,
            account=self._context.account,
            mock=self._context.mock,
        )
        region = "KR" if exchange is None else exchange.region
        entry = tr_id(region, checked_side, mock=self._context.mock)
        if exchange is None:
            body = {
                **self._context.account_fields(),
                "PDNO": symbol,
                "ORD_DVSN": kind_code,
                "ORD_QTY": str(count),
                "ORD_UNPR": _price_text(limit),
            }
            if checked_side == "sell":
                body["SLL_TYPE"] = "01"
        else:
            body = {
                **self._context.account_fields(),
                "OVRS_EXCG_CD": exchange.order_code,
                "PDNO": symbol,
                "ORD_QTY": str(count),
                "OVRS_ORD_UNPR": _price_text(limit),
                "ORD_SVR_DVSN_CD": "0",
                "SLL_TYPE": "00" if checked_side == "sell" else "",
                "ORD_DVSN": kind_code,
            }
        return self._send(intent, entry.path, id_for(entry, mock=self._context.mock), body)

    def revise(self, order: Order, quantity: object, price: object, *, cancel: bool) -> Order:
        """A revise (``cancel=False``) or cancel of ``order``; ``quantity=None``: all that remains."""
        if not isinstance(order, Order):
            raise ConfigurationError(f"order must be an Order (from place_order or fetch_orders), got {order!r}")
        count = None if quantity is None else check_quantity("quantity", quantity)
        new_price = check_price(price)
        if not cancel and count is None and new_price is None:
            raise ConfigurationError("revise_order needs a new quantity, a new price, or both")
        exchange = None if order.market == "KR" else exchange_for(order.market)
        region = "KR" if exchange is None else exchange.region
        entry = tr_id(region, "revise", mock=self._context.mock)
        price_after = order.price if new_price is None else new_price
        if exchange is None and not cancel and order.order_type == KR_MARKET and new_price is not None:
            order_type = KR_LIMIT  # a price turns a resting market order into a limit order
        else:
            order_type = order.order_type
        intent = OrderIntent(
            kind="cancel" if cancel else "revise",
            symbol=order.symbol,
            side=order.side,
            quantity=count if count is not None else 0,
            price=price_after,
            market=order.market,
            order_type=order_type,
            account=self._context.account,
            mock=self._context.mock,
            original=order,
            all_remaining=count is None,
        )
        if count is None:
            # What remains, read first: the answer carries no quantity, and the caller (and a
            # reconciliation) should know how much moved.  Korea still sends its atomic
            # "all remaining" flag, so a fill meanwhile cannot make the request too large.
            try:
                intent = replace(intent, quantity=self._remaining(order))
            except KoreaInvestmentError as exc:
                if exchange is not None:  # overseas needs the number: nothing is sent without it
                    if isinstance(exc, KISConnectionError):
                        raise _not_sent(intent.kind, "reading what remains", exc) from None
                    raise
                # Korea's all-remaining flag needs no number: send it, and say the count is unknown (0)
                _log.warning("could not read what remains of order %s (%s); sending all-remaining", order.order_no, exc)
        if exchange is None:
            body = {
                **self._context.account_fields(),
                "KRX_FWDG_ORD_ORGNO": order.branch,
                "ORGN_ODNO": order.order_no,
                "ORD_DVSN": order_type,
                "RVSE_CNCL_DVSN_CD": "02" if cancel else "01",
                "ORD_QTY": str(count or 0),
                "ORD_UNPR": "0" if cancel or order_type == KR_MARKET else _price_text(price_after),
                "QTY_ALL_ORD_YN": "Y" if count is None else "N",
            }
        else:
            if count is None:  # overseas has no "all remaining" flag: send what remains
                count = intent.quantity
            body = {
                **self._context.account_fields(),
                "OVRS_EXCG_CD": exchange.order_code,
                "PDNO": order.symbol,
                "ORGN_ODNO": order.order_no,
                "RVSE_CNCL_DVSN_CD": "02" if cancel else "01",
                "ORD_QTY": str(count),
                "OVRS_ORD_UNPR": "0" if cancel else _price_text(price_after),
                "ORD_SVR_DVSN_CD": "0",
            }
        return self._send(intent, entry.path, id_for(entry, mock=self._context.mock), body)

    # ------------------------------------------------------------------ the rule
    def _send(self, intent: OrderIntent, path: str, tr_id_value: str, body: dict[str, Any]) -> Order:
        what = {"new": "order", "revise": "revise", "cancel": "cancel"}[intent.kind]
        headers: dict[str, str] = {}  # fresh_connection below also sends Connection: close
        if self._context.hashkey is not None:
            try:
                headers["hashkey"] = self._context.hashkey(body)
            except KISConnectionError as exc:
                raise _not_sent(what, "the hashkey call", exc) from None
        started = time.time()
        ledger = self._context.ledger
        # In flight until every try could have ended (the unsent retries reuse the token, so twice the
        # budget of one request is ample): a reconciliation of the same request waits for it.
        until = started + 2 * self._context.order_seconds
        ticket = ledger.begin(intent.account, signature(intent), until)
        try:
            response = self._post(intent, what, (path, tr_id_value), body, headers, started)
            return self._accepted(intent, response, started, what)
        finally:
            ledger.end(intent.account, ticket)

    def _post(
        self,
        intent: OrderIntent,
        what: str,
        target: tuple[str, str],
        body: dict[str, Any],
        headers: dict[str, str],
        started: float,
    ) -> KISResponse:
        """The POST, sent again only while it provably never left (see the module docstring)."""
        path, tr_id_value = target
        unsent_tries = 0
        while True:
            try:
                response = self._context.call(
                    "POST", path, tr_id_value, body=body, fresh_connection=True, headers=headers
                )
                break
            except KISConnectionError as exc:
                if exc.request_sent:
                    raise self._unknown(intent, f"{exc} ({exc.cause})", started) from None
                if unsent_tries >= UNSENT_RETRIES:
                    raise KISConnectionError(
                        f"the {what} was not sent (no connection to KIS, tried {unsent_tries + 1} times): {exc}",
                        cause=exc.cause,
                        request_sent=False,
                    ) from None
                unsent_tries += 1
                time.sleep(UNSENT_BACKOFF * unsent_tries)
            except MalformedResponseError as exc:
                raise self._unknown(intent, str(exc), started) from None
        return response

    def _accepted(self, intent: OrderIntent, response: KISResponse, started: float, what: str) -> Order:
        answer = response.body
        rt_cd = answer.get("rt_cd")
        if rt_cd == "0":
            output = answer.get("output")
            row = output if isinstance(output, dict) else {}
            order_no = text(row, "ODNO")
            if not order_no:
                raise self._unknown(intent, f"KIS answered the {what} as done but without an order number", started)
            order = Order(
                order_no=order_no,
                branch=text(row, "KRX_FWDG_ORD_ORGNO") or (intent.original.branch if intent.original else ""),
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                price=intent.price,
                market=intent.market,
                order_type=intent.order_type,
                ordered_at=_today_at(text(row, "ORD_TMD")),
                kind=intent.kind,
                original_order_no=intent.original.order_no if intent.original else None,
                raw=answer,
            )
            if not self._context.ledger.claim(intent.account, order_no):
                _log.error(  # only when a request outlived its in-flight deadline: say so, the order is ours
                    "order %s was already claimed by a reconciliation; KIS answered it to this request", order_no
                )
            return order
        if isinstance(rt_cd, str) and rt_cd.strip() and answer.get("msg_cd"):
            raise rejection(answer, response.status, what)
        raise self._unknown(
            intent, f"KIS answered the {what} with HTTP {response.status} but without its rt_cd envelope", started
        )

    @staticmethod
    def _unknown(intent: OrderIntent, cause: str, started: float) -> OrderStatusUnknown:
        what = {"new": "order", "revise": "revise", "cancel": "cancel"}[intent.kind]
        return OrderStatusUnknown(
            f"the {what} of {intent.quantity or 'all'} {intent.symbol} ({intent.side}) may or may not be live: "
            f"{cause}. It was not sent again; call reconcile_order(error) to find out",
            intent=intent,
            cause=cause,
            started_at=started,
            ended_at=time.time(),
        )

    # ------------------------------------------------------------------ helpers
    def _remaining(self, order: Order) -> int:
        from .account import find_order  # the account room reads today's orders

        record = find_order(self._context, order)
        if record is None or record.remaining_quantity <= 0:
            return 0
        return record.remaining_quantity


def _not_sent(what: str, step: str, exc: KISConnectionError) -> KISConnectionError:
    """A failure before the request itself: whatever that call's fate, the order never left."""
    return KISConnectionError(
        f"the {what} was not sent: {step} failed first: {exc}", cause=exc.cause, request_sent=False
    )


def _today_at(clock: str) -> datetime | None:
    return kst_datetime(ymd(kst_today()), clock)


def signature(intent: OrderIntent) -> str:
    """What a request asked, as :func:`matches` compares it: requests with equal signatures are interchangeable."""
    original = intent.original.order_no if intent.original else ""
    quantity = "all" if intent.all_remaining else str(intent.quantity)
    price = "market" if intent.price is None else format(intent.price.normalize(), "f")
    parts = (intent.kind, intent.market, intent.symbol, intent.side, quantity, price, intent.order_type, original)
    return "|".join(parts)


def matches(intent: OrderIntent, record: OrderRecord, started_at: float, ended_at: float) -> bool:
    """Could ``record`` be the order ``intent`` asked for, sent between ``started_at`` and ``ended_at``?"""
    if record.ordered_at is not None:
        when = record.ordered_at.timestamp()
        if not started_at - CLOCK_SLACK_SECONDS <= when <= ended_at + CLOCK_SLACK_SECONDS:
            return False
    return _same_request(intent, record)


def _same_request(intent: OrderIntent, record: OrderRecord) -> bool:
    """Does ``record`` carry what ``intent`` asked for, whenever it was placed?"""
    if record.symbol != intent.symbol or record.side != intent.side:
        return False
    if intent.kind != "new":
        original = intent.original
        return (
            original is not None
            and record.original_order_no == original.order_no
            and record.kind == intent.kind
            and (intent.all_remaining or record.quantity == intent.quantity)
        )
    if record.kind != "new" or record.quantity != intent.quantity:
        return False
    if intent.price is None:  # a market order: KIS records price 0 or the fill price
        return record.order_type in ("", intent.order_type)
    return record.price is not None and record.price == intent.price


def wait_for_identical_requests(ledger: OrderLedger, intent: OrderIntent) -> None:
    """Wait while a request asking the same as ``intent`` is in flight anywhere: its answer may name a candidate."""
    limit = time.monotonic() + MAX_PENDING_WAIT
    while True:
        until = ledger.pending(intent.account, signature(intent))
        now = time.time()
        if until <= now or time.monotonic() >= limit:
            return
        time.sleep(min(0.05, until - now))


def reconcile(
    unknown: OrderStatusUnknown,
    records: list[OrderRecord],
    *,
    now: float,
    ledger: OrderLedger,
) -> Order | None:
    """The order ``unknown`` was about, from ``records`` (today's orders), or ``None`` if it is not there.

    Orders some caller was told about (by an answer, or an earlier
    reconciliation, anywhere the ledger reaches) are skipped.  Of the rest, the
    earliest that matches is claimed: requests that asked the same thing are
    interchangeable, so which one a caller gets does not matter, only that no
    order goes to two callers and each unknown gets one or ``None``.  A match
    stamped later than the lookup itself raises :class:`AmbiguousOrderError`
    (the host's clock is off, so an absence proves nothing).
    """
    intent = unknown.intent
    if not isinstance(intent, OrderIntent):
        raise ConfigurationError("reconcile_order needs the OrderStatusUnknown an order method raised")
    same = [record for record in records if _same_request(intent, record)]  # few: the ledger is asked about these
    unclaimed = [record for record in same if not ledger.is_known(intent.account, record.order_no)]
    latest = max(unknown.ended_at, now)
    candidates = [record for record in unclaimed if matches(intent, record, unknown.started_at, latest)]
    candidates.sort(key=lambda record: (record.ordered_at is None, record.ordered_at, record.order_no))
    for record in candidates:
        if ledger.claim(intent.account, record.order_no):
            return record.to_order()
    if candidates:  # every match went to other callers meanwhile: ours is not among them
        return None
    ahead = [
        record
        for record in unclaimed
        if record.ordered_at is not None and record.ordered_at.timestamp() > latest + CLOCK_SLACK_SECONDS
    ]
    if ahead:
        raise AmbiguousOrderError(
            f"{len(ahead)} of today's orders match the unknown {intent.kind} of {intent.quantity} "
            f"{intent.symbol} but are stamped after this lookup: KIS's clock and this machine's disagree, "
            "so whether one of them is this order cannot be told",
            unknown=unknown,
            candidates=[record.to_order() for record in ahead],
        )
    return None
