"""HTTP layer of the fake KIS server: routing, waiting, writing answers.

Why a real HTTP server (and not mocks): the bugs worth catching live in the
client's HTTP handling (status codes, keep-alive, timeouts, concurrent
issuance), so the fake speaks real HTTP/1.1 over loopback. The rules live in
:mod:`.state`; this module never decides anything about tokens itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from . import market
from . import masters as master_files
from .state import (
    FakeKISStats,
    KISState,
    Reply,
    Settings,
    TokenFault,
    new_app_key,
    new_app_secret,
)
from .stream import FakeStream

__all__ = ["FakeKIS"]

_log = logging.getLogger("korea_investment_stock.testing")

_MAX_BODY = 1 << 20
_MALFORMED_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"
_JSON = "application/json; charset=UTF-8"


def _json_or_none(raw: bytes) -> object:
    """Parse a request body; ``None`` when it is not JSON (the rules reject that)."""
    try:
        parsed: object = json.loads(raw)
    except ValueError:
        return None
    return parsed


class _Server(ThreadingHTTPServer):
    """Thread-per-connection server that can drop every open connection on stop."""

    daemon_threads = True
    request_queue_size = 1024  # stress tests open hundreds of connections at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: FakeKIS, state: KISState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        self.state = state
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse-DNS lookup that
        # can stall for seconds in containers. We do not need a server name.
        socketserver.TCPServer.server_bind(self)
        name = self.socket.getsockname()
        self.server_name = str(name[0])
        self.server_port = int(name[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection so idle keep-alive threads exit."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer are normal in tests; keep stderr quiet.
        _log.debug("error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One connection; dispatches each request to the state or control API."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET

    # -- plumbing -----------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > _MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= _MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body, ensure_ascii=False).encode(), _JSON, headers)

    def _reply(self, reply: Reply) -> None:
        self._send_json(reply.status, reply.body, reply.headers)

    def _hold(self, seconds: float) -> bool:
        """Wait outside any lock; False if the server is stopping meanwhile."""
        return not self.server.stopping.wait(seconds)

    def _trickle(self, reply: Reply, pace: float) -> None:
        """Send ``reply`` with honest headers, then its body one byte every ``pace`` seconds.

        Each byte arrives well within any read timeout, so a client that bounds each
        read but not the whole call waits as long as the body is long.
        """
        body = json.dumps(reply.body, ensure_ascii=False).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", _JSON)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for index in range(len(body)):
            if not self._hold(pace):
                break
            try:
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
            except OSError:  # the client gave up and closed
                break
        self.close_connection = True

    def _drop(self) -> None:
        """End the connection without answering (a simulated timeout)."""
        self.close_connection = True

    # -- routing ------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            raw = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send_json(400, {"error_code": "FAKE400", "error_description": f"fake KIS: {exc}"})
            return
        path, _, query_string = self.path.partition("?")
        method = self.command
        state = self.server.state
        headers = {name.lower(): value for name, value in self.headers.items()}
        post_routes: dict[str, Callable[[], None]] = {
            "/oauth2/tokenP": lambda: self._tokenp(raw),
            "/oauth2/revokeP": lambda: self._reply(state.revoke(_json_or_none(raw))),
            "/oauth2/Approval": lambda: self._reply(state.approval(_json_or_none(raw))),
            "/uapi/hashkey": lambda: self._reply(state.hashkey(headers, raw, _json_or_none(raw))),
            "/__fake__/control": lambda: self._control(_json_or_none(raw)),
        }
        get_routes: dict[str, Callable[[], None]] = {
            "/__fake__/stats": lambda: self._send_json(200, self.server.owner.stats.to_dict()),
            "/__fake__/tokens": lambda: self._send_json(200, {"tokens": self.server.owner.issued_tokens()}),
            "/__fake__/ws_stats": lambda: self._send_json(200, self.server.owner.stream.stats.to_dict()),
        }
        for master_path, master_market in master_files.ROUTES.items():
            get_routes[master_path] = functools.partial(self._master, master_market)
        if path in market.ENDPOINTS:
            if method != "GET":
                self._send_json(405, _not_found(path, method))
                return
            query = {key.upper(): value for key, value in parse_qsl(query_string, keep_blank_values=True)}
            self._reply(state.rest(path, headers, query))
            return
        routes = post_routes if method == "POST" else get_routes if method == "GET" else {}
        handler = routes.get(path)
        if handler is None:
            known = path in post_routes or path in get_routes
            self._send_json(405 if known else 404, _not_found(path, method))
            return
        handler()

    def _tokenp(self, raw: bytes) -> None:
        state = self.server.state
        token_delay, plan = state.begin_tokenp()  # counted on arrival, before any wait
        if token_delay > 0 and not self._hold(token_delay):
            self._drop()
            return
        if plan is not None and plan.kind is TokenFault.TRICKLE:
            self._trickle(state.issue_token(_json_or_none(raw)), plan.delay)
            return
        if plan is not None:
            if plan.delay > 0 and not self._hold(plan.delay):
                self._drop()
                return
            if plan.kind is TokenFault.TIMEOUT:
                self._drop()
                return
            if plan.kind is TokenFault.MALFORMED:
                self._send(200, _MALFORMED_BODY, "text/html; charset=UTF-8")
                return
            if plan.kind is not TokenFault.DELAY:
                self._reply(state.fault_reply(plan.kind))
                return
        self._reply(state.issue_token(_json_or_none(raw)))

    def _master(self, market_name: str) -> None:
        """A master-file archive (``application/zip``, content-coded if so set), or the queued download fault."""
        owner = self.server.owner
        plan = owner._master_faults.take(market_name)
        self.server.state.count_master_download(master_files.ARCHIVE_NAMES[market_name])
        if plan is not None and plan.delay > 0 and not self._hold(plan.delay):
            self._drop()
            return
        status, body, headers = master_files.master_download(
            market_name,
            None if plan is None else plan.kind,
            owner._master_encoding,
            self.headers.get("Accept-Encoding", ""),
        )
        self._send(status, body, headers.pop("Content-Type"), headers)

    def _control(self, payload: object) -> None:
        owner = self.server.owner
        try:
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object with an 'action'")
            action = payload.get("action")
            if action == "advance":
                owner.advance(float(payload["seconds"]))
            elif action == "revoke_all":
                owner.revoke_all()
            elif action == "expire_all":
                owner.expire_all()
            elif action == "reset_stats":
                owner.reset_stats()
            elif action == "clear_faults":
                owner.clear_faults()
            elif action == "set_token_fault":
                delay = payload.get("delay")
                owner.set_token_fault(
                    str(payload["kind"]),
                    times=payload.get("times", 1),
                    delay=None if delay is None else float(delay),
                )
            elif action == "set_master_fault":
                delay = payload.get("delay")
                owner.set_master_fault(
                    str(payload["kind"]),
                    times=payload.get("times", 1),
                    delay=None if delay is None else float(delay),
                    market=payload.get("market"),
                )
            elif action == "clear_master_faults":
                owner.clear_master_faults()
            elif action == "set_master_encoding":
                encoding = payload.get("encoding")
                owner.set_master_encoding(None if encoding is None else str(encoding))
            elif action == "set":
                owner.configure(**{str(payload["field"]): payload["value"]})
            elif action == "add_app":
                owner.add_app(str(payload["app_key"]), str(payload["app_secret"]))
            elif isinstance(action, str) and action.startswith("ws_"):
                owner.stream.control(payload)
            else:
                raise ValueError(f"unknown action {action!r}")
        except (KeyError, TypeError, ValueError) as exc:
            self._send_json(400, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        self._send_json(200, {"ok": True, "now": owner.now()})


def _not_found(path: str, method: str) -> dict[str, object]:
    return {"rt_cd": "1", "msg_cd": "FAKE404", "msg1": f"fake KIS: no {method} endpoint at {path}"}


class FakeKIS:
    """A fake KIS Open API server on loopback, for testing KIS clients.

    Mimics tokenP/revokeP/Approval/hashkey, five quotation endpoints and the IPO schedule, with
    KIS's token rules (one issuance per window, same token within 6 h, 24 h
    lifetime), its error shapes and its per-second limit. Time is virtual:
    :meth:`advance` moves it, so expiry and windows are tested without waiting.
    Use as a context manager, or :meth:`start` / :meth:`stop`.

    Keywords (all optional):

    * ``app_key`` / ``app_secret``: the valid pair (default: random, 36 and 180
      chars). :meth:`add_app` adds more; each app has its own tokens and limits.
    * ``issue_window`` (60 s): one successful tokenP answer per app key per
      window; inside it the answer is 403 ``EGW00133``.
    * ``issue_window_counts``: ``"success"`` (window starts at the last 200
      answer, same-token re-answers included) or ``"request"`` (at the last
      request with valid credentials, rejected ones included).
    * ``same_token_window`` (6 h): a tokenP after the window but within this
      long of the last *minting* gets the same token and expiry string back,
      unless that token was revoked or expired. ``expires_in`` is always 86400.
    * ``token_lifetime`` (24 h), ``new_token_revokes_old`` (False).
    * ``dead_token_status`` (500): HTTP status of ``EGW00121`` / ``EGW00123``.
    * ``rest_rate_limit`` (20): accepted REST calls per app key in any sliding
      1 s; more get ``EGW00201`` (HTTP 500). ``None`` disables it.
    * ``token_delay`` (0): every tokenP waits this long before it is decided.
    * ``environment`` (``"real"``): ``"mock"`` plays the mock host, which refuses
      real-only endpoints (the IPO schedule) with KIS's error envelope.
    * ``websocket`` (False): start the fake KIS WebSocket with the server (else on first
      :attr:`ws_url`); its rules, faults and counters are :attr:`stream` (:mod:`.stream`).
    * ``clock``: epoch-seconds clock (default ``time.time``); :meth:`advance`
      adds to whatever it returns.

    Order of checks. tokenP: injected fault, credentials (``EGW00103`` then
    ``EGW00105``), window, same-token. REST: ``Bearer`` prefix (``EGW00205``),
    token known and of the ``appkey`` header's app (``EGW00121``), not revoked
    (``EGW00121``), not expired (``EGW00123``), rate limit, ``tr_id``
    (``OPSQ0002``, HTTP 500), required query fields (``OPSQ2001``, HTTP 500),
    then data. The ``appsecret`` header of REST calls is not checked.
    Unknown paths get 404 ``{"rt_cd": "1", "msg_cd": "FAKE404", ...}``.
    It also plays KIS's master-file host: ``GET /common/master/kospi_code.mst.zip``
    and ``.../kosdaq_code.mst.zip`` serve synthetic archives (:mod:`.masters`),
    counted in ``stats.master_downloads``; :meth:`set_master_fault` breaks them.
    ``master_encoding`` (None): ``"gzip"`` or ``"deflate"`` sends the archives with that
    ``Content-Encoding`` to clients that accept it (requests asks for ``gzip, deflate``), as a
    host or proxy may; :meth:`set_master_encoding` changes it while running.
    The hashkey ``HASH`` is the SHA-256 of the raw request body.
    """

    def __init__(
        self,
        *,
        app_key: str | None = None,
        app_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        issue_window: float = 60.0,
        issue_window_counts: str = "success",
        same_token_window: float = 6 * 3600,
        token_lifetime: float = 86400.0,
        new_token_revokes_old: bool = False,
        dead_token_status: int = 500,
        rest_rate_limit: int | None = 20,
        token_delay: float = 0.0,
        environment: str = "real",
        clock: Callable[[], float] | None = None,
        master_encoding: str | None = None,
        websocket: bool = False,
    ) -> None:
        self.app_key: str = app_key or new_app_key()
        self.app_secret: str = app_secret or new_app_secret()
        settings = Settings(
            issue_window=issue_window,
            issue_window_counts=issue_window_counts,
            same_token_window=same_token_window,
            token_lifetime=token_lifetime,
            new_token_revokes_old=new_token_revokes_old,
            dead_token_status=dead_token_status,
            rest_rate_limit=rest_rate_limit,
            token_delay=token_delay,
            environment=environment,
        )
        self._state = KISState(settings, clock or time.time)
        self._state.add_app(self.app_key, self.app_secret)
        self._master_faults = master_files.MasterFaults()
        self._master_encoding: str | None = None
        self.set_master_encoding(master_encoding)
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._websocket = websocket
        self._stream = FakeStream(self._state.approval_key_app, host=host)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeKIS:
        """Bind and serve in a daemon thread. Returns ``self`` for chaining."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("FakeKIS is already running")
            server = _Server((self._host, self._port), self, self._state)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"FakeKIS:{server.server_port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            if self._websocket:
                self._stream.start()
            _log.debug("fake KIS serving at %s", self.url)
            return self

    def stop(self) -> None:
        """Stop serving; wakes delayed requests and drops open connections. Idempotent."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None:
                return
            server.stopping.set()  # wakes token_delay / fault waits at once
            server.shutdown()
            server.close_connections()
            server.server_close()
            if thread is not None:
                thread.join(timeout=2.0)
            self._server = self._thread = None
            self._stream.stop()

    def __enter__(self) -> FakeKIS:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL such as ``http://127.0.0.1:54321`` (only while running)."""
        server = self._server
        if server is None:
            raise RuntimeError("FakeKIS is not running; call start() first")
        host = server.server_name
        return f"http://[{host}]:{server.server_port}" if ":" in host else f"http://{host}:{server.server_port}"

    @property
    def stream(self) -> FakeStream:
        """The fake KIS WebSocket (rules, faults, counters): see :mod:`.stream`."""
        return self._stream

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``; starts the fake WebSocket on first use (or ``websocket=True``)."""
        with self._lifecycle:
            if self._server is None:
                raise RuntimeError("FakeKIS is not running; call start() first")
            if not self._stream.running:
                self._stream.start()
        return self._stream.url

    # -- configuration ---------------------------------------------------------------

    def add_app(self, app_key: str, app_secret: str) -> None:
        """Accept one more credential pair (each app has its own tokens and limits)."""
        self._state.add_app(app_key, app_secret)

    def configure(self, **settings: object) -> None:
        """Change rules while running, e.g. ``configure(token_delay=2.0)``.

        Accepts the constructor's rule keywords (not host/port/clock/credentials).
        """
        self._state.configure(**settings)

    def set_token_fault(self, kind: str, *, times: int | None = 1, delay: float | None = None) -> None:
        """Queue a fault for upcoming tokenP requests (see :class:`TokenFault`).

        Faults are consumed in order, one per tokenP request, before any rule is
        applied, and leave the issuance state untouched (no token is minted, the
        window does not move) except ``"delay"``, which answers normally after
        ``delay`` seconds, and ``"trickle"``, which answers normally one byte
        every ``delay`` seconds (default 1). For every other kind ``delay`` is a wait before the
        fault answer; for ``"timeout"`` it is how long the connection is held
        (default 30 s) before it is closed with no answer. ``times=None`` repeats
        the fault until :meth:`clear_faults`.
        """
        self._state.add_fault(kind, times, delay)

    def clear_faults(self) -> None:
        """Forget every queued fault (requests already waiting still finish)."""
        self._state.clear_faults()

    def set_master_fault(
        self, kind: str, *, times: int | None = 1, delay: float | None = None, market: str | None = None
    ) -> None:
        """Make the next ``times`` master-file downloads fail as ``kind`` (see :class:`MasterFault`).

        ``market`` (``"kospi"`` / ``"kosdaq"``) limits the fault to one file.
        ``delay`` is a wait before the answer; for ``"delay"`` it is the whole
        fault (default 1 s), and the answer is the normal archive.
        ``times=None`` repeats it until :meth:`clear_master_faults`.
        """
        self._master_faults.add(kind, times, delay, market)

    def clear_master_faults(self) -> None:
        """Forget every queued master-file download fault."""
        self._master_faults.clear()

    def set_master_encoding(self, encoding: str | None) -> None:
        """Send the master-file archives content-coded: ``"gzip"``, ``"deflate"``, or None (as they are).

        Applies to every 200 answer of the master host, faults included, for a request
        whose ``Accept-Encoding`` admits the coding; the ``gzip-bomb`` fault is gzip
        whatever this says.  Why: a host or proxy may compress, and a client that reads
        the raw body then sees an encoded archive, not a zip.
        """
        if encoding is not None and encoding not in master_files.MASTER_ENCODINGS:
            raise ValueError(f"encoding must be one of {master_files.MASTER_ENCODINGS} or None, got {encoding!r}")
        self._master_encoding = encoding

    # -- time and tokens --------------------------------------------------------------

    def now(self) -> float:
        """Server time in epoch seconds (clock + :meth:`advance` offset)."""
        return self._state.now()

    def advance(self, seconds: float) -> None:
        """Time travel forward: expiry, issue windows and rate limits follow."""
        self._state.advance(seconds)

    def revoke_all(self) -> None:
        """Invalidate every token minted so far: REST answers ``EGW00121``."""
        self._state.revoke_all()

    def expire_all(self) -> None:
        """Expire every token minted so far: REST answers ``EGW00123``."""
        self._state.expire_all()

    def issued_tokens(self) -> list[str]:
        """Every token string minted, oldest first."""
        return self._state.issued_tokens()

    # -- observation ------------------------------------------------------------------

    @property
    def stats(self) -> FakeKISStats:
        """A consistent snapshot of the counters."""
        return self._state.stats()

    def reset_stats(self) -> None:
        """Zero every counter (tokens and windows are kept)."""
        self._state.reset_stats()

    def wait_for_stats(self, predicate: Callable[[FakeKISStats], bool], timeout: float = 5.0) -> FakeKISStats:
        """Block until ``predicate(stats)`` is true, woken by each change (no polling).

        Lets tests synchronise with requests in flight, e.g. wait until a
        tokenP request has arrived. The predicate runs under the server's lock:
        keep it a pure function of its argument. Raises ``TimeoutError``.
        """
        result = self._state.wait_for_stats(predicate, timeout)
        if result is None:
            raise TimeoutError(f"stats predicate still false after {timeout} s: {self.stats}")
        return result
