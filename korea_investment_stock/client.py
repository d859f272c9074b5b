"""``KoreaInvestment``: configuration, one HTTP session, the REST call path, quotations.

Tokens come from a :class:`~.token.storage.TokenStorage` through its single
flight, so any number of clients sharing one app key cause one issuance.  The
REST path parses KIS's body whatever the HTTP status, replaces a dead token
once (compare-and-delete, then single flight) and retries ``EGW00201`` with
bounded backoff; every other answer comes back as the decoded dict.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from .answers import has_data, require_output
from .constants import MARKET_TYPE_MAP
from .errors import (
    ConfigurationError,
    KISAPIError,
    KISConnectionError,
    MalformedResponseError,
    NoTokenError,
    RateLimitExceededError,
    SymbolNotFoundError,
)
from .limits import DEFAULT_ACQUIRE_TIMEOUT, NoRateLimit, RateLimiter, limiter_for
from .market import ipo
from .realtime.settings import resolve_hts_id, resolve_ws_url
from .token.credentials import Credentials
from .token.factory import storage_from_env
from .token.issuer import TokenIssuer
from .token.record import TokenRecord, mask_token
from .token.storage import LAST_RESORT_MARGIN, TokenStorage
from .trading.orders import DEFAULT_SETTLE_SECONDS
from .transport import (
    DEAD_TOKEN_CODES,
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    ENV_BASE_URL,
    PER_SECOND_LIMIT_CODE,
    CredentialHeaders,
    KISResponse,
    call_seconds,
    exchange_json,
    json_headers,
    kis_code,
    new_session,
    request_json,
)
from .validation import TimeoutSetting, check_count, check_seconds, check_timeout

if TYPE_CHECKING:
    from .errors import OrderStatusUnknown
    from .realtime.stream import Stream
    from .trading import Balance, Bar, Buyable, Order, OrderRecord, Trading

logger = logging.getLogger(__name__)

REAL_BASE_URL = "https://openapi.koreainvestment.com:9443"
MOCK_BASE_URL = "https://openapivts.koreainvestment.com:29443"

#: Retries after ``EGW00201`` (per-second limit) before raising.
DEFAULT_RATE_LIMIT_RETRIES = 3
#: More retries than this only hide a caller outside the limiter that spends the whole budget.
MAX_RATE_LIMIT_RETRIES = 100
RATE_LIMIT_BACKOFF = 0.25
#: While the token store does not answer and the client runs on the token in hand, how
#: often a call asks the store again (the others use the token without waiting on it).
STORE_RETRY_SECONDS = 5.0
#: Seconds an order request may spend getting its token (a peer's issuance may wait out KIS's minute).
ORDER_TOKEN_ALLOWANCE = 75.0

#: How long a token assigned to ``access_token`` counts as valid: a KIS token's lifetime.  KIS
#: decides in truth; a dead one is replaced through the store.
ASSIGNED_TOKEN_LIFETIME = 86400.0

ACCOUNT_PATTERN = re.compile(r"^\d{8}-\d{2}$")

#: ``PRDT_TYPE_CD`` values per market for the product info endpoint (0.6.1's ``MARKET_TYPE_MAP``).
PRODUCT_TYPE_CODES: dict[str, tuple[str, ...]] = {market: tuple(codes) for market, codes in MARKET_TYPE_MAP.items()}
#: ``EXCD`` values per market for the overseas price endpoint.
EXCHANGE_CODES: dict[str, tuple[str, ...]] = {
    "US": ("NAS", "NYS", "AMS"),
    "NASDAQ": ("NAS",),
    "NAS": ("NAS",),
    "NYSE": ("NYS",),
    "NYS": ("NYS",),
    "AMEX": ("AMS",),
    "AMS": ("AMS",),
}
ETF_CLASS_NAMES = frozenset({"ETF", "ETN"})
#: ``prdt_clsf_name`` values 0.6.1's ``get_symbol_type`` calls a stock (KIS's Korean data, verbatim).
STOCK_CLASS_NAMES = frozenset({"주권", "상장REITS", "사회간접자본투융자회사"})


@dataclass(frozen=True)
class DomesticQuote:
    """A Korean symbol's product info answer and its price answer, as KIS sent them."""

    info: dict[str, Any]
    price: dict[str, Any]
    is_etf: bool


