"""Reaching Redis for the token stores: the optional import, URLs, redaction, error mapping.

Kept apart from the stores so that ``redis.py`` reads as the protocol only, and
so the rules that keep a password out of every message live in one place:

- the password comes from the ``password`` argument, else the URL, else
  ``KOREA_INVESTMENT_REDIS_PASSWORD``; it goes into the URL handed to
  ``redis.from_url`` (``redis://:password@host...``, as 0.6.1 built it: its users'
  tests wrap ``from_url`` and look there), built at that call and kept by nothing
  of ours, and never appears in a location string (``redis://:***@host:port/db``);
- every redis-py connection or timeout error becomes
  :class:`~..errors.StorageUnavailableError` naming that redacted location,
  with any secret scrubbed from the underlying reason, and a command or key
  the ACL denies :class:`~..errors.StoragePermissionError` naming the fix;
- the client fails within the 3 s connect/socket timeouts: two quick retries
  with backoff (25 ms, 50 ms) on a refused or dropped connection (a restarted
  server, an idle socket a NAT closed), none on a timeout, so an unreachable
  server never costs more than one timeout.  Longer outages are the stores'
  business: they ride them out for ``outage_allowance``.  Every script the
  stores send is safe to replay.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..errors import (
    ConfigurationError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
    UnreadableKeyError,
)
from ..redaction import scrub, userinfo

ENV_REDIS_URL = "KOREA_INVESTMENT_REDIS_URL"
ENV_REDIS_PASSWORD = "KOREA_INVESTMENT_REDIS_PASSWORD"
ENV_REDIS_KEY_PREFIX = "KOREA_INVESTMENT_REDIS_KEY_PREFIX"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: How to add redis-py to this package's environment (the package index's korea-investment-stock is
#: another code base: its [redis] extra would replace this one).
INSTALL_HINT = "pip install 'redis>=4.5.0' into the same environment"
#: Seconds; a dead server fails a call within this, and an unreachable one too.
DEFAULT_SOCKET_TIMEOUT = 3.0

_SCHEMES = ("redis", "rediss", "unix")
#: Error replies of a server that is alive but cannot serve data yet: a replica that lost its
#: master mid-failover, a cluster mid-resharding, a server still loading.  Outages to ride
#: out, not failures.  ``READONLY`` is not among them: a store pointed at a replica is a
#: configuration error that must fail fast (the stress suite's read-only scenario).
_TRANSIENT_REPLIES = ("MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "NOREPLICAS")
#: A command a script ran that the ACL denies: Redis 7 answers a plain ERR with this text, not NOPERM.
_DENIED_IN_SCRIPT = "can't run this command or subcommand"
#: The server's answer to SELECT of a database it does not have.
_DB_OUT_OF_RANGE = "DB index is out of range"
#: redis-py turns most of those codes into classes and drops the code from the text.
_TRANSIENT_ERROR_CLASSES = frozenset({"MasterDownError", "ClusterDownError", "TryAgainError"})


def import_redis() -> Any:
    """The ``redis`` module, or an ``ImportError`` that says how to install it."""
    try:
        import redis
    except ImportError as exc:
        raise ImportError(
            "Redis 저장소를 사용하려면 redis 패키지가 필요합니다. "
            f"(the Redis token stores need the optional 'redis' package): {INSTALL_HINT}"
        ) from exc
    return redis


@dataclass(frozen=True)
class RedisTarget:
    """Where to connect: the URL without its password, the password, and a safe description."""

    url: str
    password: str | None
    location: str

    def __repr__(self) -> str:  # the password stays out of reprs, tracebacks and logs
        return f"RedisTarget(location={self.location!r})"

    def secrets(self) -> list[str]:
        """The password as given and as quoted into a URL: what to scrub from messages."""
        if not self.password:
            return []
        return [self.password, quote(self.password, safe="")]


def resolve_target(redis_url: str, password: str | None, environ: Mapping[str, str] | None = None) -> RedisTarget:
    """Split ``redis_url`` into a password-free URL, the effective password and a redacted location.

    ``password=""`` means "no password" and skips the environment variable.
    Raises :class:`ConfigurationError` (never echoing the URL) when it cannot be used.
    """
    env = os.environ if environ is None else environ
    if not isinstance(redis_url, str) or not redis_url.strip():
        raise ConfigurationError("redis_url must be a non-empty redis://, rediss:// or unix:// URL")
    parts = urlsplit(redis_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        got = f"{scheme}://" if scheme else "no scheme"
        raise ConfigurationError(f"redis_url must start with redis://, rediss:// or unix:// (got {got})")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    url_password = unquote(parts.password) if parts.password else None
    url_password = url_password or next((v for k, v in query if k == "password" and v), None)
    username = unquote(parts.username) if parts.username else next((v for k, v in query if k == "username"), None)
    # An explicit argument wins (even ""), then the URL, then the environment.
    effective = (password if password is not None else url_password or env.get(ENV_REDIS_PASSWORD)) or None

    hostport = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}@{hostport}" if parts.username else hostport
    clean_query = urlencode([(k, v) for k, v in query if k != "password"])
    clean_url = f"{scheme}://{netloc}{parts.path}" + (f"?{clean_query}" if clean_query else "")

    credentials = userinfo(username, bool(effective))
    db = next((v for k, v in query if k == "db"), None)
    if scheme == "unix":
        location = f"unix://{credentials}{parts.path}?db={db or 0}"
    else:
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigurationError(f"redis_url has an invalid port (scheme {scheme}://)") from None
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        db = db or parts.path.strip("/") or "0"
        location = f"{scheme}://{credentials}{host}:{port}/{db}"
    _check_database(db or "0")
    return RedisTarget(url=clean_url, password=effective, location=location)


def _check_database(db: str) -> None:
    """The database in a Redis URL must be a number: redis-py silently uses 0 for ``/abc``."""
    if not db.isascii() or not db.isdigit():
        shown = db if len(db) <= 20 and db.isprintable() else "(not shown)"
        raise ConfigurationError(
            f"the database in the Redis URL ({ENV_REDIS_URL} or redis_url=) is not a number: {shown!r}; "
            f"use redis://host:port/<n>, n from 0 to 15 by default (e.g. {DEFAULT_REDIS_URL})"
        )


def connect(target: RedisTarget, *, socket_timeout: float, socket_connect_timeout: float) -> Any:
    """A ``redis.Redis`` for ``target`` with our timeouts, retry policy and quiet handshake."""
    redis = import_redis()
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        # Replies stay bytes and are decoded by us with errors="replace": a value that is
        # not UTF-8 then reads as "not our token" instead of breaking the reply parser.
        "decode_responses": False,
        # Twice, quickly, and only when the connection was refused or dropped (an idle
        # pooled socket closed by the server or a NAT, a restart): a health-check PING
        # instead would cost one more command on every new connection.
        "retry": Retry(
            ExponentialBackoff(cap=0.05, base=0.025), 2, supported_errors=(redis.exceptions.ConnectionError,)
        ),
    }
    if not target.url.startswith("unix:"):
        kwargs["socket_keepalive"] = True
    kwargs.update(_lean_handshake(redis))
    try:
        # redis.from_url, not Redis.from_url: 0.6.1 users' tests replace it with a fakeredis factory.
        # The URL with the password is built inside the call: no local of this frame holds it.
        return redis.from_url(_url_with_password(target), **kwargs)
    except ValueError as exc:
        raise ConfigurationError(
            f"cannot use the Redis URL {target.location}: {scrub(str(exc), target.secrets())}"
        ) from None


def _url_with_password(target: RedisTarget) -> str:
    """``target.url`` with the password as its userinfo (``redis://[user]:password@host...``), quoted.

    redis-py unquotes it again; without a password the URL is returned as is.
    """
    if not target.password:
        return target.url
    parts = urlsplit(target.url)
    hostport = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:{quote(target.password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _lean_handshake(redis: Any) -> dict[str, Any]:
    """Connect with no extra commands: RESP2 (no ``HELLO``) and no ``CLIENT SETINFO``.

    A stampede opens one connection per calling thread; redis-py 8 would add three
    commands to each.  RESP2 also keeps servers older than Redis 6 working.
    """
    parameters = inspect.signature(redis.Redis.__init__).parameters
    extra: dict[str, Any] = {}
    if "protocol" in parameters:
        extra["protocol"] = 2
    if "driver_info" in parameters:
        extra["driver_info"] = None
    elif "lib_name" in parameters:
        extra.update(lib_name=None, lib_version=None)
    return extra


class ClientSecrets:
    """The password a redis-py client carries, raw and URL-quoted, read from the client when iterated.

    The stores and limiters keep this to scrub error texts, instead of keeping the
    password in an attribute of their own: only redis-py's connection settings hold it.
    """

    __slots__ = ("_client",)

    def __init__(self, client: Any) -> None:
        self._client = client

    def __iter__(self) -> Iterator[str]:
        password = _connection_kwargs(self._client).get("password")
        if isinstance(password, str) and password:
            yield password
            yield quote(password, safe="")

    def __repr__(self) -> str:
        return "ClientSecrets(<redacted>)"


def _connection_kwargs(client: Any) -> Mapping[str, Any]:
    """The connection settings of a client: its pool's, or a cluster client's node manager's."""
    for owner in (getattr(client, "connection_pool", None), getattr(client, "nodes_manager", None)):
        kwargs = getattr(owner, "connection_kwargs", None)
        if isinstance(kwargs, Mapping):
            return kwargs
    return {}


def describe_client(client: Any) -> tuple[str, ClientSecrets]:
    """A redacted location for a ready-made client, and the secrets to scrub from its errors."""
    pool = getattr(client, "connection_pool", None)
    kwargs = _connection_kwargs(client)
    secrets = ClientSecrets(client)
    username = kwargs.get("username")
    credentials = userinfo(username, any(True for _ in secrets))
    db = kwargs.get("db", 0)
    service = getattr(pool, "service_name", None)
    if isinstance(service, str):
        return f"redis+sentinel://{credentials}{service}/{db}", secrets
    if "path" in kwargs:
        return f"unix://{credentials}{kwargs['path']}?db={db}", secrets
    if "host" in kwargs:
        connection_class = getattr(pool, "connection_class", None)
        scheme = "rediss" if "SSL" in getattr(connection_class, "__name__", "") else "redis"
        return f"{scheme}://{credentials}{kwargs['host']}:{kwargs.get('port', 6379)}/{db}", secrets
    get_node = getattr(client, "get_default_node", None)
    if callable(get_node):  # redis.cluster.RedisCluster
        node = get_node()
        host, port = getattr(node, "host", "?"), getattr(node, "port", "?")
        return f"redis-cluster://{credentials}{host}:{port}", secrets
    return f"<{type(client).__name__}>", secrets


def database_out_of_range(location: str) -> str:
    """The message for a database number the server does not have (``SELECT`` failed)."""
    return (
        f"Redis at {location} has no such database (DB index is out of range): Redis has 16 databases (0-15) "
        f"by default (`databases` in redis.conf); pick one in range in {ENV_REDIS_URL} (redis://host:port/<n>)"
    )


def is_database_out_of_range(exc: BaseException) -> bool:
    """True for the server's refusal of a database number it does not have."""
    return _DB_OUT_OF_RANGE in str(exc)


@contextlib.contextmanager
def translated_errors(location: str, action: str, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Turn redis-py errors into ours: unreachable -> ``StorageUnavailableError``, others -> ``StorageError``.

    The original exception is not chained: its text is re-stated, scrubbed.
    """
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        reason = scrub(str(exc) or type(exc).__name__, secrets)
        if isinstance(exc, redis.exceptions.AuthenticationError):
            hint = "check the password (KOREA_INVESTMENT_REDIS_PASSWORD) and ACL user"
        elif location.startswith("rediss://"):
            hint = (
                f"the URL asks for TLS (rediss://): a server without TLS never completes the TLS handshake, so "
                f"use redis:// for a plain server, or its TLS port (tls-port); check {ENV_REDIS_URL}"
            )
        else:
            hint = f"check {ENV_REDIS_URL} and that the server is up"
        raise StorageUnavailableError(
            f"cannot reach Redis at {location} while {action}: {reason} ({type(exc).__name__}); {hint}"
        ) from None
    except redis.exceptions.ResponseError as exc:
        reason = scrub(str(exc) or type(exc).__name__, secrets)
        if isinstance(exc, redis.exceptions.NoPermissionError) or _DENIED_IN_SCRIPT in reason:
            raise StoragePermissionError(
                f"Redis at {location} denied permission while {action}: {reason} ({type(exc).__name__}); "
                "grant the Redis user the commands and keys of the minimal Redis ACL "
                "(docs/token-stores.md, 'The minimal Redis ACL')"
            ) from None
        if _DB_OUT_OF_RANGE in reason:
            raise ConfigurationError(database_out_of_range(location)) from None
        if reason.startswith(_TRANSIENT_REPLIES) or type(exc).__name__ in _TRANSIENT_ERROR_CLASSES:
            raise StorageUnavailableError(
                f"Redis at {location} cannot serve us right now while {action}: {reason} "
                f"({type(exc).__name__}); a failover or a restart is under way"
            ) from None
        kind = UnreadableKeyError if reason.startswith("WRONGTYPE") else StorageError
        raise kind(f"Redis at {location} failed while {action}: {reason} ({type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise UnreadableKeyError(
            f"Redis at {location} answered bytes that are not UTF-8 while {action} (the client decodes responses)"
        ) from None
    except redis.exceptions.RedisError as exc:
        reason = scrub(str(exc) or type(exc).__name__, secrets)
        raise StorageError(f"Redis at {location} failed while {action}: {reason} ({type(exc).__name__})") from None


def text(value: Any) -> str:
    """A reply value as ``str``, whether the client decodes responses or not."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
