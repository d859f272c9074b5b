"""Token administration: what ``kis-token token …``, ``health`` and ``price`` do, without argparse.

Every function takes the store, the credentials and (where KIS is called) a
:class:`~.token.issuer.TokenIssuer` explicitly, so programs and tests can use
them directly.  Nothing here returns or logs a secret or a full token: tokens
and keys come back masked, Redis URLs redacted.

- :func:`token_status` only reads: it never calls KIS and never issues.
- :func:`refresh_token` is a *forced* single-flight re-issue: it takes the
  store's issuance lock, calls tokenP once and stores the answer.  The stored
  token stays in place meanwhile, so the rest of the fleet keeps working.
- :func:`revoke_token` calls revokeP, then deletes the stored token only if it
  is still the revoked one; other processes then see ``EGW00121`` and converge
  on one new issuance.
- :func:`clear_token` forgets the stored token without telling KIS.
- :func:`check_storage` / :func:`check_kis` time one round trip each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from .client import DEAD_TOKEN_CODES, ETF_CLASS_NAMES
from .errors import ConfigurationError, KISAPIError, StorageError, TokenError, TokenIssueError
from .token.issuer import TokenIssuer
from .token.record import TokenRecord, credential_fingerprint, format_kst, mask_token
from .token.storage import TokenStorage

ENV_API_KEY = "KOREA_INVESTMENT_API_KEY"
ENV_API_SECRET = "KOREA_INVESTMENT_API_SECRET"
ENV_ACCOUNT_NO = "KOREA_INVESTMENT_ACCOUNT_NO"

#: Quotations need no account; the client still wants one, so this stands in.
PLACEHOLDER_ACCOUNT = "00000000-01"
#: How long the health probe waits for the KIS host: (connect, read) seconds.
HEALTH_TIMEOUT: tuple[float, float] = (3.05, 5.0)
FINGERPRINT_CHARS = 12


class NoTokenError(TokenError):
    """No token is stored for these credentials (``token status`` / ``token revoke``)."""


class SymbolNotFoundError(KISAPIError):
    """KIS answered, but with no data for the symbol."""


@dataclass(frozen=True)
class Credentials:
    """An app key and secret (and optionally an account) read from the environment."""

    api_key: str
    api_secret: str = field(repr=False)
    acc_no: str | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, need_secret: bool = True, need_account: bool = False
    ) -> Credentials:
        """Read ``KOREA_INVESTMENT_API_KEY`` / ``_API_SECRET`` / ``_ACCOUNT_NO``.

        Raises :class:`ConfigurationError` naming every missing variable.
        """
        env = os.environ if environ is None else environ
        api_key = (env.get(ENV_API_KEY) or "").strip()
        api_secret = (env.get(ENV_API_SECRET) or "").strip()
        acc_no = (env.get(ENV_ACCOUNT_NO) or "").strip() or None
        missing = [ENV_API_KEY] if not api_key else []
        if need_secret and not api_secret:
            missing.append(ENV_API_SECRET)
        if need_account and not acc_no:
            missing.append(ENV_ACCOUNT_NO)
        if missing:
            raise ConfigurationError(f"set {', '.join(missing)} (the KIS app credentials for this environment)")
        return cls(api_key, api_secret, acc_no)

    @property
    def fingerprint(self) -> str:
        """A short keyed fingerprint of the key/secret pair: tells two secrets apart, reveals neither."""
        if not self.api_secret:
            return ""
        return credential_fingerprint(self.api_key, self.api_secret)[:FINGERPRINT_CHARS]


# ------------------------------------------------------------------------------------------ storage
def redact_url(url: str, *, has_password: bool = False) -> str:
    """``redis://:***@host:port/db``: the URL with any user, password or ``password=`` hidden.

    ``has_password`` marks a password given elsewhere (e.g. ``KOREA_INVESTMENT_REDIS_PASSWORD``).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    hidden = has_password or parts.password is not None or parts.username is not None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if hidden:
        netloc = ":***@" + netloc
    query = urlencode(
        [(k, "***" if k.lower() in ("password", "username", "user") else v) for k, v in parse_qsl(parts.query)]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class StorageInfo:
    """Which backend holds the tokens and where (a file path or a redacted Redis URL)."""

    backend: str
    location: str


def describe_storage(storage: TokenStorage) -> StorageInfo:
    """Backend name and location of ``storage``; never includes a password."""
    from .token.file import FileTokenStorage

    if isinstance(storage, FileTokenStorage):
        return StorageInfo("file", str(storage.file_path))
    name = type(storage).__name__
    if "Redis" in name:
        location = getattr(storage, "location", None)  # the Redis stores keep it redacted
        if not isinstance(location, str):
            url = getattr(storage, "redis_url", None)
            location = redact_url(url, has_password=bool(getattr(storage, "password", None))) if url else "redis"
        prefix = getattr(storage, "key_prefix", None)
        if isinstance(prefix, str) and prefix:
            location = f"{location} (prefix {prefix})"
        return StorageInfo("redis", location)
    return StorageInfo(name, type(storage).__module__)


# ------------------------------------------------------------------------------------------- status
@dataclass(frozen=True)
class TokenStatus:
    """What the store holds for one app key, with the token masked."""

    backend: str
    location: str
    app_key: str
    fingerprint: str
    present: bool
    state: str  # "fresh", "stale" (inside the refresh margin), "expired" or "missing"
    token: str | None = None
    expires_at: float | None = None
    expires_kst: str | None = None
    seconds_left: int | None = None
    issued_kst: str | None = None

    @property
    def usable(self) -> bool:
        """True while the stored token has not expired (stale ones are still accepted by KIS)."""
        return self.state in ("fresh", "stale")

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``usable``, for ``--json`` output."""
        data = asdict(self)
        data["usable"] = self.usable
        return data


def _state(record: TokenRecord, margin: float, now: float) -> str:
    if record.is_valid(margin, now):
        return "fresh"
    return "stale" if record.seconds_left(now) > 0 else "expired"


def token_status(storage: TokenStorage, creds: Credentials, now: float | None = None) -> TokenStatus:
    """Read (never issue) the stored token for ``creds``."""
    now = time.time() if now is None else now
    info = describe_storage(storage)
    record = storage.stored_record(creds.api_key, creds.api_secret)
    common: dict[str, Any] = {
        "backend": info.backend,
        "location": info.location,
        "app_key": mask_token(creds.api_key),
        "fingerprint": creds.fingerprint,
    }
    if record is None:
        return TokenStatus(present=False, state="missing", **common)
    return TokenStatus(
        present=True,
        state=_state(record, storage.refresh_margin, now),
        token=mask_token(record.access_token),
        expires_at=record.expires_at,
        expires_kst=record.expired_text,
        seconds_left=int(record.seconds_left(now)),
        issued_kst=format_kst(record.issued_at),
        **common,
    )


# ------------------------------------------------------------------------------------------ refresh
@dataclass(frozen=True)
class RefreshResult:
    """``previous`` and ``token`` are masked; ``same_token`` when KIS answered the token it had."""

    previous: str | None
    token: str
    expires_kst: str
    seconds_left: int
    same_token: bool
    issued_by_peer: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields, for ``--json`` output."""
        return asdict(self)


def force_reissue(
    storage: TokenStorage, api_key: str, api_secret: str, issuer: TokenIssuer
) -> tuple[TokenRecord, bool]:
    """Replace the stored token through the store's single flight; return (record, issued_by_peer).

    The token seen now is the one to replace (``get_token(stale=...)``): if a
    peer stores a different valid token meanwhile, that is the refresh, and KIS
    is not called again.  The old token stays readable throughout, so other
    callers never wait on this.  Raises :class:`StorageError` when KIS issued
    a token that the store then failed to keep.
    """
    seen = storage.load_token(api_key, api_secret)
    issued: list[TokenRecord] = []

    def issue() -> TokenRecord:
        record = issuer.issue()
        issued.append(record)
        return record

    record = storage.get_token(api_key, api_secret, issue, stale=seen["access_token"] if seen else None)
    if issued and record is issued[-1]:
        stored = storage.load_token(api_key, api_secret)
        if stored is None or stored["access_token"] != record.access_token:
            raise StorageError(
                f"KIS issued a token (expires {record.expired_text} KST) but the store could not save it; "
                "check the storage with `health`"
            )
    return record, not issued


def refresh_token(storage: TokenStorage, creds: Credentials, issuer: TokenIssuer) -> RefreshResult:
    """Force one re-issue (see :func:`force_reissue`) and report it, masked."""
    before = storage.stored_record(creds.api_key, creds.api_secret)
    record, by_peer = force_reissue(storage, creds.api_key, creds.api_secret, issuer)
    return RefreshResult(
        previous=mask_token(before.access_token) if before is not None else None,
        token=mask_token(record.access_token),
        expires_kst=record.expired_text,
        seconds_left=int(record.seconds_left()),
        same_token=before is not None and before.access_token == record.access_token,
        issued_by_peer=by_peer,
    )


# ------------------------------------------------------------------------------------ revoke, clear
@dataclass(frozen=True)
class RevokeResult:
    """``already_dead`` when KIS no longer knew the token; ``removed`` when the store dropped it."""

    token: str
    already_dead: bool
    removed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The fields, for ``--json`` output."""
        return asdict(self)


def revoke_token(storage: TokenStorage, creds: Credentials, issuer: TokenIssuer) -> RevokeResult:
    """Revoke the stored token at KIS, then delete it from the store if it is still stored.

    A token KIS already treats as dead (``EGW00121``/``EGW00123``) is removed
    all the same.  Any other failure leaves the store untouched and raises.
    Raises :class:`NoTokenError` when nothing is stored.
    """
    record = storage.stored_record(creds.api_key, creds.api_secret)
    if record is None:
        raise NoTokenError("no token is stored for this app key and secret; nothing to revoke")
    already_dead = False
    try:
        answer = issuer.revoke(record.access_token)
        message = str(answer.get("message") or "revoked")
    except TokenIssueError as exc:
        if exc.code not in DEAD_TOKEN_CODES:
            raise
        already_dead = True
        message = f"KIS no longer accepts this token ({exc.code}); removing it from the store"
    removed = storage.invalidate_token(creds.api_key, creds.api_secret, record.access_token)
    return RevokeResult(mask_token(record.access_token), already_dead, removed, message)


def clear_token(storage: TokenStorage, creds: Credentials) -> bool:
    """Forget the stored token for this app key without telling KIS; True if one was there."""
    return storage.delete_token(creds.api_key, creds.api_secret)


# ------------------------------------------------------------------------------------------- health
@dataclass(frozen=True)
class Check:
    """One health probe: ``rtt_ms`` is the round trip that was timed, when there was one."""

    name: str
    ok: bool
    detail: str
    rtt_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields, for ``--json`` output."""
        return asdict(self)


def check_storage(storage: TokenStorage) -> Check:
    """Time one read of the store (a Redis PING or a token-file read), and check it is writable."""
    info = describe_storage(storage)
    name = f"storage ({info.backend})"
    probe = getattr(storage, "health_check", None)
    started = time.perf_counter()
    try:
        if callable(probe):
            result = probe()
            rtt = (time.perf_counter() - started) * 1000.0
            ok, detail, rtt = _interpret_probe(result, rtt)
            return Check(name, ok, f"{info.location}: {detail}", rtt)
        from .token.file import FileTokenStorage

        if isinstance(storage, FileTokenStorage):
            return _check_file(storage, name, info.location)
        storage.load_token("health-check", "health-check")
        rtt = (time.perf_counter() - started) * 1000.0
        return Check(name, True, f"{info.location}: readable", round(rtt, 2))
    except Exception as exc:
        return Check(name, False, f"{info.location}: {type(exc).__name__}: {exc}")


def _interpret_probe(result: object, rtt_ms: float) -> tuple[bool, str, float]:
    """Make sense of a backend's ``health_check()`` answer (``RedisHealth``, a dict or a bool)."""
    if isinstance(result, bool):
        return result, "reachable" if result else "unreachable", round(rtt_ms, 2)

    def get(name: str) -> object:
        return result.get(name) if isinstance(result, Mapping) else getattr(result, name, None)

    reachable, flag = get("reachable"), get("ok")
    ok = bool(flag) if reachable is None and flag is not None else reachable is not False
    measured = get("round_trip_ms")
    if isinstance(measured, int | float) and not isinstance(measured, bool):
        rtt_ms = float(measured)
    error = get("error")
    detail = "reachable (PING)" if ok else str(error or "unreachable")
    return ok, detail, round(rtt_ms, 2)


def _check_file(storage: Any, name: str, location: str) -> Check:
    path = storage.file_path
    started = time.perf_counter()
    snapshot = storage._read_file()
    rtt = round((time.perf_counter() - started) * 1000.0, 2)
    directory = path.parent
    probe_dir = directory
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        return Check(name, False, f"{location}: directory {probe_dir} is not writable", rtt)
    if snapshot.problem:
        return Check(name, False, f"{location}: {snapshot.problem}", rtt)
    count = len(snapshot.records)
    if not path.exists():
        detail = "no token file yet (created on first issuance)"
    else:
        detail = f"readable, {count} app key{'s' if count != 1 else ''}"
    return Check(name, True, f"{location}: {detail}", rtt)


def check_kis(
    base_url: str, timeout: tuple[float, float] = HEALTH_TIMEOUT, session: requests.Session | None = None
) -> Check:
    """Is the KIS host answering HTTP at all?  Any status counts; no credentials are sent."""
    name = "kis host"
    own = session is None
    http = requests.Session() if session is None else session
    started = time.perf_counter()
    try:
        response = http.get(base_url.rstrip("/") + "/", timeout=timeout, allow_redirects=False)
        rtt = round((time.perf_counter() - started) * 1000.0, 2)
        response.close()
        return Check(name, True, f"{base_url}: HTTP {response.status_code}", rtt)
    except requests.Timeout:
        return Check(name, False, f"{base_url}: no answer within {timeout[1]:g}s")
    except requests.RequestException as exc:
        return Check(name, False, f"{base_url}: cannot connect ({type(exc).__name__})")
    finally:
        if own:
            http.close()


# -------------------------------------------------------------------------------------------- price
def price_summary(client: Any, symbol: str, market: str = "KR") -> dict[str, Any]:
    """The current price of ``symbol`` as a small flat dict (strings, as KIS sends them).

    ``client`` is a :class:`~.client.KoreaInvestment`.  Raises
    :class:`SymbolNotFoundError` when KIS has no data for the symbol and
    :class:`KISAPIError` when it answers ``rt_cd != "0"``.
    """
    market = market.upper()
    if market in ("KR", "KRX"):
        info = client.fetch_stock_info(symbol, "KR")
        info_out = _output(info, symbol)
        is_etf = info_out.get("prdt_clsf_name") in ETF_CLASS_NAMES
        answer = (client.fetch_etf_domestic_price if is_etf else client.fetch_domestic_price)("J", symbol)
        out = _output(answer, symbol)
        return {
            "symbol": symbol,
            "market": "KR",
            "name": info_out.get("prdt_abrv_name") or info_out.get("prdt_name") or "",
            "kind": "ETF" if is_etf else "stock",
            "price": out.get("stck_prpr", ""),
            "change": out.get("prdy_vrss", ""),
            "change_pct": out.get("prdy_ctrt", ""),
            "volume": out.get("acml_vol", ""),
            "currency": "KRW",
        }
    answer = client.fetch_price_detail_oversea(symbol, market)
    out = _output(answer, symbol)
    rsym = out.get("rsym", "")
    last, base = out.get("last", ""), out.get("base", "")
    try:
        change = f"{float(last) - float(base):.4f}"
    except ValueError:
        change = ""
    return {
        "symbol": symbol,
        "market": rsym[1:4] if len(rsym) > 4 else market,
        "name": "",
        "kind": out.get("etyp_nm") or "stock",
        "price": last,
        "change": change,
        "change_pct": out.get("t_xrat", ""),
        "volume": out.get("tvol", ""),
        "currency": out.get("curr", "USD"),
    }


def _output(answer: dict[str, Any], symbol: str) -> dict[str, str]:
    if answer.get("rt_cd") != "0":
        raise KISAPIError(
            f"KIS answered {answer.get('msg_cd', '?')}: {answer.get('msg1', '')}".strip(),
            msg_cd=answer.get("msg_cd"),
            msg1=answer.get("msg1"),
        )
    output = answer.get("output")
    if not isinstance(output, dict) or not any(output.values()):
        raise SymbolNotFoundError(f"KIS has no data for {symbol!r} (unknown symbol, or wrong --market)")
    return {str(k): str(v) for k, v in output.items()}
