"""The rules of the fake KIS server, with no HTTP in sight.

Why separate: the token-issuance and rate-limit rules are the part of KIS that
clients get wrong, so they must be testable with an injected clock, without
sockets or sleeps. :class:`KISState` owns every piece of mutable state behind
one lock; the HTTP layer (``server.py``) only parses requests, waits (outside
the lock) and writes the :class:`Reply` objects this module returns.

Rule decisions where KIS is unclear (see the facts sheet) are switches in
:class:`Settings`:

* ``issue_window_counts="success"`` (default): the 1-per-window limit counts
  from the last *successful* tokenP answer. A same-token re-answer is a
  successful answer too, so it restarts the window. ``"request"``: the window
  counts from the last tokenP request with valid credentials, rejected ones
  included (the pessimistic reading: a client retrying inside the window never
  gets through).
* The window is checked *before* the same-token rule: inside the window the
  answer is 403 ``EGW00133`` even if the same token would have been handed back.
* ``new_token_revokes_old=False`` (default): minting a new token leaves older
  ones valid until they expire.
* ``environment="real"`` (default) or ``"mock"``: which KIS host the fake plays.
  Nothing tells the two apart on the wire (a client picks the host), so tests
  choose. As ``"mock"`` the fake refuses real-only endpoints (the IPO schedule)
  with ``NOT_IN_MOCK``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

from . import account, bars, market

__all__ = [
    "KST",
    "FakeKISStats",
    "FaultPlan",
    "KISState",
    "Reply",
    "Settings",
    "TokenFault",
    "kst_string",
    "new_app_key",
    "new_app_secret",
]

KST = timezone(timedelta(hours=9), "KST")
"""Korea Standard Time. Fixed +9: Korea has had no daylight saving since 1988."""

MSG_OK = "정상처리 되었습니다."
MSG_REVOKED = "접근토큰 폐기에 성공하였습니다."
EGW00103 = ("EGW00103", "유효하지 않은 AppKey입니다.")
EGW00105 = ("EGW00105", "유효하지 않은 AppSecret입니다.")
EGW00133 = ("EGW00133", "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)")
EGW00121 = ("EGW00121", "유효하지 않은 token 입니다.")
EGW00123 = ("EGW00123", "기간이 만료된 token 입니다.")
EGW00201 = ("EGW00201", "초당 거래건수를 초과하였습니다.")
EGW00205 = ("EGW00205", "credentials_type이 유효하지 않습니다.(Bearer)")
# Codes below are the fake's own choices: KIS's real answers are not documented.
BAD_TR_ID = ("OPSQ0002", "없는 서비스 코드 입니다")
MISSING_FIELD = ("OPSQ2001", "ERROR : INPUT_FIELD NOT FOUND")
BAD_FIELD_VALUE = ("OPSQ2002", "ERROR : INPUT_FIELD_VALUE INVALID")
# Assumption: a real-only service asked of the mock host. One public report
# (koreainvestment/open-trading-api#17) shows a mock account getting this code
# for a service the mock host lacks; the HTTP status (500) is our guess.
NOT_IN_MOCK = ("MCA00124", "해당 서비스를 찾을수 없습니다.")
FAKE400 = "FAKE400"
FAKE500 = "FAKE500"

_JWT_HEADER = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"HS512"}').rstrip(b"=").decode()


class TokenFault(StrEnum):
    """Faults :meth:`FakeKIS.set_token_fault` can inject into ``/oauth2/tokenP``.

    A ``str`` enum, so plain strings such as ``"timeout"`` work as well.
    """

    DELAY = "delay"  # answer normally, after `delay` seconds
    HTTP500 = "http500"  # HTTP 500 with a JSON error body
    TIMEOUT = "timeout"  # hold the connection `delay` s (default 30), close without answering
    MALFORMED = "malformed"  # HTTP 200 with an HTML (non-JSON) body
    TRICKLE = "trickle"  # answer normally (a token is minted), one byte every `delay` s (default 1)
    EGW00103 = "EGW00103"  # the real 403 shapes
    EGW00105 = "EGW00105"
    EGW00133 = "EGW00133"


_FAULT_REPLIES: Mapping[TokenFault, tuple[int, str, str]] = {
    TokenFault.HTTP500: (500, FAKE500, "fake KIS: injected internal server error"),
    TokenFault.EGW00103: (403, *EGW00103),
    TokenFault.EGW00105: (403, *EGW00105),
    TokenFault.EGW00133: (403, *EGW00133),
}

DEFAULT_TIMEOUT_HOLD = 30.0
#: Seconds between two bytes of a trickled answer: under any sane read timeout, so only a
#: total deadline ends the call.
DEFAULT_TRICKLE_PACE = 1.0


@dataclass(frozen=True)
class FakeKISStats:
    """A consistent snapshot of the server's counters (a copy: safe to keep).

    ``tokenp_rejected`` counts every error answer to tokenP by ``error_code``,
    injected ones included; ``tokenp_faults`` counts injected faults by kind.
    ``tokenp_requests`` is counted on arrival, before any delay, so while
    requests are in flight it exceeds the sum of the outcomes.
    """

    tokenp_requests: int = 0
    tokens_issued: int = 0
    tokenp_success: int = 0
    tokenp_rejected: dict[str, int] = field(default_factory=dict)
    tokenp_faults: dict[str, int] = field(default_factory=dict)
    revoke_requests: int = 0
    hashkey_requests: int = 0
    approval_requests: int = 0
    rest_requests: int = 0
    rest_rejected: dict[str, int] = field(default_factory=dict)
    last_issued_at: float | None = None
    #: Master-file archive requests by file name (``kospi_code.mst.zip``), faulted ones included.
    master_downloads: dict[str, int] = field(default_factory=dict)
    #: Order POSTs (new, revise, cancel) that passed the gate and the tr_id check, faulted ones included.
    orders_received: int = 0
    orders_received_by_tr_id: dict[str, int] = field(default_factory=dict)
    #: Order rows created (new + revise + cancel).
    orders_placed: int = 0
    #: Injected order faults taken, by kind.
    order_faults: dict[str, int] = field(default_factory=dict)
    #: Every REST request (quotations, trading, bars) by its ``tr_id`` header, on arrival.
    rest_by_tr_id: dict[str, int] = field(default_factory=dict)
    #: Order POSTs whose ``hashkey`` header was checked (good or bad).
    hashkeys_checked: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (used by ``GET /__fake__/stats``)."""
        return asdict(self)


