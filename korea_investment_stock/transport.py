"""HTTP to KIS: the session, the one JSON call every request makes, and KIS's answer codes.

Kept out of ``token/`` because the client's REST path, the token calls and the
master-file downloads all go through it: one place decides the timeouts, the
connection pool, the retry that is always safe, and how a transport failure
becomes one of our errors without a header (the app secret) in its traceback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast

import requests
import requests.adapters
import requests.api
import requests.auth
import urllib3.exceptions
from urllib3.util.retry import Retry

from . import deadline
from .errors import ConfigurationError, KISAPIError, TokenIssueError

#: (connect, read) seconds for every KIS call: a dead host fails in about 3 s (6 s with the
#: one connect retry), a stuck one in 10 s, instead of hanging a worker forever.
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)

#: Connect attempts per call: the first and the one retry :func:`new_session` allows.
CONNECT_ATTEMPTS = 2

#: Connections one client keeps open to its host.  Threads sharing a client each
#: hold one while a call is in flight; a smaller pool makes urllib3 discard the
#: extra ones ("Connection pool is full") and reconnect on the next call.
DEFAULT_POOL_SIZE = 64

# KIS's codes, named for what they mean (see shared/kis-api.md).
#: tokenP: one issuance per minute per app key.
ISSUANCE_LIMIT_CODE = "EGW00133"
#: REST: more calls in one second than the app key's budget.
PER_SECOND_LIMIT_CODE = "EGW00201"
#: REST: the token expired (EGW00123) or is unknown / revoked (EGW00121).
DEAD_TOKEN_CODES = frozenset({"EGW00121", "EGW00123"})
#: tokenP: the part of the credentials KIS rejected.
BAD_CREDENTIAL_CODES = {"EGW00103": "app key", "EGW00105": "app secret"}

#: The variable that names the KIS host (the client's ``base_url=`` wins over it).
ENV_BASE_URL = "KOREA_INVESTMENT_BASE_URL"
#: What a connection error tells the reader to check: where the host every KIS call goes to is set.
HOST_SETTING = f"base_url= or {ENV_BASE_URL}"

#: The error classes :func:`request_json` raises: both take ``(message, status=...)``.
ErrorClass: TypeAlias = type[TokenIssueError] | type[KISAPIError]


def call_seconds(timeout: tuple[float, float]) -> float:
    """The longest one call may take whatever the host does: every connect attempt plus one read timeout.

    The read timeout bounds the whole answer, not each byte of it, so a host
    that trickles its answer cannot hold a caller (or a token lease) longer.
    """
    connect, read = timeout
    return connect * CONNECT_ATTEMPTS + read


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections honour :func:`~.deadline.bounded` (the total deadline of a call)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = deadline.pool_classes()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS managers bring connection classes of their own
            manager.pool_classes_by_scheme = deadline.pool_classes()
        return manager


def new_session(pool_size: int = DEFAULT_POOL_SIZE) -> requests.Session:
    """A session with a pool of ``pool_size`` connections, one safe retry, and total deadlines.

    The retry covers connecting only: a request that never reached the host
    can be sent again whatever its method.  A read error or an error status is
    never retried here, since KIS may already have acted on the request.
    :func:`request_json` bounds each call as a whole (:func:`call_seconds`);
    a session made elsewhere gets only the per-read timeouts.
    """
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ConfigurationError(f"pool_size must be a positive number of connections, got {pool_size!r}")
    # read=False: a read error is raised as it is (a ReadTimeout, not a wrapped ConnectionError).
    retry = Retry(total=1, connect=1, read=False, redirect=0, status=0, other=0, raise_on_status=False)
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def kis_code(answer: dict[str, Any]) -> str | None:
    """KIS's code in an answer: ``msg_cd`` on REST, ``error_code`` on the token endpoints."""
    code = answer.get("msg_cd") or answer.get("error_code")
    return code if isinstance(code, str) and code else None


class AppCredentials(Protocol):
    """What :class:`CredentialHeaders` needs (a :class:`~.token.credentials.Credentials`)."""

    @property
    def api_key(self) -> str: ...

    def secret(self) -> str: ...


