"""A consumer's view of the real-time feed: a bounded queue of events.

Why bounded with drop-oldest: one slow consumer must never stall the session (which would miss
PINGPONG and be cut) nor the other consumers. When the queue is full the oldest event is
dropped, and the consumer is told with a :class:`Gap` carrying the count before its next event.

A stream talks to a :class:`Feed`: in this phase the in-process :class:`~.hub.Hub`; phase 2's
owner/relay implements the same three calls and calls :meth:`Stream.deliver`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Protocol

from ..errors import ConfigurationError
from .events import Event, Gap, kst_now
from .registry import Subscription
from .settings import ENV_HTS_ID

__all__ = ["DEFAULT_QUEUE_SIZE", "Feed", "Stream"]

DEFAULT_QUEUE_SIZE = 10_000
_ids = itertools.count(1)


class Feed(Protocol):
    """What a stream needs from whatever serves it (the in-process hub, or phase 2's relay)."""

    def subscribe(self, stream: Stream, subscriptions: list[Subscription], timeout: float | None) -> None: ...

    def unsubscribe(self, stream: Stream, subscriptions: list[Subscription], timeout: float | None) -> None: ...

    def detach(self, stream: Stream) -> None: ...


class Stream:
    """Events for one consumer: ``get(timeout)``, iteration, ``close()``, ``with``.

    ``subscribe(trades=[...], orderbooks=[...], notices=True)`` asks the feed; the events of every
    kind come back through the same queue, in arrival order, with ``Gap`` where some are missing.
    """

    def __init__(self, feed: Feed, *, maxsize: int = DEFAULT_QUEUE_SIZE, hts_id: str | None = None) -> None:
        if maxsize < 1:
            raise ConfigurationError("a stream's queue must hold at least one event")
        self.id = f"stream-{next(_ids)}"
        self._feed = feed
        self._hts_id = hts_id
        self._maxsize = maxsize
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._dropped = 0
        self._dropped_since: datetime | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Stream(id={self.id!r}, queued={len(self._queue)}, closed={self._closed})"

    # -- wants ---------------------------------------------------------------------

    def _subscriptions(self, trades: Iterable[str], orderbooks: Iterable[str], notices: bool) -> list[Subscription]:
        if isinstance(trades, str) or isinstance(orderbooks, str):
            raise ConfigurationError("trades= and orderbooks= take a list of symbols, not one string")
        wanted = [Subscription("trades", s) for s in trades] + [Subscription("orderbooks", s) for s in orderbooks]
        if notices:
            if not self._hts_id:
                raise ConfigurationError(
                    f"execution notices are keyed by the account holder's HTS ID, not the account: "
                    f"pass hts_id= or set {ENV_HTS_ID}"
                )
            wanted.append(Subscription("notices", self._hts_id))
        return wanted

    def subscribe(
        self,
        *,
        trades: Iterable[str] = (),
        orderbooks: Iterable[str] = (),
        notices: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Want these; raises ``SubscriptionLimitError`` (nothing changed) past the app key's cap."""
        if self._closed:
            raise ConfigurationError("the stream is closed")
        self._feed.subscribe(self, self._subscriptions(trades, orderbooks, notices), timeout)

    def unsubscribe(
        self,
        *,
        trades: Iterable[str] = (),
        orderbooks: Iterable[str] = (),
        notices: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Stop wanting these (KIS is told once no other stream wants them)."""
        self._feed.unsubscribe(self, self._subscriptions(trades, orderbooks, notices), timeout)

    # -- the queue -------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Called by the feed: never blocks; drops the oldest event when full."""
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._maxsize:
                oldest = self._queue.popleft()
                if self._dropped == 0:
                    self._dropped_since = getattr(oldest, "time", None) or getattr(oldest, "start", None) or kst_now()
                self._dropped += 1
            self._queue.append(event)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds (None: wait until one comes or close)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._queue or self._dropped or self._closed):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._dropped:
                gap = Gap(
                    start=self._dropped_since or kst_now(),
                    end=kst_now(),
                    reason="slow consumer: the stream's queue was full",
                    dropped=self._dropped,
                )
                self._dropped, self._dropped_since = 0, None
                return gap
            if self._queue:
                return self._queue.popleft()
            return None

    def __iter__(self) -> Iterator[Event]:
        """Every event until :meth:`close`."""
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the stream holds no wants and ``get`` returns ``None`` at once."""
        return self._closed

    def close(self) -> None:
        """Release this stream's wants at once and wake every waiter. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._dropped = 0
            self._cond.notify_all()
        self._feed.detach(self)

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