@dataclass(frozen=True)
class Reply:
    """What the HTTP layer must send: status, JSON body, extra headers."""

    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultPlan:
    """A fault taken from the queue for one tokenP request."""

    kind: TokenFault
    delay: float


@dataclass
class Settings:
    """Tunable rules; see :class:`FakeKIS` for what each one means."""

    issue_window: float = 60.0
    issue_window_counts: str = "success"
    same_token_window: float = 6 * 3600.0
    token_lifetime: float = 86400.0
    new_token_revokes_old: bool = False
    dead_token_status: int = 500
    rest_rate_limit: int | None = 20
    token_delay: float = 0.0
    environment: str = "real"
    account_cash_krw: int | float = 100_000_000
    account_cash_usd: int | float = 100_000
    market_open: bool = True
    bind_account: str | None = None
    rejection_status: int = 200
    balance_page_size: int | None = None
    orders_page_size: int | None = None
    paging_restart: int = 0

    def validate(self) -> None:
        """Reject nonsense early, where the caller can see it."""
        for name in ("issue_window", "same_token_window", "token_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if isinstance(self.token_lifetime, bool) or not isinstance(self.token_lifetime, int | float):
            raise ValueError(f"token_lifetime must be a number, got {self.token_lifetime!r}")
        if self.token_lifetime <= 0:
            raise ValueError(f"token_lifetime must be > 0, got {self.token_lifetime!r}")
        if self.issue_window_counts not in ("success", "request"):
            raise ValueError(f"issue_window_counts must be 'success' or 'request', got {self.issue_window_counts!r}")
        if not isinstance(self.new_token_revokes_old, bool):
            raise ValueError("new_token_revokes_old must be a bool")
        status = self.dead_token_status
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"dead_token_status must be an HTTP status 200..599, got {status!r}")
        limit = self.rest_rate_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"rest_rate_limit must be None or an int >= 1, got {limit!r}")
        if self.environment not in ("real", "mock"):
            raise ValueError(f"environment must be 'real' or 'mock', got {self.environment!r}")
        for name in ("account_cash_krw", "account_cash_usd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.market_open, bool):
            raise ValueError(f"market_open must be a bool, got {self.market_open!r}")
        bound = self.bind_account
        if bound is not None:
            cano, dash, prdt = bound.partition("-") if isinstance(bound, str) else ("", "", "")
            if not (dash and len(cano) == 8 and cano.isdigit() and len(prdt) == 2 and prdt.isdigit()):
                raise ValueError(f"bind_account must be None or 'CANO-ACNT_PRDT_CD' (8-2 digits), got {bound!r}")
        status = self.rejection_status
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"rejection_status must be an HTTP status 200..599, got {status!r}")
        for name in ("balance_page_size", "orders_page_size"):
            size = getattr(self, name)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {size!r}")
        restart = self.paging_restart
        if isinstance(restart, bool) or not isinstance(restart, int) or restart < 0:
            raise ValueError(f"paging_restart must be an int >= 0, got {restart!r}")


