"""The ``kis-token`` parser and its commands; :mod:`korea_investment_stock.cli` lists them."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence

from .. import __version__
from ..errors import (
    ConfigurationError,
    KoreaInvestmentError,
    LimiterStoreUnavailable,
    NoTokenError,
    StorageError,
    UsageError,
)
from ..limits import NOMINAL_RATES, NoRateLimit, RateLimiter, limiter_for
from ..limits.budget import ENV_RATE_LIMIT
from ..redaction import redact_url
from ..token.issuer import DEFAULT_TOKEN_TIMEOUT, TokenIssuer
from ..token.record import key_id, mask_token
from ..token.redis_connect import ENV_REDIS_URL
from ..token.status import StorageHealth, TokenState
from ..token.storage import TokenStorage
from ..transport import new_session, probe_host
from ..validation import check_seconds
from . import tokens
from .environment import (
    ENV_API_KEY,
    PLACEHOLDER_ACCOUNT,
    EnvironmentCredentials,
    known_secrets,
    storage_for,
)
from .output import PROG, Output, duration, table

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_TOKEN = 3
EXIT_INTERRUPTED = 130

#: How long the health probe waits for the KIS host: (connect, read) seconds.
HEALTH_TIMEOUT: tuple[float, float] = (3.05, 5.0)


# ------------------------------------------------------------------------------------------- helpers
def _storage(args: argparse.Namespace) -> TokenStorage:
    return storage_for(args.key_prefix)


def _base_url(args: argparse.Namespace) -> str:
    from ..client import resolve_base_url

    return resolve_base_url(args.base_url, args.mock)


def _timeout(args: argparse.Namespace, default: tuple[float, float] = DEFAULT_TOKEN_TIMEOUT) -> tuple[float, float]:
    if args.timeout is None:
        return default
    read = check_seconds("--timeout", args.timeout, positive=True)
    return (min(default[0], read), read)


# ------------------------------------------------------------------------------------------ commands
def _token_status(args: argparse.Namespace, out: Output) -> int:
    env = EnvironmentCredentials.from_env()
    status = _storage(args).status(env.api_key, env.api_secret)
    rows: list[tuple[str, object]] = [
        ("backend", status.backend),
        ("location", status.location),
        ("app key", status.app_key),
        ("fingerprint", status.fingerprint),
    ]
    if status.present:
        left = status.seconds_left or 0
        state = {
            TokenState.FRESH: "valid",
            TokenState.STALE: "valid, inside the refresh margin",
            TokenState.EXPIRED: "EXPIRED",
        }[status.state]
        rows += [
            ("token", status.token),
            ("state", state),
            ("expires", f"{status.expires_kst} KST"),
            ("time left", duration(left) if left > 0 else f"expired {duration(-left)} ago"),
            ("stored at", f"{status.issued_kst} KST"),
        ]
    else:
        rows += [("token", "none stored for this app key and secret")]
    out.result("token status", status.usable, status.to_dict(), table(rows))
    return EXIT_OK if status.usable else EXIT_NO_TOKEN


def _token_refresh(args: argparse.Namespace, out: Output) -> int:
    credentials = EnvironmentCredentials.from_env().credentials
    storage = _storage(args)
    # Say why it waits, if KIS answers EGW00133 (one issuance per minute).
    logging.getLogger("korea_investment_stock.token.storage").setLevel(logging.INFO)
    if args.deadline is not None:
        storage.issue_deadline = check_seconds("--deadline", args.deadline)
    with new_session(pool_size=1) as http:
        issuer = TokenIssuer(http, _base_url(args), credentials, timeout=_timeout(args))
        result = tokens.refresh_token(storage, credentials, issuer)
    if result.issued_by_peer:
        note = "another process refreshed it first; using its token"
    elif result.same_token:
        note = "KIS answered the same token (it does so within 6 hours of an issuance); `token revoke` forces a new one"
    else:
        note = "new token stored"
    rows = [
        ("token", result.token),
        ("previous", result.previous or "none"),
        ("expires", f"{result.expires_kst} KST"),
        ("time left", duration(result.seconds_left)),
        ("note", note),
    ]
    out.result("token refresh", True, result.to_dict(), table(rows))
    return EXIT_OK


def _token_revoke(args: argparse.Namespace, out: Output) -> int:
    credentials = EnvironmentCredentials.from_env().credentials
    storage = _storage(args)
    with new_session(pool_size=1) as http:
        issuer = TokenIssuer(http, _base_url(args), credentials, timeout=_timeout(args))
        result = tokens.revoke_token(storage, credentials, issuer)
    rows = [
        ("revoked", result.token),
        ("at KIS", "already dead" if result.already_dead else "revoked"),
        ("store", "removed" if result.removed else "already replaced by a newer token (kept)"),
        ("note", "other processes get a new token on their next call"),
    ]
    out.result("token revoke", True, result.to_dict(), table(rows))
    return EXIT_OK


def _token_clear(args: argparse.Namespace, out: Output) -> int:
    env = EnvironmentCredentials.from_env(need_secret=False)
    storage = _storage(args)
    store = storage.describe()
    removed = storage.delete_token(env.api_key, env.api_secret)  # KIS is not told
    text = "removed the stored token" if removed else "no token was stored"
    data = {
        "removed": removed,
        "backend": store.backend,
        "location": store.location,
        "app_key": mask_token(env.api_key),
    }
    out.result("token clear", True, data, [f"{text} for {mask_token(env.api_key)} ({store.backend}: {store.location})"])
    return EXIT_OK


def _health(args: argparse.Namespace, out: Output) -> int:
    checks: list[dict[str, object]] = []
    timeout = _timeout(args, HEALTH_TIMEOUT)
    try:
        storage: TokenStorage | None = _storage(args)
    except (ConfigurationError, StorageError) as exc:
        if isinstance(exc, UsageError):
            raise
        storage = None
        checks.append(_check("storage", StorageHealth(False, None, "", error=str(exc))))
    if storage is not None:
        try:  # a store that refuses to work here is one failed check, not the end of the report
            store = storage.describe()
            checks.append(_check(f"storage ({store.backend})", storage.health_check(), store.location))
        except StorageError as exc:
            checks.append(_check("storage", StorageHealth(False, None, "", error=str(exc))))
        known = os.environ.get(ENV_API_KEY, "").strip() or None
        checks.append(_limit_check(limiter_for(storage), "mock" if args.mock else "real", known))
    host = probe_host(_base_url(args), timeout)
    checks.append({"name": "kis host", "ok": host.reachable, "detail": host.detail, "rtt_ms": host.round_trip_ms})
    ok = all(check["ok"] for check in checks)
    lines = []
    for check in checks:
        rtt = f"{check['rtt_ms']:.1f} ms" if isinstance(check["rtt_ms"], float) else "-"
        lines.append(f"{'ok  ' if check['ok'] else 'FAIL'}  {check['name']!s:<16} {rtt:>10}  {check['detail']}")
    out.result("health", ok, {"checks": checks}, lines)
    return EXIT_OK if ok else EXIT_FAILED


def _limit_check(limiter: RateLimiter, environment: str, api_key: str | None) -> dict[str, object]:
    """The REST budget: which limiter, what rate, and whether its store can really be used now.

    The probe writes and reads the store as an acquire would (the app key's
    budget when known), so a denied command or an unsafe state file shows here,
    not only as a quiet fallback in the processes that spend the budget.
    """
    check: dict[str, object] = {"name": "rate limit", "backend": limiter.backend, "environment": environment}
    if isinstance(limiter, NoRateLimit):
        return {**check, "ok": True, "detail": f"off ({ENV_RATE_LIMIT}=off)", "rtt_ms": None, "rate": None}
    rate = limiter.rate_for(environment)
    where = f"{limiter.describe()}: {rate:g}/s {environment} (KIS allows {NOMINAL_RATES[environment]:g}/s)"
    started = time.perf_counter()
    try:
        limiter.probe(environment, api_key)
    except LimiterStoreUnavailable as exc:
        problem = "PERMISSION DENIED" if exc.denied else "CANNOT BE USED"
        detail = f"{where}, {problem}: {exc}; meanwhile callers keep to a fallback share"
        return {**check, "ok": False, "detail": detail, "rtt_ms": None, "rate": rate}
    rtt = round((time.perf_counter() - started) * 1000.0, 2)
    return {**check, "ok": True, "detail": f"{where}, shared", "rtt_ms": rtt, "rate": rate}


def _limit(args: argparse.Namespace, out: Output) -> int:
    limiter = limiter_for(_storage(args))
    known = os.environ.get(ENV_API_KEY, "").strip()
    known_id = key_id(known) if known else None
    rates = ", ".join(f"{limiter.rate_for(env):g}/s {env}" for env in ("real", "mock"))
    lines = [f"budget: {limiter.describe()} ({rates}; KIS allows 20/s real, 2/s mock)"]
    budgets: list[dict[str, object]] = []
    for bucket in limiter.buckets():
        usage = limiter.usage_of(bucket)
        ident, _, environment = bucket.rpartition(".")
        app_key = mask_token(known) if ident == known_id else None
        budgets.append(
            {
                "key_id": ident[:12],
                "app_key": app_key,
                "environment": environment,
                "rate": usage.rate,
                "used_last_second": usage.used_last_second,
                "share_used": round(usage.share_used, 3),
                "backlog_seconds": round(usage.backlog_seconds, 3),
            }
        )
        lines.append(
            f"{app_key or 'key id ' + ident[:12]} {environment}: {usage.used_last_second} of {usage.rate:g} in the "
            f"last second ({usage.share_used * 100:.0f}%), next free slot in {usage.backlog_seconds:.2f}s"
        )
    if not budgets:
        lines.append(f"off ({ENV_RATE_LIMIT}=off)" if isinstance(limiter, NoRateLimit) else "no budget used yet")
    out.result("limit", True, {"backend": limiter.backend, "location": limiter.describe(), "budgets": budgets}, lines)
    return EXIT_OK


def _check(name: str, health: StorageHealth, location: str = "") -> dict[str, object]:
    """One health line for JSON and text: the store's own probe, as it reported itself."""
    seen = health.detail if health.reachable else health.error or "unreachable"
    detail = f"{location}: {seen}" if location else seen
    rtt = round(health.round_trip_ms, 2) if health.round_trip_ms is not None else None
    return {"name": name, "ok": health.reachable, "detail": detail, "rtt_ms": rtt}


