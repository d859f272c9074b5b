"""The Redis store's relay: one pub/sub channel of frames, one of nudges.

Why one publisher thread with batches: the owner's reader only appends to an
:class:`~.relay.Outbox` (never a network call); a publisher thread sends whatever has queued
as ONE ``PUBLISH`` of newline-joined messages, so at thousands of frames a second the cost is a
round trip per batch, not per frame. Redis keeps an output buffer per subscriber: a follower too
slow for it is disconnected by the server (``client-output-buffer-limit pubsub``), sees the loss,
and reports a Gap; the owner is never held up by it.

Followers learn that the owner is gone from silence: the owner publishes its state at least every
0.5 s, and :data:`~.coord_redis.SILENCE_BOUND` without any message means it is gone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..token.redis_connect import text
from .relay import DEFAULT_OUTBOX, Outbox

__all__ = ["RedisRelayClient", "RedisRelayServer"]

_log = logging.getLogger(__name__)

#: Longest single PUBLISH payload (messages beyond it go in the next one).
MAX_BATCH_BYTES = 512 * 1024


class RedisRelayServer:
    """The owner's end: batches frames into PUBLISHes; listens for nudges."""

    def __init__(self, client: Any, frames: str, nudges: str, *, outbox_size: int = DEFAULT_OUTBOX) -> None:
        self._client = client
        self._frames = frames
        self._nudges = nudges
        self._outbox = Outbox(outbox_size)
        self._pubsub: Any = None
        self._closed = threading.Event()

    def start(self, on_nudge: Callable[[], None], greeting: Callable[[], str]) -> None:
        del greeting  # pub/sub has no "joined": the owner's periodic state serves latecomers
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._nudges)
        self._pubsub = pubsub
        threading.Thread(target=self._publish_loop, name="kis-relay-publish", daemon=True).start()
        threading.Thread(target=self._nudge_loop, args=(pubsub, on_nudge), name="kis-relay-nudges", daemon=True).start()

    def _publish_loop(self) -> None:
        while not self._closed.is_set():
            batch = self._outbox.take(0.5)
            start = 0
            while start < len(batch):
                size, end = 0, start
                while end < len(batch) and (end == start or size + len(batch[end]) < MAX_BATCH_BYTES):
                    size += len(batch[end]) + 1
                    end += 1
                try:
                    self._client.publish(self._frames, "\n".join(batch[start:end]))
                except Exception as exc:  # the followers see silence and report the gap
                    _log.warning("relaying frames through Redis failed: %s", exc)
                start = end

    def _nudge_loop(self, pubsub: Any, on_nudge: Callable[[], None]) -> None:
        while not self._closed.is_set():
            try:
                message = pubsub.get_message(timeout=0.5)
            except Exception:
                if self._closed.is_set():
                    return
                self._closed.wait(0.5)
                continue
            if message is not None:
                on_nudge()

    def publish(self, message: str) -> None:
        self._outbox.put(message)

    @property
    def followers(self) -> int:
        try:
            reply = self._client.pubsub_numsub(self._frames)
            return int(reply[0][1]) if reply else 0
        except Exception:
            return 0

    def close(self) -> None:
        self._closed.set()
        self._outbox.close()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()


class RedisRelayClient:
    """A follower's end: a subscriber thread; nudges are PUBLISHes."""

    def __init__(self, client: Any, frames: str, nudges: str) -> None:
        self._client = client
        self._frames = frames
        self._nudges = nudges
        self._pubsub: Any = None
        self._closing = threading.Event()
        self._alive = False

    def connect(self, on_message: Callable[[str], None], on_lost: Callable[[str], None]) -> bool:
        try:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self._frames)
        except Exception as exc:
            _log.warning("cannot subscribe to the relay channel: %s", exc)
            return False
        self._pubsub, self._alive = pubsub, True
        threading.Thread(
            target=self._read_loop, args=(pubsub, on_message, on_lost), name="kis-relay-follow", daemon=True
        ).start()
        return True

    def _read_loop(self, pubsub: Any, on_message: Callable[[str], None], on_lost: Callable[[str], None]) -> None:
        try:
            while not self._closing.is_set():
                message = pubsub.get_message(timeout=0.25)
                if message is None or message.get("type") != "message":
                    continue
                for line in text(message["data"]).split("\n"):
                    if line:
                        try:
                            on_message(line)
                        except Exception:
                            _log.exception("a relayed message could not be handled")
        except Exception as exc:
            if not self._closing.is_set():
                on_lost(f"the relay channel failed: {exc}")
        finally:
            self._alive = False

    def nudge(self) -> None:
        try:
            self._client.publish(self._nudges, "1")
        except Exception as exc:  # the owner reconciles every 0.5 s anyway
            _log.debug("nudging the owner failed: %s", exc)

    @property
    def alive(self) -> bool:
        return self._alive

    def close(self) -> None:
        self._closing.set()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()
