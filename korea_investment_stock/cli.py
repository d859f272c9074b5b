"""``python -m korea_investment_stock`` (also ``kis-token``): see and manage the shared token.

Commands::

    token status     what the store holds: backend, location, expiry (KST), time left, masked token
    token refresh    force one single-flight re-issue
    token revoke     revoke the stored token at KIS and remove it from the store
    token clear      remove the stored token from the store (KIS is not told)
    health           storage round trip and KIS host reachability
    price SYMBOL     the current price of one symbol (--market KR|US)
    demo             stampede a fake KIS server and count tokenP calls

Credentials come from KOREA_INVESTMENT_API_KEY, KOREA_INVESTMENT_API_SECRET and
KOREA_INVESTMENT_ACCOUNT_NO; the store from KOREA_INVESTMENT_TOKEN_STORAGE
(file or redis) and its variables; the host from KOREA_INVESTMENT_BASE_URL,
--base-url or --mock.

Exit status: 0 success; 1 the command ran and failed (KIS refused, storage or
host unreachable, demo broke its promise); 2 bad usage or configuration;
3 no (usable) token stored, for ``token status`` and ``token revoke``;
130 interrupted.  Errors are one line on stderr (and a JSON document on stdout
with --json).  No command prints the app secret, a full token or a password.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from . import admin
from .errors import ConfigurationError, KoreaInvestmentError, StorageError
from .token.issuer import DEFAULT_TOKEN_TIMEOUT, TokenIssuer
from .token.record import mask_token
from .token.redis_connect import ENV_REDIS_KEY_PREFIX, ENV_REDIS_PASSWORD, ENV_REDIS_URL
from .token.storage import TokenStorage

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_TOKEN = 3
EXIT_INTERRUPTED = 130

PROG = "kis-token"


class _UsageError(Exception):
    """Bad command-line input found after parsing (exit 2)."""


# -------------------------------------------------------------------------------------------- output
class _Output:
    """Prints human text or one JSON document, and errors as one line on stderr."""

    def __init__(self, as_json: bool, secrets: Sequence[str]) -> None:
        self.as_json = as_json
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """Belt and braces: no message reaches the terminal with a known secret in it."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def result(self, command: str, ok: bool, data: Mapping[str, Any], lines: Sequence[str]) -> None:
        if self.as_json:
            document = {"command": command, "ok": ok, **data}
            print(self.scrub(json.dumps(document, ensure_ascii=False)))
        else:
            for line in lines:
                print(self.scrub(line))

    def error(self, command: str, message: str, code: int) -> int:
        message = self.scrub(" ".join(message.split()))  # one line, whatever the exception said
        print(f"{PROG} {command}: error: {message}", file=sys.stderr)
        if self.as_json:
            print(
                json.dumps({"command": command, "ok": False, "error": message, "exit_code": code}, ensure_ascii=False)
            )
        return code


def _known_secrets(environ: Mapping[str, str]) -> list[str]:
    found = [environ.get(admin.ENV_API_SECRET, ""), environ.get(ENV_REDIS_PASSWORD, "")]
    url = environ.get(ENV_REDIS_URL, "")
    if url:
        try:
            parts = urlsplit(url)
            password = parts.password
            query = parse_qsl(parts.query)
        except ValueError:
            password, query = None, []
        if password:
            found += [password, unquote(password)]
        found += [value for key, value in query if key == "password"]
    return [s.strip() for s in found if s and s.strip()]


# ------------------------------------------------------------------------------------------- helpers
def _storage(args: argparse.Namespace) -> TokenStorage:
    """The store from the usual variables; ``--key-prefix`` overrides ``KOREA_INVESTMENT_REDIS_KEY_PREFIX``."""
    from .token.factory import ENV_STORAGE, storage_from_env

    environ: dict[str, str] = dict(os.environ)
    try:
        if args.key_prefix is not None:
            if (environ.get(ENV_STORAGE) or "file").strip().lower() != "redis":
                raise _UsageError(f"--key-prefix applies to the redis storage only (set {ENV_STORAGE}=redis)")
            environ[ENV_REDIS_KEY_PREFIX] = args.key_prefix
        return storage_from_env(environ)
    except ImportError as exc:
        raise ConfigurationError(
            f"the redis token storage needs the redis package ({exc.name}): pip install 'korea-investment-stock[redis]'"
        ) from None