@dataclass
class _Token:
    value: str
    app_key: str
    issued_at: float
    expires_at: int  # whole epoch seconds: exactly what the KST string and JWT exp say
    revoked: bool = False
    expired: bool = False  # forced by expire_all()

    def dead_reason(self, now: float) -> tuple[str, str] | None:
        if self.revoked:
            return EGW00121
        if self.expired or now >= self.expires_at:
            return EGW00123
        return None


@dataclass
class _App:
    secret: str
    last_success_at: float | None = None
    last_request_at: float | None = None
    current: _Token | None = None  # the last minted token: candidate for same-token answers
    recent: deque[float] = field(default_factory=deque)  # accepted REST calls in the last second


@dataclass
class _Fault:
    kind: TokenFault
    remaining: int | None
    delay: float


def kst_string(epoch: float) -> str:
    """Format an instant the way KIS does: KST wall clock, no zone marker."""
    return datetime.fromtimestamp(epoch, tz=KST).strftime("%Y-%m-%d %H:%M:%S")


def new_app_key() -> str:
    """A random 36-character app key, shaped like KIS's (``PS`` + 34 chars)."""
    alphabet = string.ascii_letters + string.digits
    return "PS" + "".join(secrets.choice(alphabet) for _ in range(34))


def new_app_secret() -> str:
    """A random 180-character secret; base64 text, so it contains ``+`` and ``/`` like KIS's."""
    return base64.b64encode(secrets.token_bytes(135)).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _oauth_error(status: int, code: str, description: str) -> Reply:
    return Reply(status, {"error_description": description, "error_code": code})


def _envelope_error(status: int, code: tuple[str, str], detail: str = "") -> Reply:
    return Reply(status, {"rt_cd": "1", "msg_cd": code[0], "msg1": code[1] + detail})


