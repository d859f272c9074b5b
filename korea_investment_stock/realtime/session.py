"""ONE WebSocket session to KIS: subscribe with answers awaited, PINGPONG, silence, reconnects, ``Gap``.

Why the ``websockets`` *sync* client with one reader thread (not asyncio): the rest of this
library is synchronous and thread-based, users call it from plain threads and from their own
event loops alike, and an asyncio loop of ours would have to live in a thread anyway. The sync
client's ``recv(timeout)`` gives silent-socket detection directly, and its ``send`` is safe from
other threads, so callers send their own frames while the reader thread only reads.

Threads: the reader thread reads every frame, answers PINGPONG, hands events to ``on_event``,
wakes the caller waiting for an answer, and reconnects. After a reconnect a short-lived thread
subscribes again to everything wanted and then reports one :class:`Gap` from the loss to that
moment. One request is in flight at a time (KIS pairs answers by tr_id/tr_key, and refusals such
as OPSP8996 carry neither).

Phase 2 runs this session in the elected owner only (:mod:`.node`): ``on_frame`` hands every
data frame's text (a notice decrypted) to the relay, and ``may_connect`` is the owner's lease,
asked before every connect, so a fenced owner never opens a socket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import (
    ApprovalKeyError,
    RealtimeError,
    RealtimeTimeoutError,
    SessionInUseError,
    SubscriptionLimitError,
    SubscriptionRefusedError,
)
from . import frames
from .approval import ApprovalKeySource, mask
from .backoff import Backoff, ReconnectBudget
from .events import Event, Gap, kst_now
from .registry import SUBSCRIPTION_CAP

__all__ = ["Session", "SessionStats"]

_log = logging.getLogger(__name__)

SubKey = tuple[str, str]
EXTRA_HINT = "pip install 'korea-investment-stock[realtime]'"


def _websockets() -> Any:
    try:
        from websockets.sync import client
    except ImportError as exc:
        raise ImportError(f"the real-time WebSocket needs the 'websockets' package: {EXTRA_HINT}") from exc
    return client


@dataclass
class SessionStats:
    """What a status command or a test may want to see (no keys)."""

    connects: int = 0
    reconnects: int = 0
    pings_answered: int = 0
    frames: int = 0
    bad_frames: int = 0
    gaps: int = 0
    stale_keys: int = 0


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: frames.ControlFrame | None = None


class Session:
    """One socket to KIS for one app key.

    ``approval_keys(None)`` gives the current approval key, ``approval_keys(stale)`` a newer one
    after a refusal. ``on_event`` runs in the reader thread: keep it short (a queue append).
    Timeouts are seconds; every wait is bounded.
    """

    def __init__(
        self,
        url: str,
        approval_keys: ApprovalKeySource,
        on_event: Callable[[Event], None],
        *,
        custtype: str = "P",
        connect_timeout: float = 5.0,
        answer_timeout: float = 5.0,
        silence_timeout: float = 150.0,
        backoff: Backoff | None = None,
        reconnects_per_minute: int = 6,
        early_notice_limit: int = 64,
        on_frame: Callable[[str], None] | None = None,
        may_connect: Callable[[], bool] | None = None,
    ) -> None:
        self.url = url
        self._approval_keys = approval_keys
        self._on_event = on_event
        self._custtype = custtype
        self._connect_timeout = connect_timeout
        self._answer_timeout = answer_timeout
        self._silence_timeout = silence_timeout
        self._backoff = backoff or Backoff()
        self._budget = ReconnectBudget(reconnects_per_minute)
        self._early_limit = early_notice_limit
        self._on_frame = on_frame
        self._may_connect = may_connect
        self._cond = threading.Condition()
        self._request_lock = threading.Lock()
        self._closing = threading.Event()
        self._conn: Any = None
        self._generation = 0
        self._wanted: dict[SubKey, None] = {}
        self._active: set[SubKey] = set()
        self._ciphers: dict[str, tuple[str, str]] = {}
        self._early: dict[str, list[frames.DataFrame]] = {}
        self._pending: dict[SubKey, _Waiter] = {}
        self._fatal: RealtimeError | None = None
        self._approval: str | None = None
        self._reconnect_now = False
        self._ever_accepted = False
        self._gap_start: Any = None
        self._gap_reason = ""
        self._thread: threading.Thread | None = None
        self.stats = SessionStats()

    def __repr__(self) -> str:
        return (
            f"Session(url={self.url!r}, approval_key={mask(self._approval)}, "
            f"connected={self.connected}, subscriptions={len(self._active)})"
        )

    # -- public ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def wanted(self) -> frozenset[SubKey]:
        with self._cond:
            return frozenset(self._wanted)

    @property
    def active(self) -> frozenset[SubKey]:
        """Subscriptions KIS confirmed on the current connection."""
        with self._cond:
            return frozenset(self._active)

    @property
    def failure(self) -> RealtimeError | None:
        """Why the session gave up for good (e.g. :class:`SessionInUseError`), or None."""
        return self._fatal

    def open(self) -> Session:
        """Connect now (bounded by ``connect_timeout``) and start the reader thread."""
        if self._thread is not None:
            return self
        self._approval = self._approval_keys(None)
        conn = self._connect()
        self._attach(conn)
        self._thread = threading.Thread(target=self._run, args=(conn,), name="kis-ws-reader", daemon=True)
        self._thread.start()
        return self

    def subscribe(self, tr_id: str, tr_key: str, timeout: float | None = None) -> None:
        """Subscribe and wait for KIS's answer; kept wanted (re-subscribed after reconnects) until unsubscribed.

        Raises :class:`SubscriptionLimitError` on ``OPSP0008``, :class:`SessionInUseError` on
        ``OPSP8996``, :class:`SubscriptionRefusedError` on other refusals, :class:`RealtimeTimeoutError`.
        """
        key = (tr_id, tr_key)
        with self._cond:
            self._raise_if_unusable()
            self._wanted[key] = None
        try:
            self._ensure(key, time.monotonic() + (self._answer_timeout if timeout is None else timeout))
        except RealtimeError as exc:
            if not isinstance(exc, RealtimeTimeoutError):
                with self._cond:
                    self._wanted.pop(key, None)
            raise

    def unsubscribe(self, tr_id: str, tr_key: str, timeout: float | None = None) -> None:
        """Stop wanting ``(tr_id, tr_key)``; tell KIS if the current connection has it."""
        key = (tr_id, tr_key)
        deadline = time.monotonic() + (self._answer_timeout if timeout is None else timeout)
        with self._cond:
            self._wanted.pop(key, None)
        if not self._request_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RealtimeTimeoutError(f"unsubscribe {tr_id}/{tr_key}: another request did not finish in time")
        try:
            with self._cond:
                conn, active = self._conn, key in self._active
            if conn is None or not active or self._approval is None:
                return
            answer = self._request(
                conn,
                key,
                frames.request_frame(self._approval, tr_id, tr_key, subscribe=False, custtype=self._custtype),
                deadline,
            )
            with self._cond:
                self._active.discard(key)
                if answer is not None and answer.ok and key[0] in frames.NOTICE_TR_IDS:
                    self._ciphers.pop(key[0], None)  # KIS: drop the AES key on release
        finally:
            self._request_lock.release()

    def close(self, timeout: float = 2.0) -> None:
        """Close the socket and stop the reader; wanted subscriptions are forgotten. Idempotent."""
        self._closing.set()
        with self._cond:
            conn = self._conn
            self._wanted.clear()
            self._cond.notify_all()
        if conn is not None:
            self._close_conn(conn)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- connecting ----------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._may_connect is not None and not self._may_connect():
            raise RealtimeError("not connecting: this process no longer owns the app key's session")
        client = _websockets()
        try:
            return client.connect(
                self.url,
                open_timeout=self._connect_timeout,
                ping_interval=None,  # KIS: no client pings (a .NET client was cut for them)
                compression=None,
                close_timeout=1.0,
                max_size=None,  # frames can exceed 8 KB; KIS is the only peer
                proxy=None,
                legacy=True,
            )
        except TimeoutError:
            raise RealtimeTimeoutError(
                f"the KIS WebSocket at {self.url} did not open within {self._connect_timeout:g}s"
            ) from None
        except Exception as exc:  # OSError, InvalidHandshake, InvalidURI...
            raise RealtimeError(f"cannot open the KIS WebSocket at {self.url}: {type(exc).__name__}: {exc}") from None

    def _attach(self, conn: Any) -> None:
        with self._cond:
            self._conn = conn
            self._generation += 1
            self._active.clear()
            self._ciphers.clear()
            self.stats.connects += 1
            self._cond.notify_all()

    @staticmethod
    def _close_conn(conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # already gone
            _log.debug("closing the KIS WebSocket failed", exc_info=True)

    def _reconnect(self) -> Any:
        """Connect again, paced by backoff and the per-minute budget; None once closing or fatal."""
        while not self._closing.is_set() and self._fatal is None:
            delay = 0.0 if self._reconnect_now else self._backoff.next()
            self._reconnect_now = False
            delay = max(delay, self._budget.wait_time())
            if self._closing.wait(delay):
                return None
            self._budget.record()
            try:
                return self._connect()
            except RealtimeError as exc:
                _log.warning("reconnecting to KIS failed: %s", exc)
        return None

    # -- the reader -------------------------------------------------------------------------

    def _run(self, conn: Any) -> None:
        while True:
            reason = self._read(conn)
            with self._cond:
                self._conn = None
                self._active.clear()
                for waiter in self._pending.values():
                    waiter.done.set()  # answer stays None: the connection is gone
                self._cond.notify_all()
                if self._gap_start is None:
                    self._gap_start, self._gap_reason = kst_now(), reason
            if self._closing.is_set() or self._fatal is not None:
                return
            _log.warning("the KIS WebSocket was lost (%s); reconnecting", reason)
            conn = self._reconnect()
            if conn is None:
                return
            self._attach(conn)
            self.stats.reconnects += 1
            generation = self._generation
            threading.Thread(target=self._recover, args=(generation,), name="kis-ws-recover", daemon=True).start()

    def _read(self, conn: Any) -> str:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                text = conn.recv(timeout=self._silence_timeout)
            except TimeoutError:
                self._close_conn(conn)
                return f"silent for {self._silence_timeout:g}s"
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                return f"closed ({code})"
            if isinstance(text, str):
                try:
                    self._on_text(conn, text)
                except Exception:  # one bad frame or consumer must not kill the session
                    self.stats.bad_frames += 1
                    _log.exception("a KIS WebSocket frame could not be handled")

    def _on_text(self, conn: Any, text: str) -> None:
        self.stats.frames += 1
        try:
            frame = frames.parse(text)
        except frames.FrameError as exc:
            self.stats.bad_frames += 1
            _log.warning("unreadable KIS frame: %s", exc)
            return
        if isinstance(frame, frames.DataFrame):
            if self._on_frame is not None and not frame.encrypted:
                self._on_frame(text)
            self._on_data(frame)
        elif frame.is_pingpong:
            self.stats.pings_answered += 1  # counted first: the fake may see the echo before we return
            conn.send(text)  # the echo most clients send; KIS keeps such sessions alive (seen)
        else:
            self._on_control(frame)

    def _on_data(self, frame: frames.DataFrame) -> None:
        events: list[Event]
        if frame.encrypted:
            with self._cond:
                cipher = self._ciphers.get(frame.tr_id)
                if cipher is None:  # a frame can come before its key (seen): hold it, bounded
                    held = self._early.setdefault(frame.tr_id, [])
                    if len(held) < self._early_limit:
                        held.append(frame)
                    return
            from .crypto import decrypt

            plaintext = decrypt(frame.payload, *cipher)
            if self._on_frame is not None:
                self._on_frame(f"0|{frame.tr_id}|{frame.count:03d}|{plaintext}")
            events = list(frames.parse_notices(plaintext, frame.count, frame.tr_id))
        elif frame.tr_id == frames.TRADE_TR_ID:
            events = list(frames.parse_trades(frame))
        elif frame.tr_id == frames.ORDERBOOK_TR_ID:
            events = list(frames.parse_orderbooks(frame))
        else:
            return
        for event in events:
            self._on_event(event)

    def _on_control(self, frame: frames.ControlFrame) -> None:
        """Route an answer to its waiter; keep AES keys; OPSP8996 on a never-accepted session is final."""
        held: list[frames.DataFrame] = []
        with self._cond:
            waiter = self._pending.get((frame.tr_id, frame.tr_key))
            if waiter is None and self._pending and not frame.ok:
                waiter = next(iter(self._pending.values()))  # refusals may carry no tr_id ("(null)")
            if frame.cipher is not None and frame.msg_cd in ("OPSP0000", "OPSP0002"):
                self._ciphers[frame.tr_id] = frame.cipher
                held = self._early.pop(frame.tr_id, [])
            if frame.ok:
                self._ever_accepted = True
            if frame.msg_cd == "OPSP8996" and not self._ever_accepted:
                self._fatal = SessionInUseError(
                    "KIS refused this session (OPSP8996 ALREADY IN USE appkey): another socket holds the app key. "
                    "One session per app key is allowed; share it instead of opening another."
                )
            if waiter is not None:
                waiter.answer = frame
                waiter.done.set()
        for early in held:
            self._on_data(early)

    # -- requests -------------------------------------------------------------------------

    def _raise_if_unusable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing.is_set():
            raise RealtimeError("the session is closed")

    def _wait_connected(self, deadline: float) -> Any:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._conn is not None or self._fatal is not None or self._closing.is_set(),
                max(0.0, deadline - time.monotonic()),
            )
            self._raise_if_unusable()
            if not ok:
                raise RealtimeTimeoutError("the KIS WebSocket did not reconnect in time")
            return self._conn

    def _request(self, conn: Any, key: SubKey, text: str, deadline: float) -> frames.ControlFrame | None:
        """Send one frame and wait for its answer; None if the connection went away meanwhile."""
        waiter = _Waiter()
        with self._cond:
            self._pending[key] = waiter
        try:
            try:
                conn.send(text)
            except Exception:
                return None
            if not waiter.done.wait(max(0.0, deadline - time.monotonic())):
                raise RealtimeTimeoutError(f"KIS did not answer {key[0]}/{key[1]} in time")
            return waiter.answer
        finally:
            with self._cond:
                self._pending.pop(key, None)

    def _ensure(self, key: SubKey, deadline: float) -> None:
        """Make ``key`` active on the current connection, across reconnects and one stale key."""
        stale_seen = 0
        while True:
            conn = self._wait_connected(deadline)
            if not self._request_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise RealtimeTimeoutError(f"subscribe {key[0]}/{key[1]}: another request did not finish in time")
            try:
                with self._cond:
                    if key not in self._wanted or (key in self._active and self._conn is conn):
                        return
                    if self._conn is not conn:
                        continue
                approval = self._approval or ""
                frame = frames.request_frame(approval, key[0], key[1], custtype=self._custtype)
                answer = self._request(conn, key, frame, deadline)
            finally:
                self._request_lock.release()
            if answer is None:
                continue  # lost meanwhile: wait for the reconnect, then try again
            if answer.ok:
                with self._cond:
                    if self._conn is conn:
                        self._active.add(key)
                return
            if answer.stale_key:
                stale_seen += 1
                self.stats.stale_keys += 1
                if stale_seen > 1:
                    raise ApprovalKeyError("KIS refused a freshly adopted approval key too; not retrying")
                self._adopt_newer_key(approval, conn)
                continue
            if answer.msg_cd == "OPSP8996":
                if self._fatal is not None:
                    raise self._fatal
                # We held the key before: our own old session still lingers at KIS (seen after
                # quick reconnects). KIS cuts this socket; the reader reconnects with backoff.
                continue
            if answer.msg_cd == "OPSP0008":
                with self._cond:
                    held = tuple(f"{tr}:{k}" for tr, k in sorted(self._active))
                raise SubscriptionLimitError(
                    f"KIS refused {key[0]}/{key[1]}: OPSP0008 MAX SUBSCRIBE OVER ({len(held)} held on this session; "
                    f"the cap is {SUBSCRIPTION_CAP} per app key, every kind together)",
                    cap=SUBSCRIPTION_CAP,
                    held=held,
                )
            raise SubscriptionRefusedError(
                f"KIS refused {key[0]}/{key[1]}: {answer.msg_cd} {answer.msg1}", msg_cd=answer.msg_cd, msg1=answer.msg1
            )

    def _adopt_newer_key(self, stale: str, conn: Any) -> None:
        """After ``invalid approval``: take the newest key and reconnect at once (KIS cuts the socket anyway)."""
        newer = self._approval_keys(stale)
        if newer == stale:
            raise ApprovalKeyError("KIS refused the approval key and no newer one could be had")
        _log.info("approval key %s was refused; adopting %s", mask(stale), mask(newer))
        self._approval = newer
        self._reconnect_now = True
        self._close_conn(conn)

    def _recover(self, generation: int) -> None:
        """After a reconnect: subscribe again to everything wanted, then report the gap once."""
        deadline = time.monotonic() + self._answer_timeout * max(1, len(self._wanted))
        for key in list(self._wanted):
            if self._generation != generation:
                return  # lost again: the next recovery reports the whole gap
            try:
                self._ensure(key, deadline)
            except RealtimeError as exc:
                if self._generation != generation or self._closing.is_set() or self._fatal is not None:
                    return
                _log.warning("re-subscribing %s/%s failed: %s", key[0], key[1], exc)
                with self._cond:
                    self._wanted.pop(key, None)
        with self._cond:
            if self._generation != generation or self._gap_start is None:
                return
            start, reason = self._gap_start, self._gap_reason
            self._gap_start = None
        self._backoff.reset()
        self.stats.gaps += 1
        self._on_event(Gap(start=start, end=kst_now(), reason=reason))