def _base_url(args: argparse.Namespace) -> str:
    from .client import _resolve_base_url

    return _resolve_base_url(args.base_url, args.mock)


def _timeout(args: argparse.Namespace) -> tuple[float, float]:
    if args.timeout is None:
        return DEFAULT_TOKEN_TIMEOUT
    if args.timeout <= 0:
        raise _UsageError("--timeout must be a positive number of seconds")
    return (min(DEFAULT_TOKEN_TIMEOUT[0], args.timeout), args.timeout)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def _table(rows: Sequence[tuple[str, object]]) -> list[str]:
    width = max(len(label) for label, _ in rows) + 2
    return [f"{label + ':':<{width}}{value}" for label, value in rows]


# ------------------------------------------------------------------------------------------ commands
def _token_status(args: argparse.Namespace, out: _Output) -> int:
    creds = admin.Credentials.from_env()
    status = admin.token_status(_storage(args), creds)
    rows: list[tuple[str, object]] = [
        ("backend", status.backend),
        ("location", status.location),
        ("app key", status.app_key),
        ("fingerprint", status.fingerprint),
    ]
    if status.present:
        left = status.seconds_left or 0
        state = {"fresh": "valid", "stale": "valid, inside the refresh margin", "expired": "EXPIRED"}[status.state]
        rows += [
            ("token", status.token),
            ("state", state),
            ("expires", f"{status.expires_kst} KST"),
            ("time left", _duration(left) if left > 0 else f"expired {_duration(-left)} ago"),
            ("stored at", f"{status.issued_kst} KST"),
        ]
    else:
        rows += [("token", "none stored for this app key and secret")]
    out.result("token status", status.usable, status.to_dict(), _table(rows))
    return EXIT_OK if status.usable else EXIT_NO_TOKEN


def _token_refresh(args: argparse.Namespace, out: _Output) -> int:
    creds = admin.Credentials.from_env()
    storage = _storage(args)
    # Say why it waits, if KIS answers EGW00133 (one issuance per minute).
    logging.getLogger("korea_investment_stock.token.storage").setLevel(logging.INFO)
    if args.deadline is not None:
        if args.deadline < 0:
            raise _UsageError("--deadline must be >= 0 seconds")
        storage.issue_deadline = float(args.deadline)
    with requests.Session() as http:
        issuer = TokenIssuer(http, _base_url(args), creds.api_key, creds.api_secret, _timeout(args))
        result = admin.refresh_token(storage, creds, issuer)
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
        ("time left", _duration(result.seconds_left)),
        ("note", note),
    ]
    out.result("token refresh", True, result.to_dict(), _table(rows))
    return EXIT_OK


def _token_revoke(args: argparse.Namespace, out: _Output) -> int:
    creds = admin.Credentials.from_env()
    storage = _storage(args)
    with requests.Session() as http:
        issuer = TokenIssuer(http, _base_url(args), creds.api_key, creds.api_secret, _timeout(args))
        result = admin.revoke_token(storage, creds, issuer)
    rows = [
        ("revoked", result.token),
        ("at KIS", "already dead" if result.already_dead else "revoked"),
        ("store", "removed" if result.removed else "already replaced by a newer token (kept)"),
        ("note", "other processes get a new token on their next call"),
    ]
    out.result("token revoke", True, result.to_dict(), _table(rows))
    return EXIT_OK


