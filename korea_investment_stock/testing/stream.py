"""The fake KIS WebSocket: KIS's real-time rules over a real socket on loopback.

Why a real socket: the hard parts of KIS real-time are session rules (one session per app key,
41 subscriptions, stale approval keys, PINGPONG) and faults (silent sockets, drops, refused
reconnects). A client must meet them on the wire, so the fake speaks WebSocket through the
``websockets`` package (imported only when the fake starts, so the REST fake works without the
``[realtime]`` extra) and the standard library; it imports nothing of the client's.

Time here is real (``time.monotonic``): pings and silence are about wall time, not the REST
fake's virtual clock. Every rule KIS leaves unsettled is a switch in :class:`StreamSettings`.

The fake's own choices where KIS is silent (documented, not guessed as fact):

* A stale or unknown approval key in a subscribe frame is answered ``rt_cd "9"``, ``msg_cd
  "OPSP0011"``, ``msg1 "invalid approval : <key>"`` (the text users saw; the code is the one
  third-party table's) and the socket is then cut without a close frame (the client sees 1006).
* A second session's refusal is ``OPSP8996`` ``ALREADY IN USE appkey`` with header tr_id
  ``(null)``, then the cut (as seen).
* Malformed frames get ``OPSP9999`` ``JSON PARSING ERROR`` / ``OPSP9998`` ``INVALID TR_TYPE`` /
  ``OPSP9997`` ``INVALID TR_ID`` / ``OPSP9996`` ``INVALID CUSTTYPE`` and the socket stays open.
* Refused reconnects (:meth:`FakeStream.refuse_connections`) fail the handshake with HTTP 503.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import socket
import string
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from . import stream_data
from .aes import encrypt_cbc

__all__ = ["FakeStream", "FakeStreamStats", "StreamSettings"]

_log = logging.getLogger("korea_investment_stock.testing.stream")

TRADES = "H0STCNT0"
ORDERBOOKS = "H0STASP0"
NOTICE_REAL = "H0STCNI0"
NOTICE_MOCK = "H0STCNI9"
NOTICES = (NOTICE_REAL, NOTICE_MOCK)
DATA_TR_IDS = (TRADES, ORDERBOOKS)
#: Every tr_id the fake accepts a subscription for (others get OPSP9997).
KNOWN_TR_IDS = frozenset({TRADES, ORDERBOOKS, "H0STANC0", *NOTICES, "HDFSCNT0", "HDFSASP0", "H0GSCNI0", "H0GSCNI9"})

_ALNUM = string.ascii_letters + string.digits
ApprovalLookup = Callable[[str], "tuple[str, bool] | None"]


@dataclass
class StreamSettings:
    """The fake WebSocket's rules; change them with :meth:`FakeStream.configure`.

    * ``ping_interval`` (110 s, as one report): seconds between the server's PINGPONG frames.
    * ``ping_misses`` (2): a session that leaves this many pings in a row unanswered is cut.
    * ``pong_reply`` (``"either"``): what answers a ping: ``"text"`` (echo as a text frame),
      ``"pong"`` (a WebSocket pong frame) or ``"either"`` (unsettled #4).
    * ``data_interval`` (None: off): seconds between synthetic frames per data subscription.
    * ``records_per_frame`` (1): records per synthetic trade/order-book frame (``count``).
    * ``extra_fields`` (0): fields appended to every record, as KIS has done before.
    * ``second_session`` (``"refuse"``): a second session on a busy app key gets ``OPSP8996`` and is
      cut (as seen), or ``"evict"``: the first is cut and the second takes over (unsettled #2).
    * ``release_lag`` (0 s): how long an app key stays busy after its session ended (0, 7, 90 s seen).
    * ``stale_key_sessions`` (``"keep"``): a session opened with a key that a newer issuance killed
      keeps streaming (its next frame is refused), or ``"drop"``: it is cut at once (unsettled #1).
    * ``subscription_cap`` (41, None: no cap) and ``cap_scope`` (``"app_key"`` or ``"session"``).
    * ``cap_rt_cd`` (``"1"``): ``rt_cd`` of ``OPSP0008`` (``"1"`` or ``"9"``, unsettled #6).
    * ``send_delay`` (0 s): every frame the fake sends waits this long first (a slow server).
    * ``mock_notices`` (True): whether ``H0STCNI9`` notices are delivered (unsettled #8).
    """

    ping_interval: float = 110.0
    ping_misses: int = 2
    pong_reply: str = "either"
    data_interval: float | None = None
    records_per_frame: int = 1
    extra_fields: int = 0
    second_session: str = "refuse"
    release_lag: float = 0.0
    stale_key_sessions: str = "keep"
    subscription_cap: int | None = 41
    cap_scope: str = "app_key"
    cap_rt_cd: str = "1"
    send_delay: float = 0.0
    mock_notices: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad value."""
        choices = {
            "pong_reply": ("text", "pong", "either"),
            "second_session": ("refuse", "evict"),
            "stale_key_sessions": ("keep", "drop"),
            "cap_scope": ("app_key", "session"),
            "cap_rt_cd": ("1", "9"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.ping_interval <= 0 or self.ping_misses < 1:
            raise ValueError("ping_interval must be > 0 and ping_misses >= 1")
        if self.data_interval is not None and self.data_interval <= 0:
            raise ValueError("data_interval must be > 0 or None")
        if self.records_per_frame < 1 or self.extra_fields < 0:
            raise ValueError("records_per_frame must be >= 1 and extra_fields >= 0")
        if self.subscription_cap is not None and self.subscription_cap < 0:
            raise ValueError("subscription_cap must be >= 0 or None")
        if self.release_lag < 0 or self.send_delay < 0:
            raise ValueError("release_lag and send_delay must be >= 0")


@dataclass(frozen=True)
class FakeStreamStats:
    """A consistent copy of the fake WebSocket's counters.

    ``session_log`` is every change of an app key's live session count, as
    ``(monotonic time, app key, sessions now)``; ``max_concurrent`` is its maximum per app key, so
    ``max_concurrent[key] <= 1`` proves there were never two sessions. A *session* is a connection
    whose subscribe was accepted for an app key; a refused second connection never becomes one.
    ``max_connections`` is the most connections open at once, sessions or not (a client that never
    holds two sockets of its own at a time, beside one other, keeps it at 2).
    """

    connections: int = 0
    max_connections: int = 0
    refused_connections: int = 0
    sessions_opened: dict[str, int] = field(default_factory=dict)
    live_sessions: dict[str, int] = field(default_factory=dict)
    max_concurrent: dict[str, int] = field(default_factory=dict)
    session_log: tuple[tuple[float, str, int], ...] = ()
    subscriptions: dict[str, int] = field(default_factory=dict)
    subscribes: int = 0
    unsubscribes: int = 0
    opsp8996: int = 0
    opsp0008: int = 0
    stale_key_refusals: int = 0
    evictions: int = 0
    pings_sent: int = 0
    pongs_text: int = 0
    pongs_frame: int = 0
    ping_drops: int = 0
    drops: int = 0
    frames_sent: int = 0
    notices_sent: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (for ``GET /__fake__/ws_stats``)."""
        data = asdict(self)
        data["session_log"] = [list(entry) for entry in self.session_log]
        return data


class _Session:
    """One WebSocket connection and what the fake knows about it."""

    def __init__(self, number: int, conn: Any, now: float, ping_interval: float) -> None:
        self.number = number
        self.conn = conn
        self.app_key: str | None = None
        self.approval_key: str | None = None
        self.subs: dict[tuple[str, str], tuple[str, str]] = {}  # (tr_id, tr_key) -> (AES key, iv)
        self.silent = False
        self.closed = False
        self.awaiting_pong = False
        self.unanswered = 0
        self.next_ping = now + ping_interval
        self.next_data = now
        self.sequence = 0
        self.send_lock = threading.Lock()


def _live(session: _Session) -> bool:
    """Still holding its app key: not cut, and not in a closing handshake (a clean close frees it at once)."""
    state = getattr(session.conn, "state", None)
    return not session.closed and getattr(state, "name", "OPEN") == "OPEN"


def _answer(tr_id: str, tr_key: str, rt_cd: str, msg_cd: str, msg1: str, output: dict[str, str] | None = None) -> str:
    body: dict[str, object] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    return json.dumps({"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body}, ensure_ascii=False)


class FakeStream:
    """KIS's WebSocket for one fake KIS server (usually reached as ``FakeKIS.stream``).

    ``approval_lookup(key)`` says which app key an approval key belongs to and whether it is still
    that app's newest (the REST fake's ``/oauth2/Approval`` issues them). Start with :meth:`start`,
    stop with :meth:`stop`; :attr:`url` is ``ws://127.0.0.1:<port>``.
    """

    def __init__(
        self, approval_lookup: ApprovalLookup, *, host: str = "127.0.0.1", port: int = 0, **settings: Any
    ) -> None:
        self._lookup = approval_lookup
        self._host = host
        self._port = port
        self._settings = StreamSettings(**settings)
        self._settings.validate()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sessions: list[_Session] = []
        self._numbers = 0
        self._busy_until: dict[str, float] = {}  # release lag after a session of the app key ended
        self._refuse_until = 0.0
        self._counts: dict[str, Any] = {}
        self._reset_counts()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeStream:
        """Bind on loopback and serve in daemon threads (needs the ``websockets`` package)."""
        try:
            from websockets.sync.server import ServerConnection, serve
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the fake KIS WebSocket needs the 'websockets' package: pip install 'korea-investment-stock[realtime]'"
            ) from exc

        owner = self

        class _Connection(ServerConnection):
            """Notices unsolicited WebSocket pong frames: KIS's sample answers PINGPONG with one."""

            def acknowledge_pings(self, data: bytes) -> None:
                owner._on_pong_frame(self)
                super().acknowledge_pings(data)

        with self._lock:
            if self._server is not None:
                raise RuntimeError("FakeStream is already running")
            self._stopping.clear()
            self._server = serve(
                self._handle,
                self._host,
                self._port,
                ping_interval=None,  # KIS sends no WebSocket pings; PINGPONG is a text frame
                compression=None,
                max_size=None,
                process_request=self._process_request,
                create_connection=_Connection,
                logger=_log,
            )
        serving = threading.Thread(target=self._server.serve_forever, name="FakeStream:serve", daemon=True)
        ticking = threading.Thread(target=self._tick_loop, name="FakeStream:tick", daemon=True)
        self._threads = [serving, ticking]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket. Idempotent."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._wake.set()
        for session in self.sessions():
            self._cut(session)
        server.shutdown()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads = []

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has bound the socket (and :meth:`stop` has not closed it)."""
        return self._server is not None

    @property
    def url(self) -> str:
        """``ws://host:port`` while running."""
        server = self._server
        if server is None:
            raise RuntimeError("FakeStream is not running")
        host, port = server.socket.getsockname()[:2]
        return f"ws://{host}:{port}"

    # -- configuration and faults -------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change :class:`StreamSettings` while running (all-or-nothing)."""
        names = {f.name for f in fields(StreamSettings)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown stream setting(s): {sorted(unknown)}")
        with self._changed:
            candidate = StreamSettings(**{**asdict(self._settings), **changes})
            candidate.validate()
            self._settings = candidate
            self._changed.notify_all()
        self._wake.set()

    @property
    def settings(self) -> StreamSettings:
        """A copy of the current rules."""
        with self._lock:
            return StreamSettings(**asdict(self._settings))

    def sessions(self, app_key: str | None = None) -> list[_Session]:
        """Open connections (of ``app_key`` if given)."""
        with self._lock:
            return [s for s in self._sessions if not s.closed and (app_key is None or s.app_key == app_key)]

    def drop_connections(self, app_key: str | None = None) -> int:
        """Cut open connections without a close frame (the client sees 1006). Returns how many."""
        cut = self.sessions(app_key)
        for session in cut:
            self._cut(session)
        with self._changed:
            self._counts["drops"] += len(cut)
            self._changed.notify_all()
        return len(cut)

    def go_silent(self, app_key: str | None = None) -> int:
        """Open connections stop receiving anything (frames, answers, pings) but stay open."""
        chosen = self.sessions(app_key)
        with self._changed:
            for session in chosen:
                session.silent = True
            self._changed.notify_all()
        return len(chosen)

    def slow_down(self, delay: float) -> None:
        """Every frame sent from now on waits ``delay`` seconds first (0 restores)."""
        self.configure(send_delay=delay)

    def refuse_connections(self, seconds: float) -> None:
        """Fail every opening handshake with HTTP 503 for ``seconds`` from now."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds

    def control(self, payload: dict[str, Any]) -> None:
        """``POST /__fake__/control`` actions starting with ``ws_`` (see the README of the fake)."""
        action = payload.get("action")
        app_key = payload.get("app_key")
        if action == "ws_drop":
            self.drop_connections(app_key)
        elif action == "ws_silent":
            self.go_silent(app_key)
        elif action == "ws_slow":
            self.slow_down(float(payload["delay"]))
        elif action == "ws_refuse":
            self.refuse_connections(float(payload["seconds"]))
        elif action == "ws_set":
            self.configure(**{str(payload["field"]): payload["value"]})
        elif action == "ws_reset_stats":
            self.reset_stats()
        elif action == "ws_emit_notice":
            self.emit_notice(
                str(payload["hts_id"]),
                str(payload["odno"]),
                str(payload["symbol"]),
                str(payload["side"]),
                int(payload["qty"]),
                payload["price"],
            )
        elif action == "ws_emit_trades":
            self.emit_trades(str(payload["symbol"]), records=int(payload.get("records", 1)))
        else:
            raise ValueError(f"unknown action {action!r}")

    # -- observation -------------------------------------------------------------------

    def _reset_counts(self) -> None:
        self._counts = {f.name: 0 for f in fields(FakeStreamStats) if f.type == "int"}
        self._counts.update(sessions_opened={}, max_concurrent={}, session_log=[])

    @property
    def stats(self) -> FakeStreamStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> FakeStreamStats:
        live: dict[str, int] = {}
        subs: dict[str, int] = {}
        for session in self._sessions:
            if session.app_key is not None and not session.closed:
                live[session.app_key] = live.get(session.app_key, 0) + 1
                subs[session.app_key] = subs.get(session.app_key, 0) + len(session.subs)
        counts = dict(self._counts)
        return FakeStreamStats(
            **{
                **counts,
                "sessions_opened": dict(counts["sessions_opened"]),
                "max_concurrent": dict(counts["max_concurrent"]),
                "session_log": tuple(counts["session_log"]),
                "live_sessions": live,
                "subscriptions": subs,
            }
        )

    def reset_stats(self) -> None:
        """Zero the counters (sessions and subscriptions are kept)."""
        with self._changed:
            self._reset_counts()
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[FakeStreamStats], bool], timeout: float = 5.0) -> FakeStreamStats:
        """Block until ``predicate(stats)`` holds, woken by every change (no polling); ``TimeoutError``."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._snapshot()), timeout):
                raise TimeoutError(f"stream stats predicate still false after {timeout} s: {self._snapshot()}")
            return self._snapshot()

    # -- emitting data ----------------------------------------------------------------------

    def emit_trades(self, symbol: str, *, records: int | None = None) -> int:
        """Send one H0STCNT0 frame of ``records`` records (default: the setting) to every subscriber."""
        return self._emit(TRADES, symbol, records)

    def emit_orderbooks(self, symbol: str, *, records: int | None = None) -> int:
        """Send one H0STASP0 frame to every subscriber of ``symbol``'s order book."""
        return self._emit(ORDERBOOKS, symbol, records)

    def emit_notice(
        self, hts_id: str, odno: str, symbol: str, side: str, qty: int, price: int | str, *, filled: bool = True
    ) -> int:
        """Send an encrypted execution notice to every session subscribed to ``hts_id``'s notices.

        Encrypted with the AES key and IV of that subscription's answer. Returns the frames sent.
        """
        settings = self.settings
        sent = 0
        for session in self.sessions():
            for tr_id in NOTICES:
                secret = session.subs.get((tr_id, hts_id))
                if secret is None or (tr_id == NOTICE_MOCK and not settings.mock_notices):
                    continue
                record = stream_data.notice_record(
                    hts_id, odno, symbol, side, qty, price, datetime.now(), filled=filled, extra=settings.extra_fields
                )
                cipher = encrypt_cbc("^".join(record).encode(), secret[0].encode(), secret[1].encode())
                frame = stream_data.data_frame(tr_id, [record], encrypted_payload=base64.b64encode(cipher).decode())
                if self._send(session, frame, data=True):
                    sent += 1
                    self._bump("notices_sent")
        return sent

    def _emit(self, tr_id: str, symbol: str, records: int | None) -> int:
        return sum(
            1
            for session in self.sessions()
            if (tr_id, symbol) in session.subs and self._emit_to(session, tr_id, symbol, records)
        )

    def _emit_to(self, session: _Session, tr_id: str, symbol: str, records: int | None) -> bool:
        settings = self.settings
        build = stream_data.trade_record if tr_id == TRADES else stream_data.orderbook_record
        now = datetime.now()
        rows = []
        for _ in range(records or settings.records_per_frame):
            session.sequence += 1
            rows.append(build(symbol, session.sequence, now, extra=settings.extra_fields))
        return self._send(session, stream_data.data_frame(tr_id, rows), data=True)

    # -- the wire ------------------------------------------------------------------------------

    def _process_request(self, conn: Any, request: Any) -> Any:
        with self._changed:
            if time.monotonic() < self._refuse_until:
                self._counts["refused_connections"] += 1
                self._changed.notify_all()
                return conn.respond(503, "fake KIS: reconnects refused for now\n")
        return None

    def _handle(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._changed:
            self._numbers += 1
            session = _Session(self._numbers, conn, time.monotonic(), self._settings.ping_interval)
            self._sessions.append(session)
            self._counts["connections"] += 1
            self._counts["max_connections"] = max(self._counts["max_connections"], len(self._sessions))
            self._changed.notify_all()
        self._wake.set()
        try:
            for message in conn:
                if session.closed:
                    break
                if isinstance(message, str):
                    self._on_text(session, message)
        except ConnectionClosed:
            pass
        except Exception:  # a bug in the fake must not kill the server quietly
            _log.exception("fake KIS WebSocket handler failed")
        finally:
            self._forget(session)

    def _forget(self, session: _Session) -> None:
        with self._changed:
            session.closed = True
            if session in self._sessions:
                self._sessions.remove(session)
                if session.app_key is not None:
                    lag = self._settings.release_lag
                    if lag > 0:
                        self._busy_until[session.app_key] = time.monotonic() + lag
                    self._log_sessions(session.app_key)
            self._changed.notify_all()

    def _log_sessions(self, app_key: str) -> None:
        """Record the app key's live session count (under the lock)."""
        live = sum(1 for s in self._sessions if s.app_key == app_key and not s.closed)
        self._counts["session_log"].append((time.monotonic(), app_key, live))
        best = self._counts["max_concurrent"]
        best[app_key] = max(best.get(app_key, 0), live)

    def _cut(self, session: _Session) -> None:
        """End a connection without a close frame (1006 at the client), as KIS drops sessions."""
        session.closed = True
        sock = getattr(session.conn, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _send(self, session: _Session, text: str, *, data: bool = False) -> bool:
        if session.silent or session.closed:
            return False
        delay = self._settings.send_delay
        if delay > 0 and self._stopping.wait(delay):
            return False
        try:
            with session.send_lock:
                session.conn.send(text)
        except Exception:  # closed under us: the handler thread cleans up
            return False
        if data:
            self._bump("frames_sent")
        return True

    def _bump(self, name: str, by: int = 1) -> None:
        with self._changed:
            self._counts[name] += by
            self._changed.notify_all()

    # -- rules -------------------------------------------------------------------------------------

    def _on_pong_frame(self, conn: Any) -> None:
        with self._changed:
            for session in self._sessions:
                if session.conn is conn:
                    self._counts["pongs_frame"] += 1
                    if self._settings.pong_reply in ("pong", "either"):
                        session.awaiting_pong, session.unanswered = False, 0
            self._changed.notify_all()

    def _on_text(self, session: _Session, text: str) -> None:
        try:
            frame = json.loads(text)
            header = frame["header"]
            if not isinstance(header, dict):
                raise TypeError("header")
        except (ValueError, KeyError, TypeError):
            self._send(session, _answer("", "", "9", "OPSP9999", "JSON PARSING ERROR : invalid json format"))
            return
        if header.get("tr_id") == "PINGPONG":
            with self._changed:
                self._counts["pongs_text"] += 1
                if self._settings.pong_reply in ("text", "either"):
                    session.awaiting_pong, session.unanswered = False, 0
                self._changed.notify_all()
            return
        body = frame.get("body")
        request = body.get("input") if isinstance(body, dict) else None
        tr_id = str(request.get("tr_id", "")) if isinstance(request, dict) else ""
        tr_key = str(request.get("tr_key", "")) if isinstance(request, dict) else ""
        tr_type = header.get("tr_type")
        if tr_type not in ("1", "2"):
            self._send(session, _answer(tr_id, tr_key, "9", "OPSP9998", "INVALID TR_TYPE"))
            return
        if header.get("custtype") not in ("P", "B"):
            self._send(session, _answer(tr_id, tr_key, "9", "OPSP9996", "INVALID CUSTTYPE"))
            return
        if tr_id not in KNOWN_TR_IDS or not tr_key:
            self._send(session, _answer(tr_id, tr_key, "9", "OPSP9997", "INVALID TR_ID"))
            return
        reply, cut, evicted = self._decide(session, str(header.get("approval_key", "")), tr_type, tr_id, tr_key)
        for other in evicted:
            self._cut(other)
        self._send(session, reply)
        if cut:
            self._cut(session)

    def _decide(
        self, session: _Session, approval_key: str, tr_type: str, tr_id: str, tr_key: str
    ) -> tuple[str, bool, list[_Session]]:
        """The answer to one subscribe/unsubscribe frame, whether to cut the session, whom to evict."""
        owner = self._lookup(approval_key)
        with self._changed:
            try:
                settings = self._settings
                if owner is None or not owner[1]:
                    self._counts["stale_key_refusals"] += 1
                    return _answer(tr_id, tr_key, "9", "OPSP0011", f"invalid approval : {approval_key}"), True, []
                app_key = owner[0]
                evicted: list[_Session] = []
                if session.app_key is None:
                    others = [s for s in self._sessions if s.app_key == app_key and _live(s) and s is not session]
                    lingering = self._busy_until.get(app_key, 0.0) > time.monotonic()
                    if (others or lingering) and settings.second_session == "refuse":
                        self._counts["opsp8996"] += 1
                        return _answer("(null)", "", "9", "OPSP8996", "ALREADY IN USE appkey"), True, []
                    for other in others:
                        other.closed = True  # counted out now; the cut follows outside the lock
                        self._counts["evictions"] += 1
                        evicted.append(other)
                    self._busy_until.pop(app_key, None)
                    session.app_key = app_key
                    opened = self._counts["sessions_opened"]
                    opened[app_key] = opened.get(app_key, 0) + 1
                    self._log_sessions(app_key)
                elif session.app_key != app_key:
                    return _answer(tr_id, tr_key, "9", "OPSP8995", "APPKEY MISMATCH IN SESSION"), False, []
                session.approval_key = approval_key
                key = (tr_id, tr_key)
                if tr_type == "2":
                    if session.subs.pop(key, None) is None:
                        return _answer(tr_id, tr_key, "1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)"), False, evicted
                    self._counts["unsubscribes"] += 1
                    return _answer(tr_id, tr_key, "0", "OPSP0001", "UNSUBSCRIBE SUCCESS"), False, evicted
                if key in session.subs:
                    aes, iv = session.subs[key]
                    return (
                        _answer(tr_id, tr_key, "1", "OPSP0002", "ALREADY IN SUBSCRIBE", {"iv": iv, "key": aes}),
                        False,
                        evicted,
                    )
                if settings.subscription_cap is not None:
                    scope = (
                        [session]
                        if settings.cap_scope == "session"
                        else [s for s in self._sessions if s.app_key == app_key and not s.closed]
                    )
                    if sum(len(s.subs) for s in scope) >= settings.subscription_cap:
                        self._counts["opsp0008"] += 1
                        return (
                            _answer(tr_id, tr_key, settings.cap_rt_cd, "OPSP0008", "MAX SUBSCRIBE OVER"),
                            False,
                            evicted,
                        )
                aes = "".join(secrets.choice(_ALNUM) for _ in range(32))
                iv = "".join(secrets.choice(_ALNUM) for _ in range(16))
                session.subs[key] = (aes, iv)
                self._counts["subscribes"] += 1
                session.next_data = time.monotonic()
                return (
                    _answer(tr_id, tr_key, "0", "OPSP0000", "SUBSCRIBE SUCCESS", {"iv": iv, "key": aes}),
                    False,
                    evicted,
                )
            finally:
                self._changed.notify_all()

    # -- the clock: pings, synthetic data, stale-key drops -------------------------------------------

    def _tick_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            next_due = self._tick(time.monotonic())
            self._wake.wait(max(0.001, min(next_due - time.monotonic(), 0.25)))

    def _tick(self, now: float) -> float:
        """Do what is due; return when something is next due."""
        settings = self.settings
        next_due = now + settings.ping_interval
        for session in self.sessions():
            if settings.stale_key_sessions == "drop" and session.approval_key is not None:
                owner = self._lookup(session.approval_key)
                if owner is None or not owner[1]:
                    self._cut(session)
                    continue
            if session.silent:
                continue
            if now >= session.next_ping:
                if session.awaiting_pong:
                    session.unanswered += 1
                    if session.unanswered >= settings.ping_misses:
                        self._cut(session)
                        self._bump("ping_drops")
                        continue
                ping = {"header": {"tr_id": "PINGPONG", "datetime": datetime.now().strftime("%Y%m%d%H%M%S")}}
                session.awaiting_pong = True
                session.next_ping = now + settings.ping_interval
                if self._send(session, json.dumps(ping)):
                    self._bump("pings_sent")
            next_due = min(next_due, session.next_ping)
            if settings.data_interval is not None:
                if now >= session.next_data:
                    for tr_id, tr_key in list(session.subs):
                        if tr_id in DATA_TR_IDS:
                            self._emit_to(session, tr_id, tr_key, None)
                    session.next_data = now + settings.data_interval
                next_due = min(next_due, session.next_data)
        if settings.stale_key_sessions == "drop":
            next_due = min(next_due, now + 0.05)
        return next_due
