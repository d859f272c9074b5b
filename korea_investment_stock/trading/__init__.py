"""Trading and the account: orders that are never sent twice, balance, fills, buyable amount, bars.

The room's parts: ``trids`` (the one tr_id table), ``models`` (typed results),
``paging`` (continuation pages, bounded), ``orders`` (the no-double-order rule
and reconciliation), ``account``, ``history``, and ``desk`` (what the client
delegates to).  Every call goes through the client's REST path.
"""

from __future__ import annotations

from .context import TradingContext
from .desk import Trading
from .models import Balance, Bar, Buyable, Order, OrderIntent, OrderRecord, Position, Side
from .orders import DEFAULT_SETTLE_SECONDS, UNSENT_RETRIES
from .paging import DEFAULT_MAX_PAGES, DEFAULT_MAX_RESTARTS, DEFAULT_MAX_SECONDS
from .trids import OVERSEAS_EXCHANGES, TR_IDS, Exchange, TrId, tr_id

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_SETTLE_SECONDS",
    "OVERSEAS_EXCHANGES",
    "TR_IDS",
    "UNSENT_RETRIES",
    "Balance",
    "Bar",
    "Buyable",
    "Exchange",
    "Order",
    "OrderIntent",
    "OrderRecord",
    "Position",
    "Side",
    "TrId",
    "Trading",
    "TradingContext",
    "tr_id",
]