def _token_clear(args: argparse.Namespace, out: _Output) -> int:
    creds = admin.Credentials.from_env(need_secret=False)
    storage = _storage(args)
    info = admin.describe_storage(storage)
    removed = admin.clear_token(storage, creds)
    text = "removed the stored token" if removed else "no token was stored"
    data = {
        "removed": removed,
        "backend": info.backend,
        "location": info.location,
        "app_key": mask_token(creds.api_key),
    }
    out.result("token clear", True, data, [f"{text} for {mask_token(creds.api_key)} ({info.backend}: {info.location})"])
    return EXIT_OK


def _health(args: argparse.Namespace, out: _Output) -> int:
    checks: list[admin.Check] = []
    try:
        storage: TokenStorage | None = _storage(args)
    except (ConfigurationError, StorageError) as exc:
        storage = None
        checks.append(admin.Check("storage", False, str(exc)))
    if storage is not None:
        checks.append(admin.check_storage(storage))
    base_url = _base_url(args)
    timeout = _timeout(args) if args.timeout is not None else admin.HEALTH_TIMEOUT
    checks.append(admin.check_kis(base_url, timeout))
    ok = all(check.ok for check in checks)
    lines = []
    for check in checks:
        rtt = f"{check.rtt_ms:.1f} ms" if check.rtt_ms is not None else "-"
        lines.append(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<16} {rtt:>10}  {check.detail}")
    out.result("health", ok, {"checks": [check.to_dict() for check in checks]}, lines)
    return EXIT_OK if ok else EXIT_FAILED


def _price(args: argparse.Namespace, out: _Output) -> int:
    from .client import KoreaInvestment

    creds = admin.Credentials.from_env()
    storage = _storage(args)
    with KoreaInvestment(
        creds.api_key,
        creds.api_secret,
        creds.acc_no or admin.PLACEHOLDER_ACCOUNT,
        mock=args.mock,
        token_storage=storage,
        base_url=args.base_url,
        timeout=_timeout(args),
    ) as client:
        quote = admin.price_summary(client, args.symbol, args.market)
    name = f" {quote['name']}" if quote["name"] else ""
    line = (
        f"{quote['symbol']}{name} ({quote['market']}, {quote['kind']}): {quote['price']} {quote['currency']}  "
        f"change {quote['change']} ({quote['change_pct']}%)  volume {quote['volume']}"
    )
    out.result("price", True, quote, [line])
    return EXIT_OK


def _demo(args: argparse.Namespace, out: _Output) -> int:
    from .demo import run_demo

    if args.processes < 1 or args.threads < 1:
        raise _UsageError("--processes and --threads must be at least 1")

    def progress(done: int, total: int) -> None:
        if not out.as_json and sys.stderr.isatty():
            print(f"\r  processes finished: {done}/{total}", end="", file=sys.stderr, flush=True)

    result = run_demo(
        args.processes, args.threads, storage=args.storage, redis_url=args.redis_url, on_progress=progress
    )
    summary = result.summary()
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

    demo = commands.add_parser("demo", parents=[common], help="stampede a fake KIS server and count tokenP calls")
    demo.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--threads", type=int, default=25, help="threads per process (default 25)")
    demo.add_argument("--storage", choices=("file", "redis"), default="file", help="token store (default file)")
    demo.add_argument("--redis-url", default=None, help="Redis URL for --storage redis")
    demo.set_defaults(handler=_demo, name="demo")
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=f"{PROG}: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m korea_investment_stock`` and the ``kis-token`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = _Output(args.json, _known_secrets(os.environ))
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args, out))
    except KeyboardInterrupt:
        print(f"{PROG} {args.name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _UsageError as exc:
        return out.error(args.name, str(exc), EXIT_USAGE)
    except ConfigurationError as exc:
        return out.error(args.name, str(exc), EXIT_USAGE)
    except admin.NoTokenError as exc:
        return out.error(args.name, str(exc), EXIT_NO_TOKEN)
    except KoreaInvestmentError as exc:
        return out.error(args.name, f"{exc} [{type(exc).__name__}]", EXIT_FAILED)
    except Exception as exc:  # e.g. a Redis client error: still one readable line, still scrubbed
        return out.error(args.name, f"{type(exc).__name__}: {exc}", EXIT_FAILED)