class CredentialHeaders(requests.auth.AuthBase):
    """Adds ``appkey``/``appsecret`` (and ``authorization``) to a request as ``requests`` sends it.

    The headers dict a caller builds then carries no secret, so neither does
    any frame's locals when a call fails.
    """

    def __init__(self, credentials: AppCredentials, authorization: str | None = None) -> None:
        self._credentials = credentials
        self._authorization = authorization

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._authorization is not None:
            request.headers["authorization"] = self._authorization
        request.headers["appkey"] = self._credentials.api_key
        request.headers["appsecret"] = self._credentials.secret()
        return request

    def __repr__(self) -> str:
        return f"CredentialHeaders({self._credentials!r})"


def json_headers(**extra: str) -> dict[str, str]:
    """The headers every KIS call sends (no credentials: :class:`CredentialHeaders` adds those)."""
    return {"content-type": "application/json; charset=utf-8", **extra}


#: The module functions requests ships, by method.  0.6.1 called ``requests.get`` and
#: ``requests.post`` itself, and its users' tests replace them (``patch("requests.get")``)
#: to stand in for KIS; while one is replaced, calls of that method go through the
#: replacement, as they did in 0.6.1.  Otherwise every call goes through the client's session.
_SHIPPED: dict[str, Callable[..., Any]] = {"GET": requests.api.get, "POST": requests.api.post}


def _sender(session: requests.Session, method: str) -> Callable[..., Any]:
    """``session.request`` for ``method``, or the replacement of ``requests.get``/``post`` a test put there."""
    shipped = _SHIPPED.get(method.upper())
    if shipped is not None:
        current = getattr(requests, method.lower(), shipped)
        if current is not shipped:
            return cast("Callable[..., Any]", current)
    return functools.partial(session.request, method)


@dataclass(frozen=True)
class KISResponse:
    """One KIS answer: HTTP status, the decoded JSON object, and the response headers.

    ``tr_cont`` is the paging header (``F``/``M``: more pages, ``D``/``E``: the last).
    """

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]

    @property
    def tr_cont(self) -> str:
        """The response's ``tr_cont`` header, blank when absent."""
        return str(self.headers.get("tr_cont", "") or "").strip()


#: Failures where the request provably never reached the host (no connection was made).
_UNSENT_CAUSES = frozenset({"dns", "refused", "no route", "connect timeout"})


