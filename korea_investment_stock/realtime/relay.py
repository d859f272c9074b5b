"""What the session owner sends the other processes: the message format and each follower's outbox.

Why raw frame text: the owner must never fall behind KIS (it would miss PINGPONG and be cut), so it
does no work per follower beyond appending one string to a bounded queue; every follower parses
the frames it receives itself with :mod:`.frames`. Execution notices are relayed *decrypted*
(``0|H0STCNI0|001|<plaintext>``) so the AES key stays with the owner. Control messages (gap,
state with the subscriptions KIS confirmed, heartbeat) are one JSON object on the same channel:
a data frame starts with ``0`` or ``1``, a control message with ``{``.

Why drop-oldest with a count: a slow follower must lose frames, not stall the owner; it is told
with a ``gap`` message carrying the count, which its streams turn into a :class:`~.events.Gap`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from . import frames
from .events import Event, Gap, kst_now
from .registry import Subscription

__all__ = [
    "DEFAULT_OUTBOX",
    "Outbox",
    "control",
    "decode",
    "events_of",
    "gap_message",
    "parse_gap",
    "plain_frame",
    "subscription_of",
]

#: Messages queued per follower before the oldest are dropped (a few seconds at 5,000 frames/s).
DEFAULT_OUTBOX = 20_000


def plain_frame(tr_id: str, count: int, payload: str) -> str:
    """A data frame in KIS's text form, unencrypted (how notices are relayed once decrypted)."""
    return f"0|{tr_id}|{count:03d}|{payload}"


def control(kind: str, **fields: Any) -> str:
    """One control message: ``{"t": kind, ...}`` on one line."""
    return json.dumps({"t": kind, **fields}, separators=(",", ":"), ensure_ascii=False)


def decode(message: str) -> frames.DataFrame | dict[str, Any] | None:
    """A relayed message: a data frame, a control object, or None when unreadable."""
    if message[:1] == "{":
        try:
            value = json.loads(message)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    try:
        frame = frames.parse(message)
    except frames.FrameError:
        return None
    return frame if isinstance(frame, frames.DataFrame) else None


def events_of(frame: frames.DataFrame) -> list[Event]:
    """The events of an unencrypted data frame (trades, order books, decrypted notices)."""
    if frame.encrypted:
        return []
    if frame.tr_id == frames.TRADE_TR_ID:
        return list(frames.parse_trades(frame))
    if frame.tr_id == frames.ORDERBOOK_TR_ID:
        return list(frames.parse_orderbooks(frame))
    if frame.tr_id in frames.NOTICE_TR_IDS:
        return list(frames.parse_notices(frame.payload, frame.count, frame.tr_id))
    return []


def gap_message(gap: Gap) -> str:
    """A :class:`Gap` as a control message."""
    return control("gap", start=gap.start.isoformat(), end=gap.end.isoformat(), reason=gap.reason, dropped=gap.dropped)


def parse_gap(message: dict[str, Any]) -> Gap:
    """The :class:`Gap` a ``gap`` control message carries (times KST-aware)."""
    now = kst_now()

    def when(name: str) -> datetime:
        try:
            return datetime.fromisoformat(str(message[name]))
        except (KeyError, ValueError):
            return now

    return Gap(
        start=when("start"),
        end=when("end"),
        reason=str(message.get("reason", "relay")),
        dropped=int(message.get("dropped", 0) or 0),
    )


def subscription_of(text: str) -> Subscription | None:
    """``"trades:005930"`` back into a :class:`Subscription` (None if unknown)."""
    kind, _, key = text.partition(":")
    if kind in ("trades", "orderbooks", "notices") and key:
        return Subscription(kind, key)  # type: ignore[arg-type]
    return None


class Outbox:
    """One follower's bounded queue: :meth:`put` never blocks; when full the oldest data frame goes.

    Control messages (acks, state, gaps) are kept before data: they are few and a follower needs
    them.  What a dropped frame costs is counted in events (its record count), so the ``Gap``
    a follower gets says exactly how many events it missed.
    """

    def __init__(self, maxsize: int = DEFAULT_OUTBOX) -> None:
        self._queue: deque[tuple[str, int]] = deque()  # (message, events it carries)
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._dropped = 0
        self._dropped_since: datetime | None = None
        self._closed = False

    def put(self, message: str) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._maxsize:
                self._drop_oldest()
            self._queue.append((message, _events_in(message)))
            if len(self._queue) == 1:
                self._cond.notify()

    def _drop_oldest(self) -> None:
        index = next((i for i, (_, events) in enumerate(self._queue) if events), 0)
        _, events = self._queue[index]
        del self._queue[index]
        if events:
            if self._dropped == 0:
                self._dropped_since = kst_now()
            self._dropped += events

    def take(self, timeout: float) -> list[str]:
        """Everything queued (a ``gap`` message first if some were dropped); [] after ``timeout`` or close."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._queue or self._dropped or self._closed):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            batch: list[str] = []
            if self._dropped:
                start = self._dropped_since or kst_now()
                batch.append(
                    gap_message(
                        Gap(start, kst_now(), "slow follower: the relay's queue was full", dropped=self._dropped)
                    )
                )
                self._dropped, self._dropped_since = 0, None
            batch.extend(message for message, _ in self._queue)
            self._queue.clear()
            return batch

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()


def _events_in(message: str) -> int:
    """How many events a relayed message carries: a data frame's record count, 0 for control."""
    if message[:1] == "{":
        return 0
    parts = message.split("|", 3)
    try:
        return max(1, int(parts[2])) if len(parts) > 2 else 1
    except ValueError:
        return 1
