"""Real-time quotes and execution notices over KIS's WebSocket (issue 19).

The room's parts, one job each:

* :mod:`.events` - what a stream yields: ``Trade``, ``OrderBook``, ``ExecutionNotice``, ``Gap``.
* :mod:`.frames` - reading KIS's frames by position, building subscribe frames.
* :mod:`.crypto` - decrypting execution notices (needs ``cryptography``).
* :mod:`.approval` - the approval key, issued once and replaced only when refused.
* :mod:`.backoff` - reconnect pacing: jitter, and a bound per minute.
* :mod:`.session` - ONE socket to KIS: answers awaited, PINGPONG, silence, reconnects, ``Gap``.
* :mod:`.registry` - what is wanted by whom, capped at 41 per app key.
* :mod:`.hub` - one session shared by this process's streams (fan-out by subscription).
* :mod:`.stream` - a consumer's bounded queue: ``get``, iteration, ``close``.
* :mod:`.settings` - ``ws_url`` / ``hts_id`` from arguments, variables and defaults.

``websockets`` and ``cryptography`` come with the extra ``korea-investment-stock[realtime]``;
they are imported only when a session connects or a notice is decrypted.
"""

from __future__ import annotations

from .events import KST, Event, ExecutionNotice, Gap, OrderBook, Trade
from .registry import SUBSCRIPTION_CAP, Subscription, SubscriptionRegistry

__all__ = [
    "KST",
    "SUBSCRIPTION_CAP",
    "Event",
    "ExecutionNotice",
    "Gap",
    "OrderBook",
    "Subscription",
    "SubscriptionRegistry",
    "Trade",
]
