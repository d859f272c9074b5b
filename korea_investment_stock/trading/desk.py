"""The trading room's front: one object per client that the client's methods delegate to.

It holds what the operations share: the context (call path, account, host),
the US exchange of each symbol once looked up, and the order desk.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime
from decimal import Decimal

from ..errors import ConfigurationError, OrderStatusUnknown, TradingUnsupportedError, UnknownSymbolError
from ..transport import KISResponse
from . import account, history
from .context import TradingContext
from .models import Balance, Bar, Buyable, Order, OrderIntent, OrderRecord
from .orders import (
    DEFAULT_SETTLE_SECONDS,
    OrderDesk,
    check_price,
    check_symbol,
    reconcile,
    wait_for_identical_requests,
)
from .trids import OVERSEAS_EXCHANGES, US_EXCHANGES, Exchange, exchange_for
from .values import KST, as_date, decimal, kst_today

_PRICE_DETAIL = "/uapi/overseas-price/v1/quotations/price-detail"
_PRICE_DETAIL_ID = "HHDFS76200200"


class Trading:
    """Orders, balance, fills, buyable amount and price history for one client."""

    def __init__(self, context: TradingContext) -> None:
        self.context = context
        self._us_exchanges: dict[str, Exchange] = {}
        self._lock = threading.Lock()
        self.orders = OrderDesk(context, self.exchange_of)

    # ------------------------------------------------------------------ lookups
    def us_exchange(self, symbol: str) -> Exchange:
        """The US exchange ``symbol`` trades on (NASDAQ, NYSE, AMEX tried in turn), looked up once."""
        with self._lock:
            known = self._us_exchanges.get(symbol)
        if known is not None:
            return known
        if self.context.mock:
            raise TradingUnsupportedError(
                f"the mock host cannot look up {symbol!r}'s exchange (KIS has no price-detail there): "
                "pass market='NASD', 'NYSE' or 'AMEX'"
            )
        for code in US_EXCHANGES:
            exchange = OVERSEAS_EXCHANGES[code]
            response = self._price_detail(symbol, exchange)
            output = response.body.get("output")
            if response.body.get("rt_cd") == "0" and isinstance(output, dict) and decimal(output, "last") > 0:
                with self._lock:
                    self._us_exchanges[symbol] = exchange
                return exchange
        raise UnknownSymbolError(
            f"{symbol!r} is on none of NASDAQ, NYSE, AMEX; pass the exchange as market= (NASD, NYSE, AMEX)"
        )

    def exchange_of(self, symbol: str, market: str) -> Exchange | None:
        """The overseas exchange of ``symbol`` in ``market``; ``None`` for Korea."""
        if not isinstance(market, str) or not market.strip():
            raise ConfigurationError(f"market must be 'KR', 'US' or an exchange code, got {market!r}")
        if market.strip().upper() == "US":
            return self.us_exchange(symbol)
        return exchange_for(market)

    # ------------------------------------------------------------------ account
    def balance(self, market: str) -> Balance:
        return account.fetch_balance(self.context, market)

    def order_records(
        self, start: date | datetime | str | None, end: date | datetime | str | None, market: str
    ) -> list[OrderRecord]:
        today = kst_today()
        first = as_date("start", start, today)
        last = as_date("end", end, today if end is None and start is None else max(first, today))
        return account.fetch_orders(self.context, first, last, market)

    def buyable(self, symbol: str, price: object, market: str) -> Buyable:
        symbol = check_symbol(symbol)
        exchange = self.exchange_of(symbol, market)
        limit = check_price(price)
        if limit is None and exchange is not None:  # overseas KIS sizes a limit order only: use the last price
            limit = self._last_price(symbol, exchange)
        return account.fetch_buyable(self.context, symbol, limit, exchange)

    def _last_price(self, symbol: str, exchange: Exchange) -> Decimal:
        if self.context.mock:
            raise TradingUnsupportedError(
                f"the mock host has no last price for {symbol!r} (KIS has no price-detail there): pass price="
            )
        response = self._price_detail(symbol, exchange)
        output = response.body.get("output")
        last = decimal(output, "last") if isinstance(output, dict) else Decimal(0)
        if last <= 0:
            raise UnknownSymbolError(f"no last price for {symbol!r} on {exchange.order_code}; pass price=")
        return last

    def _price_detail(self, symbol: str, exchange: Exchange) -> KISResponse:
        return self.context.call(
            "GET", _PRICE_DETAIL, _PRICE_DETAIL_ID, params={"AUTH": "", "EXCD": exchange.quote_code, "SYMB": symbol}
        )

    def daily_prices(
        self,
        symbol: str,
        start: date | datetime | str,
        end: date | datetime | str | None,
        *,
        period: str,
        adjusted: bool,
        market: str,
    ) -> list[Bar]:
        symbol = check_symbol(symbol)
        first = as_date("start", start, kst_today())
        last = as_date("end", end, kst_today())
        if not isinstance(adjusted, bool):
            raise ConfigurationError(f"adjusted must be True or False, got {adjusted!r}")
        return history.fetch_daily_prices(
            self.context,
            symbol,
            first,
            last,
            period=period,
            adjusted=adjusted,
            exchange=self.exchange_of(symbol, market),
        )

    # ------------------------------------------------------------------ reconciliation
    def reconcile(self, error: OrderStatusUnknown, settle: float) -> Order | None:
        """Settle ``error``: the order KIS has for it, or ``None`` when it was not placed."""
        intent = error.intent if isinstance(error, OrderStatusUnknown) else None
        if not isinstance(intent, OrderIntent):
            raise ConfigurationError("reconcile_order takes the OrderStatusUnknown an order method raised")
        if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 60:
            raise ConfigurationError(f"settle must be seconds between 0 and 60, got {settle!r}")
        wait_for_identical_requests(self.context.ledger, intent)
        found = self._look_up(error, intent)  # found at once in the common case: no wait at all
        if found is not None:
            return found
        wait = error.ended_at + settle - time.time()
        if wait <= 0:
            return None
        time.sleep(wait)  # absence counts only once KIS has had time to finish with the request
        return self._look_up(error, intent)

    def _look_up(self, error: OrderStatusUnknown, intent: OrderIntent) -> Order | None:
        started = datetime.fromtimestamp(error.started_at, KST).date()
        first = min(started, kst_today())  # the overseas query reaches a day back by itself
        records = account.fetch_orders(self.context, first, kst_today(), intent.market)
        return reconcile(error, records, now=time.time(), ledger=self.context.ledger)


__all__ = ["DEFAULT_SETTLE_SECONDS", "Trading"]