def _price(args: argparse.Namespace, out: Output) -> int:
    from ..client import KoreaInvestment
    from .price import price_summary

    env = EnvironmentCredentials.from_env()
    storage = _storage(args)
    with KoreaInvestment(
        env.api_key,
        env.api_secret,
        env.acc_no or PLACEHOLDER_ACCOUNT,
        mock=args.mock,
        token_storage=storage,
        base_url=args.base_url,
        timeout=_timeout(args),
    ) as client:
        quote = price_summary(client, args.symbol, args.market)
    name = f" {quote['name']}" if quote["name"] else ""
    line = (
        f"{quote['symbol']}{name} ({quote['market']}, {quote['kind']}): {quote['price']} {quote['currency']}  "
        f"change {quote['change']} ({quote['change_pct']}%)  volume {quote['volume']}"
    )
    out.result("price", True, quote, [line])
    return EXIT_OK


def _demo(args: argparse.Namespace, out: Output) -> int:
    from .demo import run_demo

    if args.processes < 1 or args.threads < 1:
        raise UsageError("--processes and --threads must be at least 1")

    def progress(done: int, total: int) -> None:
        if not out.as_json and sys.stderr.isatty():
            print(f"\r  processes finished: {done}/{total}", end="", file=sys.stderr, flush=True)

    redis_url = args.redis_url or os.environ.get(ENV_REDIS_URL) or None
    with contextlib.ExitStack() as stack:
        if args.storage == "redis":
            _require_redis_package()
            if redis_url is None:  # no Redis named: a private one for the demo's duration
                from .private_redis import private_redis

                redis_url = stack.enter_context(private_redis())
        result = run_demo(args.processes, args.threads, storage=args.storage, redis_url=redis_url, on_progress=progress)
    summary = result.summary()
    if redis_url is not None:
        summary["redis_url"] = redact_url(redis_url)
    ok = result.tokenp_calls == 1 and result.errors == 0 and result.distinct_tokens == 1
    if not out.as_json and sys.stderr.isatty():
        print(file=sys.stderr)
    wait = summary["wait_ms"]
    shared = "yes" if result.distinct_tokens == 1 else f"no ({result.distinct_tokens} tokens)"
    lines = [
        f"korea-investment-stock demo: {result.processes} processes x {result.threads} threads, "
        f"one app key, {result.storage} token store, fake KIS server",
        f"callers:        {result.callers}",
        f"tokenP calls:   {result.tokenp_calls}",
        f"errors:         {result.errors}",
        f"shared token:   {shared}",
        f"waited (ms):    p50 {wait['p50']:.1f}  p95 {wait['p95']:.1f}  max {wait['max']:.1f}",
        f"wall time (s):  {result.wall_s:.2f}",
    ]
    lines += [f"error sample:   {sample}" for sample in result.error_samples]
    out.result("demo", ok, summary, lines)
    return EXIT_OK if ok else EXIT_FAILED


