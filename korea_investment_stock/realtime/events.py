"""What a real-time stream yields: typed, immutable events.

Why frozen dataclasses with ``raw``: events cross threads (and, in phase 2, processes) and fan out
to many consumers, so they must not be mutable; KIS adds fields without notice, so each event keeps
the record's values as KIS sent them for whatever the typed fields do not cover. Prices are
``Decimal`` (KIS sends decimal strings; floats would round) and times are KST-aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from ..token.record import KST

__all__ = ["KST", "Event", "ExecutionNotice", "Gap", "OrderBook", "Trade", "kst_now"]


def kst_now() -> datetime:
    """The current time, KST-aware."""
    return datetime.now(KST)


@dataclass(frozen=True)
class Trade:
    """One H0STCNT0 record: a trade (체결) of ``volume`` shares of ``symbol`` at ``price``."""

    symbol: str
    price: Decimal
    volume: int
    time: datetime
    raw: tuple[str, ...]


@dataclass(frozen=True)
class OrderBook:
    """One H0STASP0 record: ten levels each side, best first, as ``(price, size)`` pairs."""

    symbol: str
    asks: tuple[tuple[Decimal, int], ...]
    bids: tuple[tuple[Decimal, int], ...]
    time: datetime
    raw: tuple[str, ...]


@dataclass(frozen=True)
class ExecutionNotice:
    """One decrypted H0STCNI0/H0STCNI9 record about one of the account holder's orders.

    ``filled`` is true for a fill (CNTG_YN ``2``); otherwise the notice is an order event
    (accepted, revised, cancelled, refused) and ``filled_quantity``/``price`` are the order's.
    """

    order_number: str
    symbol: str
    side: Literal["buy", "sell"]
    filled_quantity: int
    price: Decimal
    time: datetime
    filled: bool
    raw: tuple[str, ...]


@dataclass(frozen=True)
class Gap:
    """Events may be missing between ``start`` and ``end``.

    ``reason`` says why (a silent socket, a drop, a slow consumer); ``dropped`` counts events
    known to be lost (those a slow consumer's queue discarded; 0 when the server's frames were
    never seen, as during a reconnect, where the count cannot be known).
    """

    start: datetime
    end: datetime
    reason: str
    dropped: int = 0


Event = Trade | OrderBook | ExecutionNotice | Gap