class KISState:
    """All mutable state of one fake KIS server, guarded by one lock.

    Every public method is atomic. ``clock`` returns epoch seconds; the
    :meth:`advance` offset is added to it, so time travel works with any clock.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        settings.validate()
        self._settings = settings
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._apps: dict[str, _App] = {}
        self._tokens: dict[str, _Token] = {}
        self._issued: list[str] = []
        self._faults: deque[_Fault] = deque()
        self._stats = _Counters()
        self._jwt_key = secrets.token_bytes(32)
        self._accounts = account.Accounts()
        # WebSocket approval keys: key -> app key, and each app key's newest (the only valid one).
        self._approval_apps: dict[str, str] = {}
        self._newest_approval: dict[str, str] = {}

    # -- bookkeeping ---------------------------------------------------------------

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Hold the lock and wake :meth:`wait_for_stats` waiters afterwards."""
        with self._changed:
            yield
            self._changed.notify_all()

    def _now(self) -> float:
        return self._clock() + self._offset

    def now(self) -> float:
        """Server time: the clock plus every :meth:`advance` so far."""
        with self._lock:
            return self._now()

    def advance(self, seconds: float) -> None:
        """Move server time forward (expiry, windows, rate limits all follow)."""
        if seconds < 0:
            raise ValueError("advance() only moves forward")
        with self._mutating():
            self._offset += seconds

    def settings(self) -> Settings:
        """A copy of the current settings."""
        with self._lock:
            return Settings(**asdict(self._settings))

    def configure(self, **changes: object) -> None:
        """Change settings at run time; all-or-nothing if one value is bad."""
        names = {f.name for f in fields(Settings)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown setting(s): {sorted(unknown)}")
        with self._mutating():
            candidate = Settings(**{**asdict(self._settings), **changes})
            candidate.validate()
            self._settings = candidate

    def add_app(self, app_key: str, app_secret: str) -> None:
        """Register a valid credential pair (replacing the secret if the key exists)."""
        if not app_key or not app_secret:
            raise ValueError("app_key and app_secret must be non-empty")
        with self._mutating():
            app = self._apps.get(app_key)
            if app is None:
                self._apps[app_key] = _App(app_secret)
            else:
                app.secret = app_secret

    def stats(self) -> FakeKISStats:
        """A consistent copy of the counters, taken under the lock."""
        with self._lock:
            return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero every counter; tokens, windows and faults are kept."""
        with self._mutating():
            self._stats = _Counters()

    def wait_for_stats(self, predicate: Callable[[FakeKISStats], bool], timeout: float) -> FakeKISStats | None:
        """Block until ``predicate(stats)`` holds; ``None`` on timeout. No polling."""
        with self._changed:
            ok = self._changed.wait_for(lambda: predicate(self._stats.snapshot()), timeout)
            return self._stats.snapshot() if ok else None

    def issued_tokens(self) -> list[str]:
        """Every token string minted, oldest first (a copy)."""
        with self._lock:
            return list(self._issued)

    def revoke_all(self) -> None:
        """Mark every minted token revoked: REST then answers ``EGW00121``."""
        with self._mutating():
            for token in self._tokens.values():
                token.revoked = True

    def expire_all(self) -> None:
        """Mark every minted token expired: REST then answers ``EGW00123``."""
        with self._mutating():
            for token in self._tokens.values():
                token.expired = True

    # -- faults ------------------------------------------------------------------------

    def add_fault(self, kind: str, times: int | None, delay: float | None) -> None:
        """Queue a tokenP fault; ``times=None`` repeats it until :meth:`clear_faults`."""
        fault_kind = TokenFault(kind)
        if times is not None and (isinstance(times, bool) or times < 1):
            raise ValueError(f"times must be None or >= 1, got {times!r}")
        if delay is None:
            defaults = {TokenFault.TIMEOUT: DEFAULT_TIMEOUT_HOLD, TokenFault.TRICKLE: DEFAULT_TRICKLE_PACE}
            delay = defaults.get(fault_kind, 0.0)
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        with self._mutating():
            self._faults.append(_Fault(fault_kind, times, float(delay)))

    def clear_faults(self) -> None:
        """Forget every queued tokenP fault."""
        with self._mutating():
            self._faults.clear()

    # -- master files ------------------------------------------------------------------

    def count_master_download(self, file_name: str) -> None:
        """Count one request for a master-file archive, on arrival (before any delay)."""
        with self._mutating():
            _bump(self._stats.master_downloads, file_name)

    # -- /oauth2/tokenP ------------------------------------------------------------

    def begin_tokenp(self) -> tuple[float, FaultPlan | None]:
        """Count an arriving tokenP request; return (token_delay, fault to apply)."""
        with self._mutating():
            self._stats.tokenp_requests += 1
            plan: FaultPlan | None = None
            if self._faults:
                head = self._faults[0]
                plan = FaultPlan(head.kind, head.delay)
                if head.remaining is not None:
                    head.remaining -= 1
                    if head.remaining <= 0:
                        self._faults.popleft()
                _bump(self._stats.tokenp_faults, head.kind.value)
            return self._settings.token_delay, plan

    def fault_reply(self, kind: TokenFault) -> Reply:
        """The answer for an injected error fault (http500 / EGW001xx)."""
        status, code, description = _FAULT_REPLIES[kind]
        with self._mutating():
            _bump(self._stats.tokenp_rejected, code)
        return _oauth_error(status, code, description)

    def issue_token(self, payload: object) -> Reply:
        """Apply the tokenP rules: credentials, then the window, then same-token."""
        with self._mutating():
            reply = self._issue_locked(payload)
            if reply.status == 200:
                self._stats.tokenp_success += 1
                self._stats.last_issued_at = self._now()
            else:
                _bump(self._stats.tokenp_rejected, str(reply.body["error_code"]))
            return reply

    def _issue_locked(self, payload: object) -> Reply:
        if not isinstance(payload, dict):
            return _oauth_error(400, FAKE400, "fake KIS: the body must be a JSON object")
        app, error = self._credentials(payload.get("appkey"), payload.get("appsecret"))
        if app is None:
            return error
        if payload.get("grant_type") != "client_credentials":
            return _oauth_error(400, FAKE400, "fake KIS: grant_type must be 'client_credentials'")
        now = self._now()
        s = self._settings
        since = app.last_success_at if s.issue_window_counts == "success" else app.last_request_at
        app.last_request_at = now
        if since is not None and now - since < s.issue_window:
            return _oauth_error(403, *EGW00133)
        token = app.current
        if token is None or token.dead_reason(now) is not None or now - token.issued_at >= s.same_token_window:
            token = self._mint(str(payload["appkey"]), app, now)
        app.last_success_at = now
        return Reply(
            200,
            {
                "access_token": token.value,
                "access_token_token_expired": kst_string(token.expires_at),
                "token_type": "Bearer",
                "expires_in": 86400,  # KIS always says 86400, even for an older token
            },
        )

    def _credentials(self, app_key: object, app_secret: object) -> tuple[_App | None, Reply]:
        """Key first (EGW00103), then secret (EGW00105): the order KIS reports them."""
        app = self._apps.get(app_key) if isinstance(app_key, str) else None
        if app is None:
            return None, _oauth_error(403, *EGW00103)
        if not isinstance(app_secret, str) or not hmac.compare_digest(app.secret.encode(), app_secret.encode()):
            return None, _oauth_error(403, *EGW00105)
        return app, Reply(200, {})

    def _mint(self, app_key: str, app: _App, now: float) -> _Token:
        expires_at = int(now + self._settings.token_lifetime)
        claims = {
            "sub": app_key,
            "aud": str(uuid.uuid4()),
            "prdt_cd": "",
            "iss": "unogw",
            "exp": expires_at,
            "iat": int(now),
            "jti": secrets.token_hex(16),
        }
        signing_input = _JWT_HEADER + "." + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._jwt_key, signing_input.encode(), hashlib.sha512).digest()
        token = _Token(signing_input + "." + _b64url(signature), app_key, now, expires_at)
        if self._settings.new_token_revokes_old:
            for old in self._tokens.values():
                if old.app_key == app_key:
                    old.revoked = True
        self._tokens[token.value] = token
        self._issued.append(token.value)
        app.current = token
        self._stats.tokens_issued += 1
        return token

    # -- other oauth endpoints ------------------------------------------------------

    def revoke(self, payload: object) -> Reply:
        """``/oauth2/revokeP``: kill one token of the caller's own app."""
        with self._mutating():
            self._stats.revoke_requests += 1
            if not isinstance(payload, dict):
                return _oauth_error(400, FAKE400, "fake KIS: the body must be a JSON object")
            app, error = self._credentials(payload.get("appkey"), payload.get("appsecret"))
            if app is None:
                return error
            token = self._tokens.get(str(payload.get("token")))
            if token is None or token.app_key != payload.get("appkey"):
                return _oauth_error(403, *EGW00121)
            token.revoked = True  # revoking twice succeeds twice
            return Reply(200, {"code": 200, "message": MSG_REVOKED})

    def approval(self, payload: object) -> Reply:
        """``/oauth2/Approval``: a WebSocket approval key (note ``secretkey``)."""
        with self._mutating():
            self._stats.approval_requests += 1
            if not isinstance(payload, dict):
                return _oauth_error(400, FAKE400, "fake KIS: the body must be a JSON object")
            app, error = self._credentials(payload.get("appkey"), payload.get("secretkey"))
            if app is None:
                return error
            key = str(uuid.uuid4())
            self._approval_apps[key] = payload["appkey"]
            self._newest_approval[payload["appkey"]] = key  # the previous key dies at once (seen)
            return Reply(200, {"approval_key": key})

    def approval_key_app(self, approval_key: str) -> tuple[str, bool] | None:
        """The app key an approval key was issued to and whether it is still that app's newest; None if unknown."""
        with self._lock:
            app_key = self._approval_apps.get(approval_key)
            if app_key is None:
                return None
            return app_key, self._newest_approval.get(app_key) == approval_key

    def hashkey(self, headers: Mapping[str, str], raw_body: bytes, payload: object) -> Reply:
        """``/uapi/hashkey``: echo the body and its SHA-256 (the fake's hash choice)."""
        with self._mutating():
            self._stats.hashkey_requests += 1
            app, error = self._credentials(headers.get("appkey"), headers.get("appsecret"))
            if app is None:
                return error
            if not isinstance(payload, dict):
                return _oauth_error(400, FAKE400, "fake KIS: the body must be a JSON object")
            return Reply(200, {"BODY": payload, "HASH": hashlib.sha256(raw_body).hexdigest()})

    # -- REST ----------------------------------------------------------------------------

    def rest(self, path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Reply:
        """A quotation call: Bearer, token, rate limit, tr_id, fields, then data."""
        endpoint = QUOTE_ENDPOINTS[path]
        with self._mutating():
            self._stats.rest_requests += 1
            _bump(self._stats.rest_by_tr_id, headers.get("tr_id", ""))
            reply = self._rest_locked(path, endpoint, headers, query)
            if reply.body.get("rt_cd") != "0":
                _bump(self._stats.rest_rejected, str(reply.body.get("msg_cd")))
            return reply

    def _gate(self, headers: Mapping[str, str]) -> Reply | None:
        """Bearer, token, app key, rate limit: the checks every REST call passes first."""
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _envelope_error(500, EGW00205)
        now = self._now()
        token = self._tokens.get(auth[len("Bearer ") :].strip())
        if token is None or token.app_key != headers.get("appkey"):
            return _envelope_error(self._settings.dead_token_status, EGW00121)
        dead = token.dead_reason(now)
        if dead is not None:
            return _envelope_error(self._settings.dead_token_status, dead)
        limit = self._settings.rest_rate_limit
        if limit is not None:
            recent = self._apps[token.app_key].recent
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= limit:
                return _envelope_error(500, EGW00201)
            recent.append(now)
        return None

    def _rest_locked(
        self, path: str, endpoint: market.Endpoint, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Reply:
        refused = self._gate(headers)
        if refused is not None:
            return refused
        now = self._now()
        if endpoint.real_only and self._settings.environment == "mock":
            return _envelope_error(500, NOT_IN_MOCK)
        tr_id = headers.get("tr_id", "")
        if tr_id != endpoint.tr_id:
            return _envelope_error(500, BAD_TR_ID, f" (tr_id={tr_id!r})")
        missing = [name for name in endpoint.required if name not in query]
        if missing:
            return _envelope_error(500, MISSING_FIELD, f" [{', '.join(missing)}]")
        try:
            data = endpoint.data(query, datetime.fromtimestamp(now, tz=KST).date())
        except ValueError as exc:  # e.g. a date that is not YYYYMMDD
            return _envelope_error(500, BAD_FIELD_VALUE, f" ({exc})")
        symbol = query.get("FID_INPUT_ISCD", query.get("SYMB", ""))
        override = self._accounts.price_override(symbol)
        if override is not None:
            data = market.with_price(path, data, str(override))
        return Reply(
            200,
            {**data, "rt_cd": "0", "msg_cd": "MCA00000", "msg1": MSG_OK},
            {"tr_id": tr_id, "tr_cont": "", "gt_uid": secrets.token_hex(16)},
        )

    # -- trading -------------------------------------------------------------------------

    def trading(
        self, path: str, headers: Mapping[str, str], query: Mapping[str, str], raw_body: bytes
    ) -> tuple[Reply | None, account.FaultPlan | None]:
        """A trading call (orders, balance, orders list, buyable).

        Returns the answer and the order fault this request took. ``(None, plan)``
        means ``drop_before``: nothing was processed and nothing must be sent.
        """
        method, _ops = account.PATHS[path]
        with self._mutating():
            s = self._stats
            s.rest_requests += 1
            tr_id = headers.get("tr_id", "")
            _bump(s.rest_by_tr_id, tr_id)
            reply, plan = self._trading_locked(path, method, tr_id, headers, query, raw_body)
            if reply is not None and reply.body.get("rt_cd") != "0":
                _bump(s.rest_rejected, str(reply.body.get("msg_cd")))
            return reply, plan

    def _trading_locked(
        self,
        path: str,
        method: str,
        tr_id: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        raw_body: bytes,
    ) -> tuple[Reply | None, account.FaultPlan | None]:
        refused = self._gate(headers)
        if refused is not None:
            return refused, None
        op, error = account.resolve(path, tr_id, self._settings.environment)
        if op is None:
            return _as_reply(error), None
        plan: account.FaultPlan | None = None
        fields: Mapping[str, object]
        if op.is_order:
            s = self._stats
            s.orders_received += 1
            _bump(s.orders_received_by_tr_id, tr_id)
            plan = self._accounts.take_fault()
            if plan is not None:
                _bump(s.order_faults, plan.kind.value)
                if plan.kind is account.OrderFault.DROP_BEFORE:
                    return None, plan
            if "hashkey" in headers:
                s.hashkeys_checked += 1
                if not hmac.compare_digest(headers["hashkey"].strip(), hashlib.sha256(raw_body).hexdigest()):
                    return _envelope_error(500, account.BAD_HASHKEY), plan
            try:
                payload = json.loads(raw_body)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                return _envelope_error(500, BAD_FIELD_VALUE, " (the body must be a JSON object)"), plan
            fields = {str(key).upper(): value for key, value in payload.items()}
        else:
            fields = query
        if plan is not None and plan.kind is account.OrderFault.LATE:
            late = threading.Timer(plan.delay, self._act_late, (op, dict(headers), dict(fields)))
            late.daemon = True
            late.start()
            return None, plan  # dropped now, acted on later
        answer = self._accounts.handle(op, self._settings, self._now(), headers, fields)
        self._stats.orders_placed += answer.placed
        reply = _as_reply(answer)
        headers_out = {"tr_id": tr_id, "tr_cont": "", "gt_uid": secrets.token_hex(16), **reply.headers}
        return Reply(reply.status, reply.body, headers_out), plan

    def _act_late(self, op: account.Op, headers: dict[str, str], fields: dict[str, object]) -> None:
        """The delayed half of a ``late`` order fault: the order is placed now, its answer long gone."""
        with self._mutating():
            answer = self._accounts.handle(op, self._settings, self._now(), headers, fields)
            self._stats.orders_placed += answer.placed

    # -- the account book (FakeKIS delegates here) ---------------------------------------

    def open_account(
        self,
        acc_no: str,
        cash_krw: object,
        cash_usd: object,
        positions: Mapping[str, Any] | None,
        hts_id: str | None = None,
    ) -> None:
        with self._mutating():
            self._accounts.open_account(acc_no, self._settings, cash_krw, cash_usd, positions)
            self._accounts.set_hts_id(acc_no, hts_id)

    def on_fill(self, listener: Callable[[account.OrderRow, int, Decimal, str], None]) -> None:
        """Call ``listener(row, quantity, price, hts_id)`` at every fill of an account with an HTS ID."""
        self._accounts.fill_listener = listener

    def set_price(self, symbol: str, price: object) -> None:
        with self._mutating():
            self._accounts.set_price(symbol, price)

    def current_price(self, symbol: str) -> Decimal:
        with self._lock:
            return self._accounts.current_price(symbol)

    def fill_order(self, odno: str, quantity: int | None) -> dict[str, Any]:
        with self._mutating():
            return self._accounts.fill_order(odno, quantity)

    def orders(self, acc_no: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return self._accounts.orders(acc_no)

    def account(self, acc_no: str) -> dict[str, Any]:
        with self._mutating():  # may open the account
            return self._accounts.account(acc_no, self._settings)

    def add_order_fault(
        self, kind: str, times: int | None, delay: float | None, probability: float | None, seed: int | None
    ) -> None:
        with self._mutating():
            self._accounts.add_fault(kind, times, delay, probability, seed)

    def clear_order_faults(self) -> None:
        with self._mutating():
            self._accounts.clear_faults()


#: Every GET endpoint with a fixed tr_id: quotations and price history.
QUOTE_ENDPOINTS: Mapping[str, market.Endpoint] = {**market.ENDPOINTS, **bars.ENDPOINTS}


def _as_reply(answer: account.Answer | None) -> Reply:
    if answer is None:  # pragma: no cover - resolve() gives an op or an answer
        return _envelope_error(500, BAD_TR_ID)
    return Reply(answer.status, answer.body, dict(answer.headers))


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


@dataclass
class _Counters:
    tokenp_requests: int = 0
    tokens_issued: int = 0
    tokenp_success: int = 0
    tokenp_rejected: dict[str, int] = field(default_factory=dict)
    tokenp_faults: dict[str, int] = field(default_factory=dict)
    revoke_requests: int = 0
    hashkey_requests: int = 0
    approval_requests: int = 0
    rest_requests: int = 0
    rest_rejected: dict[str, int] = field(default_factory=dict)
    last_issued_at: float | None = None
    master_downloads: dict[str, int] = field(default_factory=dict)
    orders_received: int = 0
    orders_received_by_tr_id: dict[str, int] = field(default_factory=dict)
    orders_placed: int = 0
    order_faults: dict[str, int] = field(default_factory=dict)
    rest_by_tr_id: dict[str, int] = field(default_factory=dict)
    hashkeys_checked: int = 0

    def snapshot(self) -> FakeKISStats:
        return FakeKISStats(**asdict(self))