def _require_redis_package() -> None:
    """The Redis stores need redis-py: say how to get it before any worker starts."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--storage redis needs the redis package: ./run demo installs it by itself; otherwise "
            "pip install 'redis>=4.5.0' into this environment"
        ) from None


def _stream_status(args: argparse.Namespace, out: Output) -> int:
    from ..realtime.status import stream_status

    api_key = (os.environ.get(ENV_API_KEY) or "").strip()
    if not api_key:
        raise UsageError(f"set {ENV_API_KEY}: the session is the app key's")
    status = stream_status(_storage(args), api_key)
    age = "no session open" if status.session_age is None else duration(status.session_age)
    rows: list[tuple[str, object]] = [
        ("backend", status.backend),
        ("app key", status.app_key),
        ("owner", status.owner or "none (the next process to stream becomes owner)"),
        ("session age", age),
        ("subscriptions", f"{status.held}/{status.cap} held at KIS ({status.wanted} wanted)"),
        ("subscribers", len(status.subscribers)),
    ]
    rows += [
        (f"  {s.host} pid {s.pid}", f"{s.wants} wanted, lapses in {s.lapses_in:g}s unless renewed")
        for s in status.subscribers
    ]
    out.result("stream-status", True, status.to_dict(), table(rows))
    return EXIT_OK


# -------------------------------------------------------------------------------------------- parser
def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command; the command's copy wins when given."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=default(False), help="print one JSON document")
    common.add_argument("--mock", action="store_true", default=default(False), help="use the mock-trading host")
    common.add_argument(
        "--base-url", default=default(None), help="KIS host (default $KOREA_INVESTMENT_BASE_URL or the real host)"
    )
    common.add_argument(
        "--timeout", type=float, default=default(None), help="read timeout in seconds for KIS calls (default 10)"
    )
    common.add_argument(
        "--key-prefix",
        default=default(None),
        help="Redis key prefix of the token store (redis storage only; default korea_investment:token)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="log INFO (-v) or DEBUG (-vv) to stderr"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Korea Investment & Securities Open API: see and manage the shared access token.",
        epilog=(
            "exit status: 0 ok, 1 failed, 2 usage or configuration error, "
            "3 no usable token stored (token status, token revoke), 130 interrupted"
        ),
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = _common_options(defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="show or manage the stored access token")
    token_commands = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = token_commands.add_parser(
        "status", parents=[common], help="backend, location, expiry (KST), time left, masked token; read only"
    )
    status.set_defaults(handler=_token_status, name="token status")
    refresh = token_commands.add_parser("refresh", parents=[common], help="force one single-flight re-issue")
    refresh.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds to keep retrying while KIS answers EGW00133 (one per minute); default 70",
    )
    refresh.set_defaults(handler=_token_refresh, name="token refresh")
    revoke = token_commands.add_parser("revoke", parents=[common], help="revoke at KIS and remove from the store")
    revoke.set_defaults(handler=_token_revoke, name="token revoke")
    clear = token_commands.add_parser("clear", parents=[common], help="remove from the store (KIS is not told)")
    clear.set_defaults(handler=_token_clear, name="token clear")

    health = commands.add_parser("health", parents=[common], help="storage round trip and KIS host reachability")
    health.set_defaults(handler=_health, name="health")

    limit = commands.add_parser(
        "limit", parents=[common], help="the per-second REST budget: used in the last second, per app key"
    )
    limit.set_defaults(handler=_limit, name="limit")

    price = commands.add_parser("price", parents=[common], help="current price of one symbol")
    price.add_argument("symbol", help="e.g. 005930 (KR) or AAPL (US)")
    price.add_argument(
        "--market",
        type=str.upper,
        choices=("KR", "US", "NASDAQ", "NYSE", "AMEX"),
        default="KR",
        help="KR (default) or US (tries NASDAQ, NYSE, AMEX)",
    )
    price.set_defaults(handler=_price, name="price")

    stream_status = commands.add_parser(
        "stream-status", parents=[common], help="the app key's shared real-time session: owner, age, subscriptions"
    )
    stream_status.set_defaults(handler=_stream_status, name="stream-status")
    demo = commands.add_parser("demo", parents=[common], help="stampede a fake KIS server and count tokenP calls")
    demo.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--threads", type=int, default=25, help="threads per process (default 25)")
    demo.add_argument("--storage", choices=("file", "redis"), default="file", help="token store (default file)")
    demo.add_argument(
        "--redis-url",
        default=None,
        help="Redis URL for --storage redis (default $KOREA_INVESTMENT_REDIS_URL, else a private redis-server)",
    )
    demo.set_defaults(handler=_demo, name="demo")
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=f"{PROG}: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # urllib3 warns on the one connect retry; the error line (if it fails again) says it all.
    logging.getLogger("urllib3").setLevel(logging.ERROR if verbosity < 2 else logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m korea_investment_stock`` and the ``kis-token`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json, known_secrets(os.environ))
    _configure_logging(args.verbose)
    try:
        if args.timeout is not None:  # every command takes it; refuse NaN and infinity before any work
            check_seconds("--timeout", args.timeout, positive=True)
        return int(args.handler(args, out))
    except KeyboardInterrupt:  # Ctrl-C: one line, and with --json the error object a script reads
        return out.error(args.name, "interrupted", EXIT_INTERRUPTED)
    except ConfigurationError as exc:  # UsageError too
        return out.error(args.name, str(exc), EXIT_USAGE)
    except NoTokenError as exc:
        return out.error(args.name, str(exc), EXIT_NO_TOKEN)
    except KoreaInvestmentError as exc:
        return out.error(args.name, f"{exc} [{type(exc).__name__}]", EXIT_FAILED)
    except Exception as exc:  # e.g. a Redis client error: still one readable line, still scrubbed
        return out.error(args.name, f"{type(exc).__name__}: {exc}", EXIT_FAILED)
