"""The typed results of the trading methods: frozen dataclasses that keep KIS's answer as ``raw``.

Prices and amounts are ``Decimal`` (never float: a price is exact), quantities
``int``, times KST-aware ``datetime``.  ``raw`` is KIS's row as it came, for the
fields these classes do not name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

__all__ = ["Balance", "Bar", "Buyable", "Order", "OrderIntent", "OrderRecord", "Position", "Side"]

#: An order's direction.
Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class OrderIntent:
    """What an order request asked for: kept on :class:`~.errors.OrderStatusUnknown` to reconcile it.

    ``kind`` is ``new``, ``revise`` or ``cancel``; for the last two ``original``
    is the order acted on.  ``price`` is ``None`` for a market order.
    """

    kind: Literal["new", "revise", "cancel"]
    symbol: str
    side: Side
    quantity: int
    price: Decimal | None
    market: str
    order_type: str
    account: str = field(repr=False)  # an account number stays out of tracebacks and logs
    mock: bool
    original: Order | None = None
    all_remaining: bool = False


@dataclass(frozen=True)
class Order:
    """An order KIS accepted (or reconciliation found): the handle to revise or cancel it.

    ``order_no`` is KIS's ``ODNO`` and ``branch`` its ``KRX_FWDG_ORD_ORGNO``; a
    revise or cancel is a new order whose ``original_order_no`` is the one it
    acted on (later actions must use the newest).  ``market`` is ``KR`` or the
    overseas exchange code (``NASD``, ``NYSE`` ...).
    """

    order_no: str
    branch: str
    symbol: str
    side: Side
    quantity: int
    price: Decimal | None
    market: str
    order_type: str
    ordered_at: datetime | None
    kind: Literal["new", "revise", "cancel"] = "new"
    original_order_no: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Position:
    """One holding of a :class:`Balance`."""

    symbol: str
    name: str
    quantity: int
    sellable_quantity: int
    average_price: Decimal
    current_price: Decimal
    purchase_amount: Decimal
    evaluation_amount: Decimal
    profit_loss: Decimal
    profit_loss_rate: Decimal
    currency: str
    market: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Balance:
    """The account in one market: every position (all pages read), cash and totals, in ``currency``.

    ``cash`` is the deposit KIS reports (``dnca_tot_amt`` in Korea); overseas it
    is the foreign purchase power KIS reports for the exchange when it gives
    one, else zero.  ``total_evaluation`` is KIS's total when given, else cash
    plus the positions' evaluation.
    """

    market: str
    currency: str
    positions: tuple[Position, ...]
    cash: Decimal
    purchase_total: Decimal
    evaluation_total: Decimal
    profit_loss_total: Decimal
    total_evaluation: Decimal
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OrderRecord:
    """One row of the orders query: an order and how much of it filled.

    ``kind`` says whether the row is a new order, a revise or a cancel;
    ``remaining_quantity`` is what is still resting.
    """

    order_no: str
    original_order_no: str | None
    branch: str
    symbol: str
    name: str
    side: Side
    kind: Literal["new", "revise", "cancel"]
    quantity: int
    price: Decimal | None
    filled_quantity: int
    average_fill_price: Decimal
    filled_amount: Decimal
    remaining_quantity: int
    rejected_quantity: int
    order_type: str
    market: str
    ordered_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_order(self) -> Order:
        """This row as an :class:`Order` handle (to revise or cancel what remains)."""
        return Order(
            order_no=self.order_no,
            branch=self.branch,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            price=self.price,
            market=self.market,
            order_type=self.order_type,
            ordered_at=self.ordered_at,
            kind=self.kind,
            original_order_no=self.original_order_no,
            raw=self.raw,
        )


@dataclass(frozen=True)
class Buyable:
    """How much of a symbol the account can buy at ``price``.

    ``quantity``/``amount`` use cash only (no margin: KIS's ``nrcvb_buy_*``);
    ``max_quantity``/``max_amount`` are KIS's maximum with margin where it has one.
    """

    symbol: str
    market: str
    currency: str
    price: Decimal
    cash: Decimal
    quantity: int
    amount: Decimal
    max_quantity: int
    max_amount: Decimal
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar of :meth:`~.client.KoreaInvestment.fetch_daily_prices`.

    ``day`` is the bar's trading date as the exchange counts it; ``time`` is that
    date's midnight in KST (a KST-aware ``datetime`` for code that wants one).
    """

    symbol: str
    day: date
    time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    amount: Decimal
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