class KoreaInvestment:
    """A KIS Open API client for one app key and account.

    Args:
        api_key: the app key (``appkey``).
        api_secret: the app secret (``appsecret``); kept in memory only.
        acc_no: the account, ``12345678-01``.
        mock: use the mock-trading (모의투자) host.  Positionally, the fourth argument may
            also be the store: 0.6.1 (as published) took ``token_storage`` fourth, the
            commit before it ``mock``.  A ``bool`` is ``mock``, a :class:`TokenStorage` the
            store, anything else a ``TypeError``.
        token_storage: where tokens live; default from ``KOREA_INVESTMENT_TOKEN_STORAGE``
            (a :class:`~.token.file.FileTokenStorage` unless set to ``redis``).
        base_url: override the host, e.g. a fake server; also ``KOREA_INVESTMENT_BASE_URL``.
        timeout: seconds, or (connect, read), for every HTTP call.
        rate_limit_retries: retries after ``EGW00201`` before raising.
        session: a ``requests.Session`` to use instead of a new one (it is closed by
            :meth:`shutdown` all the same).
        pool_size: connections kept open to the host; at least the number of threads
            that share this client, or urllib3 discards connections and reconnects.
        rate_limiter: the per-second budget every REST call waits for; default follows
            the token store (:func:`~.limits.limiter_for`: a file store shares it between the
            processes of the host, a Redis store between servers), at
            ``KOREA_INVESTMENT_RATE_LIMIT`` calls per second (or ``off``).
        rate_limit_wait: the longest a call waits for its slot; past it the call fails
            with :class:`~.errors.RateLimitWaitTimeout` and nothing is sent.
        rate_limit_token_calls: charge tokenP and revokeP to the budget too (KIS limits
            them separately, one issuance per minute, so by default they are not).
        master_url: the symbol master files' host (``KOREA_INVESTMENT_MASTER_URL``; default
            KIS's download host), e.g. the fake server.
        master_cache_dir: where the daily master-file cache lives
            (``KOREA_INVESTMENT_MASTER_CACHE_DIR``; default ``masters/`` beside the token file).
        use_hashkey: send a ``hashkey`` header (one ``/uapi/hashkey`` call) with every order;
            KIS no longer requires it, so it is off by default.
        ws_url: the real-time WebSocket (``KOREA_INVESTMENT_WS_URL``; default KIS's real or
            mock address), e.g. the fake server's :attr:`~.testing.FakeKIS.ws_url`.
        hts_id: the account holder's HTS ID, which keys execution notices
            (``KOREA_INVESTMENT_HTS_ID``); ``stream.subscribe(notices=True)`` needs it.

    Construction obtains a token: from the store when a valid one is there (no
    HTTP call), else through :meth:`issue_access_token`, which runs the store's
    single flight (as 0.6.1 did, so code that patches or overrides that method
    keeps working).
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        acc_no: str,
        mock: bool | TokenStorage = False,
        token_storage: TokenStorage | None = None,
        *,
        base_url: str | None = None,
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        rate_limit_retries: int = DEFAULT_RATE_LIMIT_RETRIES,
        session: requests.Session | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        master_url: str | None = None,
        master_cache_dir: str | os.PathLike[str] | None = None,
        rate_limiter: RateLimiter | None = None,
        rate_limit_wait: float = DEFAULT_ACQUIRE_TIMEOUT,
        rate_limit_token_calls: bool = False,
        use_hashkey: bool = False,
        ws_url: str | None = None,
        hts_id: str | None = None,
    ) -> None:
        mock, token_storage = _mock_and_store(mock, token_storage)
        credentials = Credentials(api_key, api_secret)  # checks both: non-empty strings
        credentials.refuse_whitespace()  # a pasted newline would come back from KIS as "invalid AppKey"
        #: Kept for 0.6.x code that reads it; ``repr`` never shows it.
        self.api_secret = api_secret
        del api_secret  # from here on no frame of ours holds the bare secret
        _require_text("acc_no", acc_no)
        if not ACCOUNT_PATTERN.match(acc_no):
            raise ConfigurationError("acc_no must look like 12345678-01 (8 digits, a dash, 2 digits)")
        rate_limit_retries = check_count("rate_limit_retries", rate_limit_retries, low=0, high=MAX_RATE_LIMIT_RETRIES)
        self.api_key = api_key
        self.credentials = credentials
        self.acc_no = acc_no
        self.acc_no_prefix, self.acc_no_postfix = acc_no.split("-")
        self.mock = mock
        self.base_url = resolve_base_url(base_url, mock)
        self.ws_url = resolve_ws_url(ws_url, mock=mock)
        self.hts_id = resolve_hts_id(hts_id)
        self.timeout = check_timeout(timeout)
        self.rate_limit_retries = rate_limit_retries
        self._master_url = master_url
        self._master_cache_dir = master_cache_dir
        self._masters: Any = None
        self.token_storage = token_storage if token_storage is not None else storage_from_env()
        self.rate_limiter = rate_limiter if rate_limiter is not None else limiter_for(self.token_storage)
        self.rate_limit_wait = check_seconds("rate_limit_wait", rate_limit_wait)
        self.rate_limit_token_calls = rate_limit_token_calls
        if not isinstance(use_hashkey, bool):
            raise ConfigurationError(f"use_hashkey must be True or False, got {use_hashkey!r}")
        self.use_hashkey = use_hashkey
        self._own_session = session is None
        self._session = session if session is not None else new_session(pool_size)
        #: Orders go out on connections of their own, never a kept-alive one (see :mod:`.trading.orders`).
        self._trading: Trading | None = None
        self._issuer = self._new_issuer()
        self._token_lock = threading.Lock()
        #: While the store does not answer, when to ask it again (``time.monotonic()``).
        self._store_retry_at = 0.0
        self._token: TokenRecord | None = None
        #: A token user code assigned to :attr:`access_token`: sent until KIS rejects it.
        self._assigned: TokenRecord | None = None
        try:
            # As in 0.6.1: a valid stored token, else issue_access_token() (which 0.6.1 code
            # patches or overrides).  Ours runs the store's single flight, which reads again
            # under the lease: however many clients miss at once, one tokenP call.
            found = self.token_storage.find_token(credentials)
            if found is not None:
                self._set_token(found)
            else:
                self.issue_access_token()
        except BaseException:
            self._session.close()
            raise

    def __repr__(self) -> str:
        return (
            f"KoreaInvestment(api_key='{mask_token(self.api_key)}', acc_no='{self.acc_no_prefix[:4]}****-"
            f"{self.acc_no_postfix}', mock={self.mock}, base_url={self.base_url!r})"
        )

    def __enter__(self) -> KoreaInvestment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Close the HTTP session and the rate limiter's files; the stored token stays for other clients.

        A limiter other clients share opens its files again when they next use it.
        """
        self._session.close()
        self.rate_limiter.close()

    def set_base_url(self, mock: bool = True) -> None:
        """Point the client at the mock host (``mock=True``) or the real one (0.6.1's method).

        Tokens belong to one environment's app key, so this changes only where
        later calls go; build a client per environment for real and mock keys.
        """
        self.mock = mock
        self.base_url = MOCK_BASE_URL if mock else REAL_BASE_URL
        self._issuer = self._new_issuer()

    @property
    def environment(self) -> str:
        """``mock`` or ``real``: which of the app key's budgets the calls spend."""
        return "mock" if self.mock else "real"

    def _new_issuer(self) -> TokenIssuer:
        acquire = self._acquire_slot if self.rate_limit_token_calls else None
        return TokenIssuer(self._session, self.base_url, self.credentials, timeout=self.timeout, before_call=acquire)

    def _acquire_slot(self) -> None:
        """Wait for this call's slot in the app key's per-second budget (or fail, unsent)."""
        self.rate_limiter.acquire(self.credentials.api_key, self.environment, self.rate_limit_wait)

    @staticmethod
    def get_symbol_type(symbol_info: dict[str, Any]) -> str:
        """``"Stock"``, ``"ETF"`` or ``"Unknown"`` for a :meth:`fetch_stock_info` answer (0.6.1's rule)."""
        output = symbol_info.get("output") if isinstance(symbol_info, dict) else None
        product_class = output.get("prdt_clsf_name") if isinstance(output, dict) else None
        if product_class in STOCK_CLASS_NAMES:
            return "Stock"
        if product_class == "ETF":
            return "ETF"
        return "Unknown"

    # ------------------------------------------------------------------ tokens
    def check_access_token(self) -> bool:
        """True when the store holds a valid token for this key and secret."""
        return self.token_storage.check_token_valid(self.credentials.api_key, self.credentials.secret())

    def load_access_token(self) -> None:
        """Adopt the stored token (0.6.x); obtains one through the single flight if none is valid."""
        self._set_token(self.token_storage.token_for(self.credentials, self._issuer.issue))

    def issue_access_token(self) -> None:
        """Obtain a token through the store's single flight; replace the current one if there is one.

        Construction calls it when no valid token is stored (as 0.6.1 did): then
        many clients missing at once make one tokenP call, and a token a peer just
        stored is used instead.  Called on a client that holds a token, it forces
        a new one (:meth:`TokenStorage.refresh`): many callers doing this at once
        make one issuance, and the old token stays readable for other processes
        until the new one is stored.  KIS answers the same token within hours:
        callers who asked before that answer accept it as the refreshed token
        instead of asking KIS again.
        """
        current = self._assigned or self._token
        if current is None:
            self._set_token(self.token_storage.token_for(self.credentials, self._issuer.issue))
            return
        replacing = current.access_token
        self._set_token(self.token_storage.refresh(self.credentials, self._issuer.issue, replacing=replacing).record)

    def revoke_access_token(self) -> dict[str, Any]:
        """Revoke the current token at KIS and remove it from the store if still stored.

        Other clients notice on their next call (``EGW00121``) and converge on one
        new issuance.
        """
        held = self._assigned or self._token
        if held is None:
            raise NoTokenError("this client holds no token to revoke")
        revoked = held.access_token
        answer = self._issuer.revoke(revoked)
        self._invalidate(revoked)
        return answer

    def _invalidate(self, access_token: str) -> bool:
        return self.token_storage.invalidate_token(self.credentials.api_key, self.credentials.secret(), access_token)

    def _set_token(self, record: TokenRecord) -> None:
        with self._token_lock:
            self._token = record
            self._assigned = None

    @property
    def access_token(self) -> str | None:
        """``"Bearer <token>"``, the authorization sent now (0.6.1's attribute); None while there is none."""
        record = self._assigned or self._token
        return record.authorization if record is not None else None

    @access_token.setter
    def access_token(self, value: str | None) -> None:
        """Send this token from now on (0.6.1 code assigns ``"Bearer <token>"``); None: the store's again.

        KIS decides whether it is good: one it rejects as dead is replaced
        through the store's single flight, as any dead token is.
        """
        if value is None:
            self._assigned = None
            return
        if not isinstance(value, str) or not value.strip():
            raise TypeError("access_token must be a non-empty string such as 'Bearer <token>', or None")
        token = value.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        now = time.time()
        self._assigned = TokenRecord(
            access_token=token,
            expires_at=now + ASSIGNED_TOKEN_LIFETIME,
            api_key=self.credentials.api_key,
            fingerprint=self.credentials.fingerprint,
            issued_at=now,
        )

    def _current_token(self) -> TokenRecord:
        """The token to send; refreshed through the store once it nears expiry.

        While the store cannot answer, the token in hand is used as long as KIS
        still accepts it (see :meth:`TokenStorage.token_for`'s ``fallback``), and
        the store is asked again only every :data:`STORE_RETRY_SECONDS`, so calls
        do not each pay a timeout meanwhile.
        """
        assigned = self._assigned
        if assigned is not None:
            return assigned  # the caller's own: KIS decides (a dead one is replaced below)
        record = self._token
        if record is None:  # construction's issue_access_token was replaced by one that kept no token
            record = self.token_storage.token_for(self.credentials, self._issuer.issue)
            self._set_token(record)
            return record
        margin = self.token_storage.refresh_margin
        if record.is_valid(margin):
            return record
        if time.monotonic() < self._store_retry_at and record.seconds_left() > LAST_RESORT_MARGIN:
            return record
        record = self.token_storage.token_for(self.credentials, self._issuer.issue, fallback=record)
        if not record.is_valid(margin):  # the store did not answer: this is a last-resort token
            self._store_retry_at = time.monotonic() + STORE_RETRY_SECONDS
        self._set_token(record)
        return record

    def _replace_dead_token(self, dead: TokenRecord) -> None:
        logger.info("KIS reports the token dead; replacing it once")
        self._invalidate(dead.access_token)
        # stale=: should the delete not have happened (a store that could not write), the
        # dead token must still not come back from the store as "valid".
        self._set_token(self.token_storage.token_for(self.credentials, self._issuer.issue, stale=dead.access_token))

    # ---------------------------------------------------------------- REST path
    def request(
        self,
        method: str,
        path: str,
        tr_id: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        tr_cont: str = "",
    ) -> dict[str, Any]:
        """Call any KIS REST endpoint and return the decoded body: the way to reach what we do not wrap yet.

        It takes the same path as every wrapped method (see :meth:`call`): the
        shared token (refreshed once if KIS reports it dead), the app key's
        per-second budget, the ``appkey``/``appsecret``/``authorization``/
        ``tr_id``/``custtype`` headers, timeouts, and the body parsed whatever
        the HTTP status.  So a call made here never issues a token of its own
        and never spends more than the budget.

        Args:
            method: ``"GET"`` for queries, ``"POST"`` for orders and the like.
            path: the endpoint's path from KIS's portal, e.g.
                ``"/uapi/domestic-stock/v1/quotations/inquire-price"``.
            tr_id: the transaction id from the portal, e.g. ``"FHKST01010100"``
                (real and mock ids differ for trading endpoints).
            params: the query string for ``GET`` (KIS's upper-case names).
            body: the JSON body for ``POST``.
            tr_cont: ``"N"`` to ask for the next page of a paged query.

        Any answer, including ``rt_cd != "0"``, is returned as the dict for the
        caller to inspect; use :meth:`call` to see the HTTP status and headers
        (``tr_cont`` for paging).  Example: the call :meth:`fetch_domestic_price`
        makes, spelled out; any endpoint of KIS's portal goes the same way with
        its own path, ``tr_id`` and parameters::

            answer = kis.request(
                "GET",
                "/uapi/domestic-stock/v1/quotations/inquire-price",
                "FHKST01010100",
                params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
            )
            if answer["rt_cd"] != "0":
                raise RuntimeError(f"{answer['msg_cd']}: {answer['msg1']}")
            price = int(answer["output"]["stck_prpr"])  # KIS sends every number as a string

        Transport failures raise :class:`~.errors.KISConnectionError`;
        ``EGW00201`` after the bounded retries raises
        :class:`~.errors.RateLimitExceededError`.
        """
        return self.call(method, path, tr_id, params=params, body=body, tr_cont=tr_cont).body

    def call(
        self,
        method: str,
        path: str,
        tr_id: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        tr_cont: str = "",
        fresh_connection: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> KISResponse:
        """Call a KIS REST endpoint through the shared path; the answer with its status and headers.

        Each try first gets the token (the store's single flight) and waits for
        its slot in the app key's per-second budget (``rate_limiter``).  A dead
        token (``EGW00121``/``EGW00123``) is replaced once and the call retried
        once; ``EGW00201`` (someone outside the limiter spent the budget) pauses
        the whole limiter briefly and is retried up to ``rate_limit_retries``
        times.  KIS acted on neither, so both retries are safe for orders too.
        A transport failure raises :class:`~.errors.KISConnectionError` (its
        ``request_sent`` says whether KIS may have the request) and is never
        retried here.  ``fresh_connection`` sends on a new connection that is
        closed afterwards; ``headers`` adds headers (``hashkey``, ``Connection``).
        """
        replaced_dead_token = False
        rate_limited = 0
        while True:
            token = self._current_token()
            self._acquire_slot()
            response = self._send(method, path, tr_id, token, params, body, tr_cont, fresh_connection, headers)
            answer = response.body
            status = response.status
            code = kis_code(answer)
            if code in DEAD_TOKEN_CODES:
                if replaced_dead_token:
                    raise KISAPIError(
                        f"KIS rejected a freshly obtained token too: {answer.get('msg1', '')} ({code})",
                        msg_cd=code,
                        msg1=answer.get("msg1"),
                        status=status,
                    )
                replaced_dead_token = True
                self._replace_dead_token(token)
                continue
            if code == PER_SECOND_LIMIT_CODE:
                self.rate_limiter.penalize(self.credentials.api_key, self.environment)
                if rate_limited >= self.rate_limit_retries:
                    raise RateLimitExceededError(
                        f"KIS per-second request limit exceeded (EGW00201) after {rate_limited} retries; "
                        "slow down or spread calls over time",
                        msg_cd=code,
                        msg1=answer.get("msg1"),
                        status=status,
                    )
                if isinstance(self.rate_limiter, NoRateLimit):  # else the limiter's pause is the backoff
                    time.sleep(RATE_LIMIT_BACKOFF * (2**rate_limited) * random.uniform(0.5, 1.5))
                rate_limited += 1
                continue
            return response

    def _send(
        self,
        method: str,
        path: str,
        tr_id: str,
        token: TokenRecord,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        tr_cont: str,
        fresh_connection: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> KISResponse:
        headers = json_headers(tr_id=tr_id, custtype="P", tr_cont=tr_cont, **(extra or {}))
        auth = CredentialHeaders(self.credentials, token.authorization)
        if fresh_connection:
            headers["Connection"] = "close"  # and the host should close it too
        session = self._session
        if fresh_connection and self._own_session:
            session = new_session(pool_size=1)  # a connection of its own, whatever the host does with keep-alive
        try:
            return exchange_json(
                session,
                method,
                self.base_url,
                path,
                name=path,
                timeout=self.timeout,
                unreachable=KISConnectionError,
                failed=MalformedResponseError,
                headers=headers,
                params=params,
                json=body,
                auth=auth,
            )
        finally:
            if session is not self._session:
                session.close()

    def _call(self, method: str, path: str, *, name: str | None = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """One HTTP call to KIS with this client's session and timeout, errors mapped for REST."""
        return request_json(
            self._session,
            method,
            self.base_url,
            path,
            name=name or path,
            timeout=self.timeout,
            unreachable=KISConnectionError,
            failed=KISAPIError,
            **kwargs,
        )

    def issue_hashkey(self, data: dict[str, Any]) -> str:
        """The ``HASH`` KIS computes for an order body (optional on order requests)."""
        headers = json_headers()
        auth = CredentialHeaders(self.credentials)
        self._acquire_slot()
        status, answer = self._call("POST", "/uapi/hashkey", name="hashkey", headers=headers, json=data, auth=auth)
        hash_value = answer.get("HASH")
        if not isinstance(hash_value, str):
            raise KISAPIError(f"hashkey answered HTTP {status} without a HASH", status=status)
        return hash_value

    # ------------------------------------------------------------------- trading
    def stream(self, *, maxsize: int | None = None, **options: Any) -> Stream:
        """A real-time stream on the app key's ONE WebSocket session, shared by every process of the store.

        ``with kis.stream() as stream: stream.subscribe(trades=["005930"]); for event in stream: ...``
        yields :class:`~.realtime.Trade`, :class:`~.realtime.OrderBook`,
        :class:`~.realtime.ExecutionNotice` and :class:`~.realtime.Gap`. The first stream of a
        process joins the app key's fleet (:mod:`.realtime.node`): the file store shares the
        session between the host's processes, a Redis store between servers, any other store
        keeps it in this process. ``options`` (``ack_timeout``, ``grace``, and the
        :class:`~.realtime.session.Session` settings) apply when this process's node is created.
        Needs the ``[realtime]`` extra when the session connects.
        """
        from .realtime.approval import issue_approval_key
        from .realtime.node import node_for
        from .realtime.owner import backend_for
        from .realtime.stream import DEFAULT_QUEUE_SIZE
        from .token.record import key_id

        credentials, base_url = self.credentials, self.base_url

        def issue() -> str:
            return issue_approval_key(base_url, credentials.api_key, credentials.secret())

        backend = backend_for(self.token_storage, self.api_key)
        node = node_for(
            backend, key_id(self.api_key), self.ws_url, issue, mock=self.mock, hts_id=self.hts_id, **options
        )
        return node.stream(maxsize=maxsize or DEFAULT_QUEUE_SIZE, hts_id=self.hts_id)

    def _trading_desk(self) -> Trading:
        """This client's trading room, made on first use (the account and host are fixed by then)."""
        if self._trading is None or self._trading.context.mock != self.mock:
            from .trading import Trading, TradingContext
            from .trading.ledger import ledger_for

            self._trading = Trading(
                TradingContext(
                    call=self.call,
                    account_prefix=self.acc_no_prefix,
                    account_suffix=self.acc_no_postfix,
                    mock=self.mock,
                    hashkey=self.issue_hashkey if self.use_hashkey else None,
                    ledger=ledger_for(self.token_storage),
                    # a slot, a token (a lead may wait out KIS's minute) and the HTTP call
                    order_seconds=self.rate_limit_wait + ORDER_TOKEN_ALLOWANCE + call_seconds(self.timeout),
                )
            )
        return self._trading

    def place_order(
        self,
        symbol: str,
        side: str,
        quantity: int,
        price: int | str | Decimal | None = None,
        *,
        market: str = "KR",
        order_type: str | None = None,
    ) -> Order:
        """Place an order; never sent twice.

        Args:
            symbol: ``005930``, or an overseas ticker such as ``AAPL``.
            side: ``"buy"`` or ``"sell"``.
            quantity: whole shares, at least 1.
            price: the limit price; ``None`` is a market order where the market has
                one (Korea), and an error overseas, where KIS has none.
            market: ``KR``; ``US`` (the exchange is looked up once per symbol) or an
                exchange code (``NASD``, ``NYSE``, ``AMEX``, ``SEHK``, ``TKSE`` ...).
            order_type: KIS's ``ORD_DVSN`` code when neither limit (``00``) nor
                market (``01``) is meant, e.g. ``"03"`` best price.

        Returns the :class:`~.trading.Order` KIS accepted.  A refusal raises an
        :class:`~.errors.OrderRejectedError` subclass; a failure that leaves the
        order possibly live raises :class:`~.errors.OrderStatusUnknown` (pass it to
        :meth:`reconcile_order`); a request that provably never left raises
        :class:`~.errors.KISConnectionError` with ``request_sent=False``.
        """
        return self._trading_desk().orders.place(symbol, side, quantity, price, market, order_type)

    def revise_order(
        self, order: Order, *, quantity: int | None = None, price: int | str | Decimal | None = None
    ) -> Order:
        """Change the price and/or quantity of what remains of ``order``; the answer is a new order number.

        ``quantity=None`` revises all that remains (read first from today's
        orders, so the returned :class:`~.trading.Order` says how much moved).
        Later revises and cancels must use the returned order.  Errors as :meth:`place_order`.
        """
        return self._trading_desk().orders.revise(order, quantity, price, cancel=False)

    def cancel_order(self, order: Order, quantity: int | None = None) -> Order:
        """Cancel ``quantity`` of what remains of ``order`` (``None``: all of it).  Errors as :meth:`place_order`."""
        return self._trading_desk().orders.revise(order, quantity, None, cancel=True)

    def reconcile_order(self, error: OrderStatusUnknown, *, settle: float = DEFAULT_SETTLE_SECONDS) -> Order | None:
        """Settle an :class:`~.errors.OrderStatusUnknown`: the :class:`~.trading.Order` KIS has, or ``None``.

        Reads today's orders (every page) and looks for the one asked for: same
        symbol, side, quantity, price (and for a revise or cancel, the same
        original order), placed within the attempt's time span.  Found: that
        order, at once.  Not found: it looks once more when ``settle`` seconds
        have passed since the failed attempt (KIS may still have been acting on
        it), and only then answers ``None``: it was not placed, and placing it
        again is safe.  Orders this process already knows are never matched
        twice; several candidates, or a match stamped later than the lookup (the
        host's clock is off), raise :class:`~.errors.AmbiguousOrderError`.
        """
        return self._trading_desk().reconcile(error, settle)

    def fetch_balance(self, market: str = "KR") -> Balance:
        """The account's :class:`~.trading.Balance` in ``market`` (``KR``, ``US`` or an exchange code).

        Every page is read (KIS answers 50 holdings a page, 20 on mock); the
        query starts over if KIS says the data changed meanwhile (``SYDB0050``).
        """
        return self._trading_desk().balance(market)

    def fetch_orders(
        self,
        start: date | datetime | str | None = None,
        end: date | datetime | str | None = None,
        *,
        market: str = "KR",
    ) -> list[OrderRecord]:
        """Orders and their fills from ``start`` to ``end`` (default today, KST), every page followed.

        Dates are ``date``, ``datetime`` or ``YYYYMMDD``.  Korean orders older
        than three months come from KIS's archive query.
        """
        return self._trading_desk().order_records(start, end, market)

    def fetch_buyable(self, symbol: str, price: int | str | Decimal | None = None, *, market: str = "KR") -> Buyable:
        """How much of ``symbol`` the account can buy at ``price`` (``None``: a market order in Korea)."""
        return self._trading_desk().buyable(symbol, price, market)

    def fetch_daily_prices(
        self,
        symbol: str,
        start: date | datetime | str,
        end: date | datetime | str | None = None,
        *,
        period: str = "D",
        adjusted: bool = True,
        market: str = "KR",
    ) -> list[Bar]:
        """OHLCV :class:`~.trading.Bar` s from ``start`` to ``end`` (default today), oldest first.

        ``period`` is ``D``, ``W``, ``M`` or ``Y`` (``Y`` in Korea only); KIS
        answers 100 bars a request, so a long range takes several requests.
        """
        return self._trading_desk().daily_prices(symbol, start, end, period=period, adjusted=adjusted, market=market)

    # --------------------------------------------------------------- quotations
    def fetch_domestic_price(self, market_code: str, symbol: str) -> dict[str, Any]:
        """Domestic stock price (주식현재가 시세), ``market_code`` usually ``"J"``."""
        return self.request(
            "GET",
            "/uapi/domestic-stock/v1/quotations/inquire-price",
            "FHKST01010100",
            params={"FID_COND_MRKT_DIV_CODE": market_code, "FID_INPUT_ISCD": symbol},
        )

    def fetch_etf_domestic_price(self, market_code: str, symbol: str) -> dict[str, Any]:
        """ETF/ETN price (real environment only at KIS)."""
        return self.request(
            "GET",
            "/uapi/etfetn/v1/quotations/inquire-price",
            "FHPST02400000",
            params={"FID_COND_MRKT_DIV_CODE": market_code, "FID_INPUT_ISCD": symbol},
        )

    def fetch_price_detail_oversea(self, symbol: str, market: str = "US") -> dict[str, Any]:
        """Overseas price detail; ``market`` is ``US`` (tries NAS, NYS, AMS) or one exchange.

        Raises :class:`~.errors.SymbolNotFoundError`, a ``ValueError`` as in 0.6.1
        ("Unable to fetch price for symbol '<symbol>' in any US exchange"), when no
        exchange tried has data for the symbol; its ``msg_cd``/``msg1`` are KIS's last answer.
        """
        answer: dict[str, Any] = {}
        for exchange in _codes_for(EXCHANGE_CODES, market):
            answer = self.request(
                "GET",
                "/uapi/overseas-price/v1/quotations/price-detail",
                "HHDFS76200200",
                params={"AUTH": "", "EXCD": exchange, "SYMB": symbol},
            )
            if has_data(answer):
                return answer
        raise SymbolNotFoundError(
            f"Unable to fetch price for symbol {symbol!r} in any {market} exchange",
            msg_cd=kis_code(answer),
            msg1=answer.get("msg1"),
        )

    def fetch_stock_info(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """Product basic info (상품기본조회); for ``US`` tries NASDAQ, NYSE, AMEX codes."""
        answer: dict[str, Any] = {}
        for product_type in _codes_for(PRODUCT_TYPE_CODES, market):
            answer = self.request(
                "GET",
                "/uapi/domestic-stock/v1/quotations/search-info",
                "CTPF1604R",
                params={"PDNO": symbol, "PRDT_TYPE_CD": product_type},
            )
            if has_data(answer):
                break
        return answer

    def fetch_search_stock_info(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """Domestic stock basic info (주식기본조회); KIS offers it for Korean stocks only."""
        if market not in ("KR", "KRX"):
            raise ConfigurationError(f"fetch_search_stock_info supports market 'KR' only, got {market!r}")
        return self.request(
            "GET",
            "/uapi/domestic-stock/v1/quotations/search-stock-info",
            "CTPF1002R",
            params={"PDNO": symbol, "PRDT_TYPE_CD": "300"},
        )

    # ------------------------------------------------------------- symbol master files
    def fetch_kospi_symbols(self, refresh: bool = False) -> Any:
        """Every KOSPI symbol as a pandas DataFrame (단축코드, 표준코드, 한글명 and the layout's columns).

        From a cache shared by every process on this host, downloaded at most once
        per KST day; ``refresh=True`` downloads again.  Needs the ``pandas`` extra.
        """
        return self._master_files().kospi(refresh=refresh)

    def fetch_kosdaq_symbols(self, refresh: bool = False) -> Any:
        """Every KOSDAQ symbol as a pandas DataFrame (see :meth:`fetch_kospi_symbols`)."""
        return self._master_files().kosdaq(refresh=refresh)

    def fetch_symbols(self, refresh: bool = False) -> Any:
        """KOSPI then KOSDAQ symbols in one DataFrame: 단축코드, 한글명, 그룹코드 and 시장 (코스피/코스닥)."""
        return self._master_files().symbols(refresh=refresh)

    def download_master_file(self, base_dir: str, file_name: str, url: str) -> None:
        """Download the zip at ``url`` and extract its ``.mst`` into ``base_dir`` (0.6.1's method).

        The archive is validated first (no path escaping ``base_dir``, size caps,
        CRC); nothing is written when it is refused (:class:`~.errors.MasterFileError`).
        """
        from .market import masters

        masters.download_master_file(self._session, base_dir, file_name, url, timeout=self.timeout)

    def parse_kospi_master(self, base_dir: str) -> Any:
        """Parse ``base_dir/kospi_code.mst`` into the KOSPI DataFrame (0.6.1's method)."""
        from .market import masters

        return masters.parse_kospi_master(base_dir)

    def parse_kosdaq_master(self, base_dir: str) -> Any:
        """Parse ``base_dir/kosdaq_code.mst`` into the KOSDAQ DataFrame (0.6.1's method)."""
        from .market import masters

        return masters.parse_kosdaq_master(base_dir)

    def _master_files(self) -> Any:
        """This client's master-file cache, built on first use (the module loads only then)."""
        if self._masters is None:
            from .market import masters

            cache_dir = self._master_cache_dir
            if cache_dir is None and not os.environ.get(masters.ENV_MASTER_CACHE_DIR):
                token_file = getattr(self.token_storage, "file_path", None)
                if isinstance(token_file, Path):
                    cache_dir = token_file.parent / "masters"  # beside the token store it shares a host with
            self._masters = masters.MasterFiles(
                self._session, base_url=self._master_url, cache_dir=cache_dir, timeout=self.timeout
            )
        return self._masters

    # ------------------------------------------------------------------ IPO schedule
    def fetch_ipo_schedule(
        self, from_date: str | None = None, to_date: str | None = None, symbol: str = ""
    ) -> dict[str, Any]:
        """IPO subscriptions (공모주 청약 일정) from ``from_date`` to ``to_date`` (``YYYYMMDD``).

        Defaults: today and today + 30 days (KST).  Real accounts only: a mock
        client, a malformed date or a reversed range raise ``ValueError``.
        """
        return ipo.fetch_ipo_schedule(self.request, mock=self.mock, from_date=from_date, to_date=to_date, symbol=symbol)

    # 0.6.1's static helpers for IPO answers; they live with the endpoint in market/ipo.py.
    parse_ipo_date_range = staticmethod(ipo.parse_ipo_date_range)
    format_ipo_date = staticmethod(ipo.format_ipo_date)
    calculate_ipo_d_day = staticmethod(ipo.calculate_ipo_d_day)
    get_ipo_status = staticmethod(ipo.get_ipo_status)
    format_number = staticmethod(ipo.format_number)

    def fetch_domestic_quote(self, symbol: str) -> DomesticQuote:
        """The product info of a Korean symbol and its price from the endpoint its class needs.

        ETFs and ETNs have their own price endpoint; everything else is priced
        as a stock.  ``kis-token price`` uses this.  Unlike the 0.6.1 methods,
        which return KIS's answer as it is, it raises
        :class:`~.errors.SymbolNotFoundError` when KIS answers the product info
        or the price with no data (an unknown symbol), and
        :class:`~.errors.KISAPIError` when KIS refuses either (``rt_cd`` not ``"0"``).
        """
        quote = self._domestic_quote(symbol)
        require_output(quote.info, symbol)
        require_output(quote.price, symbol)
        return quote

    def _domestic_quote(self, symbol: str) -> DomesticQuote:
        """:meth:`fetch_domestic_quote` without its checks: what :meth:`fetch_price` returns, as 0.6.1 did."""
        info = self.fetch_stock_info(symbol, "KR")
        output = info.get("output")
        product_class = output.get("prdt_clsf_name") if isinstance(output, dict) else None
        is_etf = product_class in ETF_CLASS_NAMES
        price = (self.fetch_etf_domestic_price if is_etf else self.fetch_domestic_price)("J", symbol)
        return DomesticQuote(info=info, price=price, is_etf=is_etf)

    def fetch_price(self, symbol: str, market: str = "KR") -> dict[str, Any]:
        """Current price: Korean stocks and ETFs (``KR``) or US stocks (``US``).

        As in 0.6.1, an unknown Korean symbol comes back as KIS's answer (blank
        fields), while an unknown US one raises :class:`~.errors.SymbolNotFoundError`
        (a ``ValueError``); :meth:`fetch_domestic_quote` raises for Korea too.
        """
        if market in ("KR", "KRX"):
            return self._domestic_quote(symbol).price
        if market == "US":
            return self.fetch_price_detail_oversea(symbol, market)
        raise ConfigurationError(f"Unsupported market type {market!r}: fetch_price takes 'KR' or 'US'")


def _mock_and_store(mock: object, token_storage: TokenStorage | None) -> tuple[bool, TokenStorage | None]:
    """The fourth argument read as 0.6.1 code (a store) or older code (``mock``) meant it."""
    if isinstance(mock, TokenStorage):
        if token_storage is not None:
            raise TypeError("KoreaInvestment got token_storage twice: as the fourth argument and as token_storage=")
        return False, mock
    if not isinstance(mock, bool):
        raise TypeError(
            "KoreaInvestment's fourth argument is mock (True or False) or a token_storage (a TokenStorage), "
            f"not {type(mock).__name__}"
        )
    return mock, token_storage


def _require_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")


def resolve_base_url(base_url: str | None, mock: bool) -> str:
    """The host to call: ``base_url``, else ``$KOREA_INVESTMENT_BASE_URL``, else KIS's real or mock host."""
    chosen = base_url or os.environ.get(ENV_BASE_URL) or (MOCK_BASE_URL if mock else REAL_BASE_URL)
    if not chosen.startswith(("https://", "http://")):
        raise ConfigurationError(f"base_url must start with https:// or http://, got {chosen!r}")
    return chosen.rstrip("/")


def _codes_for(table: dict[str, tuple[str, ...]], market: str) -> tuple[str, ...]:
    try:
        return table[market.upper()]
    except KeyError:
        raise ConfigurationError(f"unknown market {market!r}; choose one of: {', '.join(table)}") from None