def failure_cause(exc: requests.RequestException) -> str:
    """Name what went wrong in a failed call.

    One of ``dns``, ``refused``, ``no route``, ``connect timeout``, ``tls``,
    ``read timeout``, ``reset`` or ``other``.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout | requests.Timeout):
        return "read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    reason: object = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "dns"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass: first
        text = str(reason).lower()
        return "refused" if "refused" in text else "connect timeout" if "timed out" in text else "no route"
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return "connect timeout"
    if isinstance(reason, urllib3.exceptions.ProtocolError | ConnectionError):
        return "reset"
    return "other"


def _was_sent(call: deadline.CallDeadline, cause: str) -> bool:
    """Could the request have reached the host?  Exact through our connections, by cause otherwise."""
    if call.tracked:
        return call.sent
    return cause not in _UNSENT_CAUSES


def _unreachable(cls: ErrorClass, message: str, cause: str, sent: bool) -> Exception:
    error: Exception = cls(message)
    error.cause = cause  # type: ignore[attr-defined]  # KISConnectionError documents both
    error.request_sent = sent  # type: ignore[attr-defined]
    return error


def exchange_json(
    session: requests.Session,
    method: str,
    base_url: str,
    path: str,
    *,
    name: str,
    timeout: tuple[float, float],
    unreachable: ErrorClass,
    failed: ErrorClass,
    setting: str = HOST_SETTING,
    **kwargs: Any,
) -> KISResponse:
    """One KIS HTTP call: its status, decoded JSON object and headers, whatever the status.

    The call ends within :func:`call_seconds` of ``timeout`` in all.  No answer,
    no connection or a call past that deadline raises ``unreachable`` with
    ``cause`` and ``request_sent`` set (see :class:`~.errors.KISConnectionError`);
    its message says the cause in words and which ``setting`` names the host,
    since a wrong host is the usual reason on a first run.  An answer that is
    not a JSON object raises ``failed``.  Exceptions are not chained, so no
    header or body (secrets) reaches a traceback.
    """
    total = call_seconds(timeout)
    with deadline.bounded(total) as call:
        try:
            response = _sender(session, method)(base_url + path, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            cause = "deadline" if call.expired else failure_cause(exc)
            sent = _was_sent(call, cause)
            if call.expired:
                message = (
                    f"{name} at {base_url} did not finish within {total:g}s (its whole answer must arrive "
                    f"within the read timeout of {timeout[1]:g}s)"
                )
            elif cause == "read timeout":
                message = f"{name} at {base_url} did not answer within {timeout[1]:g}s"
            else:
                message = f"cannot reach {name} at {base_url}: {_CAUSE_WORDS.get(cause, type(exc).__name__)}"
            raise _unreachable(unreachable, f"{message}; {_check_hint(cause, setting)}", cause, sent) from None
    if call.expired:  # cut mid-headers, http.client may take what came as a short but whole answer
        raise _unreachable(
            unreachable, f"{name} at {base_url} did not finish within {total:g}s", "deadline", True
        ) from None
    # A stand-in answer from a replaced requests.get/post may have no status: it reads as 200.
    status = response.status_code if isinstance(getattr(response, "status_code", None), int) else 200
    try:  # apart: requests' JSONDecodeError is a RequestException too, but the host did answer
        answer = response.json()
    except ValueError:
        raise failed(f"{name} answered HTTP {status} with a body that is not JSON", status=status) from None
    if not isinstance(answer, dict):
        raise failed(f"{name} answered HTTP {status} with JSON that is not an object", status=status)
    headers = getattr(response, "headers", None)
    return KISResponse(status, answer, headers if isinstance(headers, Mapping) else {})


#: How each cause reads in an error message.
_CAUSE_WORDS = {
    "dns": "the host name does not resolve (DNS)",
    "refused": "the connection was refused (nothing listens there)",
    "no route": "no connection could be made (network or host unreachable)",
    "connect timeout": "the connection attempt timed out",
    "tls": "the TLS handshake failed (a plain-HTTP host behind https://, or a certificate problem)",
    "reset": "the connection was closed or reset before an answer came",
}


def _check_hint(cause: str, setting: str) -> str:
    """What to check for a failure of ``cause``: the host setting always, and the likely fix."""
    if cause == "tls":
        return f"check the scheme and host in {setting} (http:// for a plain-HTTP server such as the fake KIS)"
    if cause in ("read timeout", "deadline"):
        return f"check the host in {setting}, or allow more time with timeout="
    return f"check the host in {setting}"


def request_json(
    session: requests.Session,
    method: str,
    base_url: str,
    path: str,
    *,
    name: str,
    timeout: tuple[float, float],
    unreachable: ErrorClass,
    failed: ErrorClass,
    setting: str = HOST_SETTING,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    """:func:`exchange_json` as ``(status, decoded JSON object)``."""
    response = exchange_json(
        session,
        method,
        base_url,
        path,
        name=name,
        timeout=timeout,
        unreachable=unreachable,
        failed=failed,
        setting=setting,
        **kwargs,
    )
    return response.status, response.body


@dataclass(frozen=True)
class HostProbe:
    """What :func:`probe_host` saw: an HTTP status and its round trip, or why there was none."""

    reachable: bool
    detail: str
    round_trip_ms: float | None = None


def probe_host(base_url: str, timeout: tuple[float, float], session: requests.Session | None = None) -> HostProbe:
    """Is the host answering HTTP at all?  Any status counts; no credentials are sent."""
    own = session is None
    http = new_session(pool_size=1) if session is None else session
    started = time.perf_counter()
    try:
        with deadline.bounded(call_seconds(timeout)):
            response = http.get(base_url.rstrip("/") + "/", timeout=timeout, allow_redirects=False)
        rtt = round((time.perf_counter() - started) * 1000.0, 2)
        response.close()
        return HostProbe(True, f"{base_url}: HTTP {response.status_code}", rtt)
    except requests.Timeout:
        return HostProbe(False, f"{base_url}: no answer within {timeout[1]:g}s")
    except requests.RequestException as exc:
        return HostProbe(False, f"{base_url}: cannot connect ({type(exc).__name__})")
    finally:
        if own:
            http.close()
