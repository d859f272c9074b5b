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
import struct
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from . import account as trading
from . import masters as master_files
from .account import FaultPlan, OrderFault
from .state import (
    QUOTE_ENDPOINTS,
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

    def _reset(self) -> None:
        """Reset the connection: SO_LINGER 0, then close, so the peer reads ECONNRESET (not EOF)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()  # makefile() holds a reference: the socket closes only when both go
            self.connection.close()

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
            "/__fake__/orders": lambda: self._send_json(200, {"orders": _jsonable(self.server.owner.orders())}),
            "/__fake__/ws_stats": lambda: self._send_json(200, self.server.owner.stream.stats.to_dict()),
        }
        for master_path, master_market in master_files.ROUTES.items():
            get_routes[master_path] = functools.partial(self._master, master_market)
        if path in trading.PATHS:
            expected = trading.PATHS[path][0]
            if method != expected:
                self._send_json(405, _not_found(path, method))
                return
            query = {key.upper(): value for key, value in parse_qsl(query_string, keep_blank_values=True)}
            reply, plan = state.trading(path, headers, query if method == "GET" else {}, raw)
            self._trading_answer(reply, plan)
            return
        if path in QUOTE_ENDPOINTS:
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

    def _trading_answer(self, reply: Reply | None, plan: FaultPlan | None) -> None:
        """Send a trading answer, or what the order fault says instead."""
        if plan is None:
            if reply is not None:
                self._reply(reply)
            return
        kind = plan.kind
        if reply is None or kind in (OrderFault.DROP_BEFORE, OrderFault.DROP_AFTER, OrderFault.LATE):
            self._drop()
        elif kind is OrderFault.SLOW_AFTER:
            if self._hold(plan.delay):
                self._reply(reply)
            else:
                self._drop()
        elif kind is OrderFault.HTTP500_EMPTY:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind is OrderFault.RESET_AFTER:
            self._reset()
        else:  # pragma: no cover - every kind is handled above
            self._reply(reply)

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

    def _account_control(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The account-book control actions; ``fill_order`` returns the filled row."""
        owner = self.server.owner
        if action == "open_account":
            positions = payload.get("positions")
            owner.open_account(
                str(payload["acc_no"]),
                cash_krw=payload.get("cash_krw"),
                cash_usd=payload.get("cash_usd"),
                positions=None if positions is None else {str(k): tuple(v) for k, v in dict(positions).items()},
                hts_id=payload.get("hts_id"),
            )
        elif action == "set_price":
            owner.set_price(str(payload["symbol"]), str(payload["price"]))
        elif action == "fill_order":
            return _jsonable([owner.fill_order(str(payload["odno"]), payload.get("quantity"))])[0]
        elif action == "set_order_fault":
            delay = payload.get("delay")
            probability = payload.get("probability")
            owner.set_order_fault(
                str(payload["kind"]),
                times=payload.get("times", 1),
                delay=None if delay is None else float(delay),
                probability=None if probability is None else float(probability),
                seed=payload.get("seed"),
            )
        elif action == "clear_order_faults":
            owner.clear_order_faults()
        elif action == "set_paging_restart":
            owner.set_paging_restart(int(payload["times"]))
        return None

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
            elif action in _ACCOUNT_ACTIONS:
                result = self._account_control(str(action), payload)
                if result is not None:
                    self._send_json(200, {"ok": True, "now": owner.now(), "order": result})
                    return
            elif isinstance(action, str) and action.startswith("ws_"):
                owner.stream.control(payload)
            else:
                raise ValueError(f"unknown action {action!r}")
        except (KeyError, TypeError, ValueError) as exc:
            self._send_json(400, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        self._send_json(200, {"ok": True, "now": owner.now()})


_ACCOUNT_ACTIONS = frozenset(
    {"open_account", "set_price", "fill_order", "set_order_fault", "clear_order_faults", "set_paging_restart"}
)


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order rows for JSON: Decimals as strings."""
    return [{k: str(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in rows]


def _not_found(path: str, method: str) -> dict[str, object]:
    return {"rt_cd": "1", "msg_cd": "FAKE404", "msg1": f"fake KIS: no {method} endpoint at {path}"}


class FakeKIS:
    """A fake KIS Open API server on loopback, for testing KIS clients.

    Mimics tokenP/revokeP/Approval/hashkey, five quotation endpoints, the IPO schedule, price
    history and a trading account (orders, balance, orders list, buyable amount), with
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
      real-only endpoints (the IPO schedule) with KIS's error envelope, and takes only
      the mock trading ids (real ones get HTTP 500 ``EGW00213`` ``모의투자 TR 이 아닙니다.``;
      the real host refuses mock ids with ``실전투자 TR 이 아닙니다.``).
    * ``account_cash_krw`` (100,000,000) / ``account_cash_usd`` (100,000): the cash an
      account opens with on first use (other currencies: :data:`.account.OTHER_CASH`).
    * ``market_open`` (True): False rejects every new order, revise and cancel
      (``APBK0918`` real, ``40580000`` mock).
    * ``bind_account`` (None): ``"12345678-01"`` makes every trading call for another
      account answer ``IGW00002`` (the app key is bound to one account).
    * ``rejection_status`` (200): HTTP status of business rejections (``rt_cd`` ``"1"``).
    * ``balance_page_size`` / ``orders_page_size`` (None: KIS's sizes by host, KR balance
      50 real / 20 mock, KR orders 100 / 15, overseas balance 100, overseas orders 20 / 15).
    * ``paging_restart`` (0): the next that many continuation requests answer
      ``SYDB0050`` (``rt_cd`` ``"7"``, data changed: start over); counts down.
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

    **Trading** (KIS's paths and current tr_ids, real and mock; see :mod:`.account`
    for every rule).  Checks after the REST gate above: the tr_id for this host
    (``EGW00213`` / ``OPSQ0002``), then for order POSTs an injected fault, the
    ``hashkey`` header if sent (SHA-256 of the raw body, else HTTP 500 ``EGW00131``),
    string values only (else HTTP 500 ``OPSQ2002``), required fields (``OPSQ2001``),
    ``CANO`` 8 digits + ``ACNT_PRDT_CD`` 2, ``bind_account``, field values, market
    open, symbol known, cash or holdings.  Order POSTs count in the rate limit.

    * Domestic: ``order-cash`` (``TTTC0012U`` buy / ``TTTC0011U`` sell), ``order-rvsecncl``
      (``TTTC0013U``), ``inquire-balance`` (``TTTC8434R``), ``inquire-daily-ccld``
      (``TTTC0081R``, ``CTSC9215R``), ``inquire-psbl-order`` (``TTTC8908R``); mock ids
      ``VTTC…``/``VTSC9215R``.  Overseas: ``order`` (US ``TTTT1002U``/``TTTT1006U``, mock
      ``VTTT1002U``/``VTTT1001U``; JP, HK, SH, SZ, VN ids too), ``order-rvsecncl`` (US, HK,
      JP), ``inquire-balance`` (``TTTS3012R``), ``inquire-ccnl`` (``TTTS3035R``),
      ``inquire-psamount`` (``TTTS3007R``).  Bars: ``FHKST03010100``, ``HHDFS76240000``.
    * Accounts open on first use; :meth:`open_account` sets cash and positions.  A market
      order fills at once at :meth:`current_price`; a marketable limit order fills at once
      at the current price; any other limit order rests until revised, cancelled or
      :meth:`fill_order`.  Revise and cancel get new order numbers and reduce the original.
    * Unknown symbols: KR codes that are not 6 letters/digits, ``999999`` always; US
      symbols not in :data:`.market.OVERSEAS` or on the wrong exchange, ``ZZZZZ`` always.
    * Paged queries answer the response header ``tr_cont`` ``F`` (first page, more),
      ``M`` (more), ``D`` (last) and the body's ``ctx_area_fk100``/``nk100``
      (overseas ``…200``); the next page needs request header ``tr_cont: N`` and those keys
      (keys without ``N``: the first page again; keys the fake did not issue: HTTP 500 ``OPSQ2002``).
    * :meth:`set_order_fault` breaks order POSTs (:class:`OrderFault`: ``drop_after``,
      ``slow_after``, ``http500_empty``, ``reset_after`` process the order first;
      ``drop_before`` does not; ``late`` drops the answer and places the order ``delay`` s
      later).  :meth:`orders` lists every row the fake accepted, the
      ground truth for "was it placed?".
    * Counters: ``orders_received`` (by tr_id too), ``orders_placed``, ``order_faults``,
      ``rest_by_tr_id``, ``hashkeys_checked``.
    * Control API (other processes): ``POST /__fake__/control`` actions ``open_account``,
      ``set_price``, ``fill_order``, ``set_order_fault``, ``clear_order_faults``,
      ``set_paging_restart`` (same arguments, prices as strings) and ``set`` for settings;
      ``GET /__fake__/orders`` answers ``{"orders": [...]}`` (Decimals as strings).
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
        account_cash_krw: int | float = 100_000_000,
        account_cash_usd: int | float = 100_000,
        market_open: bool = True,
        bind_account: str | None = None,
        rejection_status: int = 200,
        balance_page_size: int | None = None,
        orders_page_size: int | None = None,
        paging_restart: int = 0,
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
            account_cash_krw=account_cash_krw,
            account_cash_usd=account_cash_usd,
            market_open=market_open,
            bind_account=bind_account,
            rejection_status=rejection_status,
            balance_page_size=balance_page_size,
            orders_page_size=orders_page_size,
            paging_restart=paging_restart,
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
        self._state.on_fill(self._notify_fill)

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

    # -- the account book ---------------------------------------------------------------

    def open_account(
        self,
        acc_no: str,
        *,
        cash_krw: object = None,
        cash_usd: object = None,
        positions: Mapping[str, tuple[Any, ...]] | None = None,
        hts_id: str | None = None,
    ) -> None:
        """Open (or re-open, replacing cash and positions) the account ``"12345678-01"``.

        ``hts_id``: the account holder's HTS ID; the account's domestic fills are then sent as
        encrypted execution notices to the fake WebSocket's subscribers of that ID.

        ``cash_krw`` / ``cash_usd`` default to the ``account_cash_krw`` / ``account_cash_usd``
        settings; ``positions`` is ``{symbol: (quantity, average_price)}`` (a third item
        names the exchange of a non-US overseas symbol, e.g. ``(10, "150", "TKSE")``).
        Orders still resting on the old book stop resting; past order rows stay listed.
        """
        self._state.open_account(acc_no, cash_krw, cash_usd, positions, hts_id)

    def _notify_fill(self, row: Any, quantity: int, price: Decimal, hts_id: str) -> None:
        """A domestic fill of an account with an HTS ID becomes an execution notice (if the WebSocket runs)."""
        if row.market == "KR" and self._stream.running:
            self._stream.emit_notice(hts_id, row.odno, row.symbol, row.side, quantity, str(price))

    def set_price(self, symbol: str, price: object) -> None:
        """Set the current price of ``symbol`` (int, str or Decimal): fills and quotes both use it.

        Resting limit orders that become marketable do not fill by themselves: call
        :meth:`fill_order`.  Unknown symbols raise ``ValueError``.
        """
        self._state.set_price(symbol, price)

    def current_price(self, symbol: str) -> Decimal:
        """The price a market order in ``symbol`` fills at now."""
        return self._state.current_price(symbol)

    def fill_order(self, odno: str, quantity: int | None = None) -> dict[str, Any]:
        """Fill a resting order (all that remains, or ``quantity``) at its limit price; returns its row."""
        return self._state.fill_order(odno, quantity)

    def orders(self, acc_no: str | None = None) -> list[dict[str, Any]]:
        """Every order row accepted (new, revise, cancel), oldest first; copies.

        Keys: ``odno``, ``orgn_odno`` (None for new), ``acc_no``, ``symbol``, ``market`` (``"KR"``
        or the exchange code), ``side``, ``kind``, ``order_type``, ``quantity``, ``price``
        (``Decimal``, None for a market order), ``filled``, ``remaining``, ``cancelled``,
        ``tr_id``, ``ordered_at`` (epoch), ``branch``, ``currency``, ``fill_amount``.
        """
        return self._state.orders(acc_no)

    def account(self, acc_no: str) -> dict[str, Any]:
        """``cash_krw``, ``cash_usd`` (Decimal), ``cash`` (every currency) and ``positions``
        (``{symbol: {"quantity", "average_price", "market"}}``) of ``acc_no`` (opened if new)."""
        return self._state.account(acc_no)

    def set_order_fault(
        self,
        kind: str,
        *,
        times: int | None = 1,
        delay: float | None = None,
        probability: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Break the next ``times`` order POSTs (``None``: until cleared) as ``kind`` (:class:`OrderFault`).

        With ``probability``, each order POST takes the fault with that chance (a
        ``random.Random(seed)``), until ``times`` have taken it.  ``delay`` is the
        ``slow_after`` wait (default 30 s; the wait ends early when the server stops).
        Faults are queued; an order POST takes the first one that applies.
        """
        self._state.add_order_fault(kind, times, delay, probability, seed)

    def clear_order_faults(self) -> None:
        """Forget every order fault."""
        self._state.clear_order_faults()

    def set_paging_restart(self, times: int) -> None:
        """The next ``times`` continuation requests answer ``SYDB0050`` (data changed: start over)."""
        self._state.configure(paging_restart=times)

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
