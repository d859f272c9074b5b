"""One app key's session shared by the streams of this process: the fan-out.

Why a hub: KIS allows one session per app key, so every stream of a process must share it. The
hub keeps the registry of wants (subscribing at KIS only for the first holder, releasing after the
last), opens the session on first use, and hands each event to the streams that want it.

Phase 2 puts the elected owner and the relay between the session and the streams: the owner runs
a hub; other processes get a relay feed with the same :class:`~.stream.Feed` calls.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import RealtimeError
from .approval import ApprovalKeySource
from .events import Event, ExecutionNotice, Gap, OrderBook, Trade
from .registry import Registry, Subscription, SubscriptionRegistry
from .session import Session
from .stream import DEFAULT_QUEUE_SIZE, Stream

__all__ = ["Hub", "holders_of"]

_log = logging.getLogger(__name__)


def holders_of(event: Event, registry: Registry, hts_id: str | None) -> frozenset[str] | None:
    """Who gets ``event``: the holders of its (kind, symbol), or None for everyone (a ``Gap``)."""
    if isinstance(event, Gap):
        return None
    if isinstance(event, Trade):
        return registry.holders(Subscription("trades", event.symbol))
    if isinstance(event, OrderBook):
        return registry.holders(Subscription("orderbooks", event.symbol))
    if isinstance(event, ExecutionNotice) and hts_id:
        return registry.holders(Subscription("notices", hts_id))
    return frozenset()


class Hub:
    """Streams over one :class:`Session`. ``session_options`` go to :class:`Session` as they are."""

    def __init__(
        self,
        url: str,
        approval_keys: ApprovalKeySource,
        *,
        mock: bool = False,
        hts_id: str | None = None,
        registry: Registry | None = None,
        **session_options: Any,
    ) -> None:
        self.mock = mock
        self.hts_id = hts_id
        self.registry: Registry = registry or SubscriptionRegistry()
        self.session = Session(url, approval_keys, self._dispatch, **session_options)
        self._streams: dict[str, Stream] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Hub(session={self.session!r}, streams={len(self._streams)})"

    def stream(self, *, maxsize: int = DEFAULT_QUEUE_SIZE) -> Stream:
        """A new consumer stream on this hub."""
        stream = Stream(self, maxsize=maxsize, hts_id=self.hts_id)
        with self._lock:
            self._streams[stream.id] = stream
        return stream

    # -- Feed ---------------------------------------------------------------------------

    def subscribe(self, stream: Stream, subscriptions: list[Subscription], timeout: float | None) -> None:
        """Hold, then subscribe at KIS what nobody held; all or nothing for the stream."""
        new = self.registry.acquire(stream.id, subscriptions)  # the cap is checked here, before any frame
        done: list[Subscription] = []
        try:
            if new:
                self.session.open()
            for subscription in new:
                self.session.subscribe(subscription.tr_id(mock=self.mock), subscription.key, timeout)
                done.append(subscription)
        except BaseException:
            freed = self.registry.release(stream.id, subscriptions)
            for subscription in done:
                if subscription in freed:
                    self._quietly_unsubscribe(subscription, timeout)
            raise

    def unsubscribe(self, stream: Stream, subscriptions: list[Subscription], timeout: float | None) -> None:
        for subscription in self.registry.release(stream.id, subscriptions):
            self.session.unsubscribe(subscription.tr_id(mock=self.mock), subscription.key, timeout)

    def detach(self, stream: Stream) -> None:
        with self._lock:
            self._streams.pop(stream.id, None)
        for subscription in self.registry.release(stream.id):
            self._quietly_unsubscribe(subscription, None)

    def _quietly_unsubscribe(self, subscription: Subscription, timeout: float | None) -> None:
        try:
            self.session.unsubscribe(subscription.tr_id(mock=self.mock), subscription.key, timeout)
        except RealtimeError as exc:
            _log.warning("releasing %s at KIS failed: %s", subscription, exc)

    # -- fan-out ---------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        with self._lock:
            streams = dict(self._streams)
        holders = holders_of(event, self.registry, self.hts_id)
        targets = streams.values() if holders is None else [streams[h] for h in holders if h in streams]
        for stream in targets:
            stream.deliver(event)

    def close(self) -> None:
        """Close every stream and the session."""
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.close()
        self.session.close()
