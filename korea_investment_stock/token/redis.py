"""``RedisTokenStorage`` and ``LockingRedisTokenStorage``: one token for a whole fleet, through Redis.

Why two classes: :class:`RedisTokenStorage` is the 0.6.x store done right (a
hash whose expiry is set in the same Lua script as the write, no app secret,
one round trip per read); it coordinates the threads of one process only.
:class:`LockingRedisTokenStorage` adds the cross-server single flight, so a
fleet sharing an app key makes one tokenP call.  ``KOREA_INVESTMENT_TOKEN_STORAGE=redis``
builds the locking one.

The cross-server protocol (see ``token/storage.py`` for the steps around it,
and :class:`RedisLease` for the lease itself):

- **Lease.** ``SET {token}:lock <host:pid:random> NX PX 2500``, taken by a Lua
  script that first honours a failure marker for the caller's credential.
  Every key embeds the token key, hash tag included
  (``korea_investment:token:{<key id>}:lock``), so one script may touch them
  all on Redis Cluster.  A lock or marker without a TTL counts as expired.
- **Renewal.** While issuance runs a daemon thread extends the lease every
  fifth of it (0.5 s), owner-checked, for at most the issue deadline plus one
  whole tokenP call and a slack, and only while the lease object lives.  A
  holder killed with SIGKILL stops renewing, so the others wait at most one
  lease (2.5 s) before one of them takes over.  The lease is short because
  the fence, not the lease, protects against a paused holder.  The holder
  asks the lease before every tokenP call.
- **Fenced save.** Each lease gets a generation above every earlier one and
  at least the server clock in ms, so it never goes backwards (not after a
  delete, an eviction, ``FLUSHALL`` or a failover).  The token slot keeps a
  fence: the highest generation that wrote or invalidated it.  One script
  stores the token if we still hold the lease, or if our generation is above
  the fence, never over a token that expires later; then releases the lease
  and publishes "ready".  A replayed save that already succeeded says so.
- **Followers** (one per process, thanks to the in-process flight) subscribe
  to the ready channel *before* re-checking, then wait for a message, each
  wait bounded by the lease's remaining TTL and a 0.5 s poll.  A wake-up costs
  O(1) commands.  The subscription lives on the waiting thread for the length
  of the wait: nothing persists, so nothing can leak across ``os.fork()``.
- **Failure.** A leader whose issuance failed releases the lease and leaves a
  marker for its credential (``{token}:failed:<fingerprint>``) for
  ``failure_backoff`` seconds (3 s), so nobody calls tokenP meanwhile.  Callers
  elsewhere with the same credential who meet it raise at once only when the
  failure would be theirs too (KIS rejected the key or secret); otherwise (the
  leader's own deadline ran out, KIS answered 500) they wait the marker out as
  they would a held lease, then try themselves, within their own deadline.  A
  server with another (say, rotated) secret is not affected.
- **Outages.** Every store operation of a caller rides out
  :class:`~..errors.StorageUnavailableError` (see ``outage_allowance``); a
  token whose save failed is used by its process and stored by a background
  thread as soon as Redis answers, its lease kept meanwhile.
- **Hostile values heal.** A key of the wrong type, bytes that are not UTF-8 or
  a hash no reader accepts under our names reads as "no token" (one warning)
  and the next save replaces it, as the file store does with a damaged file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

from ..errors import (
    ConfigurationError,
    InvalidCredentialsError,
    LeaseLost,
    StorageError,
    StorageUnavailableError,
    TokenIssueError,
    TokenRateLimitedError,
    TokenWaitTimeout,
    UnreadableKeyError,
)
from ..redaction import scrub
from ..validation import check_seconds
from . import redis_scripts as lua
from .credentials import Credentials
from .hostcopy import HostCopy, host_copy_path
from .lease import ISSUE, Acquired, HeldLease, IssuanceLease, LongWait, ProcessLease, SaveOutcome, check_purpose
from .record import TokenRecord, key_id, token_digest
from .redis_connect import (
    DEFAULT_REDIS_URL,
    DEFAULT_SOCKET_TIMEOUT,
    ENV_REDIS_KEY_PREFIX,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
    ClientSecrets,
    connect,
    database_out_of_range,
    describe_client,
    import_redis,
    is_database_out_of_range,
    resolve_target,
    text,
    translated_errors,
)
from .status import StorageDescription, StorageHealth
from .storage import DEFAULT_CALL_SECONDS, HOLD_SLACK, RecordTokenStorage, scope_number

logger = logging.getLogger(__name__)

#: 0.6.1's words for an unreachable server at construction ("connecting to the Redis server failed").
CONNECT_FAILED = "Redis 서버 연결 실패"
DEFAULT_KEY_PREFIX = "korea_investment:token"
#: How long a crashed holder can stall the fleet.  Short, and renewed often
#: (:data:`RENEWALS_PER_LEASE` times per lease) while issuance runs: a live holder
#: keeps it through any tokenP call, and the fence, not the lease, stops a
#: holder that was paused past it from overwriting a newer token.
DEFAULT_LEASE_SECONDS = 2.5
#: Renewals per lease length: a renewal may be late or fail this many times minus
#: one (a GC pause, a Redis blip) before the lease lapses under a live holder.
RENEWALS_PER_LEASE = 5
#: How long a failed issuance stops other servers from calling tokenP.  Long
#: enough to absorb the fleet's simultaneous retries, short enough that a
#: transient failure does not keep a caller from trying again soon.
DEFAULT_FAILURE_BACKOFF = 3.0
#: Upper bound of one follower wait between two looks at the lease.
MAX_POLL_INTERVAL = 0.5
#: The generation counter and the fence outlive any token (24 h).  Should they
#: vanish all the same, generations still start from the server's clock.
GENERATION_TTL_MS = 2 * 86400 * 1000
#: Hex characters of the credential fingerprint in a failure marker's name.
MARKER_ID_CHARS = 16
#: A held lease (:meth:`RedisTokenStorage.purpose_lease`) stops trusting itself this long before it
#: could lapse without a confirmed renewal: a slow reply, clock drift between us and the server.
DEFAULT_FENCE_MARGIN = 0.5
#: A held lease is renewed for at most this long after its holder last said it is alive (``keep``).
DEFAULT_HOLD_SECONDS = 30.0

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_LEASE_SECONDS",
    "ENV_REDIS_KEY_PREFIX",
    "ENV_REDIS_PASSWORD",
    "ENV_REDIS_URL",
    "LockingRedisTokenStorage",
    "RedisHealth",
    "RedisHeldLease",
    "RedisKeys",
    "RedisTokenStorage",
]


@dataclass(frozen=True)
class RedisKeys:
    """Every Redis name used for one app key.

    All embed the token key and so its ``{<key id>}`` hash tag: one cluster slot,
    so one Lua script may touch the token, the lease and the markers together.
    """

    token: str
    lock: str
    generation: str
    fence: str
    channel: str
    #: Digests of tokens found dead (compare-and-delete), which no save may store again.
    dead: str

    @classmethod
    def for_api_key(cls, key_prefix: str, api_key: str) -> RedisKeys:
        """The names for ``api_key`` under ``key_prefix``: ``{prefix}:{<sha256 prefix>}`` and siblings."""
        token = f"{key_prefix}:{{{key_id(api_key)}}}"
        return cls(
            token=token,
            lock=f"{token}:lock",
            generation=f"{token}:generation",
            fence=f"{token}:fence",
            channel=f"{token}:ready",
            dead=f"{token}:dead",
        )

    def failed(self, fingerprint: str) -> str:
        """The failure marker of one credential: another secret's failure never blocks this one."""
        return f"{self.token}:failed:{fingerprint[:MARKER_ID_CHARS]}"

    def lease_lock(self, purpose: str) -> str:
        """The lease of ``purpose``: ``…:lock`` for the token issuer (as ever), ``…:<purpose>:lock`` else."""
        return self.lock if check_purpose(purpose) == ISSUE else f"{self.token}:{purpose}:lock"

    def lease_channel(self, purpose: str) -> str:
        """Where the lease of ``purpose`` announces a release: ``…:ready`` for the token issuer."""
        return self.channel if check_purpose(purpose) == ISSUE else f"{self.token}:{purpose}:ready"


#: What :meth:`RedisTokenStorage.health_check` returns (the stores share one type).
RedisHealth = StorageHealth


class RedisTokenStorage(RecordTokenStorage):
    """Tokens in Redis, one hash per app key, shared by every process that can reach it.

    Args:
        redis_url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; an ACL
            user may be given as ``redis://user@host``.
        password: wins over a password in the URL, which wins over
            ``KOREA_INVESTMENT_REDIS_PASSWORD``; ``""`` means none.
        key_prefix: the token hash is ``{key_prefix}:{<sha256 of the app key>}``.
        client: a ready ``redis.Redis``, Sentinel ``master_for(...)`` or cluster
            client to use instead of ``redis_url``/``password``.
        socket_timeout: seconds per command; an unreachable server fails within
            it with :class:`~..errors.StorageUnavailableError`.
        socket_connect_timeout: seconds to connect, likewise.
        refresh_margin: see :class:`TokenStorage`.
        issue_deadline: see :class:`TokenStorage`.
        wait_timeout: see :class:`TokenStorage`.
        outage_allowance: see :class:`TokenStorage`.
        host_copy: keep each new token on this host too (beside the default token file,
            :mod:`.hostcopy`) before saving it, so the host's other processes can read it
            however Redis and this process fare.  ``False`` keeps nothing on disk.
        ping: PING the server before returning (0.6.1's class did, and its users
            catch the failure with ``except ConnectionError`` to fall back to a file
            store).  Default: yes for this class built from a URL; a ``client=``
            store connects on first use (Sentinel and cluster clients find their
            servers then), and so does :class:`LockingRedisTokenStorage` unless asked.

    An unreachable server fails the construction ping within the socket timeouts
    with :class:`~..errors.StorageUnavailableError`, a ``ConnectionError`` whose text
    starts with 0.6.1's "Redis 서버 연결 실패:".  Only threads of one process are
    coordinated; use :class:`LockingRedisTokenStorage` for a fleet.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        password: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        client: Any = None,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        socket_connect_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        refresh_margin: float | None = None,
        issue_deadline: float | None = None,
        wait_timeout: float | None = None,
        outage_allowance: float | None = None,
        host_copy: bool = True,
        ping: bool | None = None,
    ) -> None:
        super().__init__(
            refresh_margin=refresh_margin,
            issue_deadline=issue_deadline,
            wait_timeout=wait_timeout,
            outage_allowance=outage_allowance,
        )
        import_redis()
        _check_key_prefix(key_prefix)
        self.key_prefix = key_prefix
        self.socket_timeout = check_seconds("socket_timeout", socket_timeout, positive=True)
        self.socket_connect_timeout = check_seconds("socket_connect_timeout", socket_connect_timeout, positive=True)
        if client is not None:
            self.location, self._secrets = describe_client(client)
            self._client = client
            # A number per client object: id() is reused once the client is collected.
            self._scope: Hashable = ("redis-client", scope_number(client), key_prefix)
        else:
            target = resolve_target(redis_url, password)
            self.location = target.location
            self._client = connect(
                target, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_connect_timeout
            )
            self._secrets = ClientSecrets(self._client)  # the password stays in redis-py's settings only
            self._scope = ("redis", target.location, key_prefix)
        self._host = HostCopy(host_copy_path(self.location, key_prefix)) if host_copy else None
        self._store_script = self._client.register_script(lua.STORE)
        self._delete_script = self._client.register_script(lua.COMPARE_AND_DELETE)
        # The lease's scripts: the locking store's issuer, and every store's held leases.
        self._acquire_script = self._client.register_script(lua.ACQUIRE)
        self._renew_script = self._client.register_script(lua.RENEW)
        self._held_script = self._client.register_script(lua.HELD)
        self._release_script = self._client.register_script(lua.RELEASE)
        self._fenced_set_script = self._client.register_script(lua.FENCED_SET)
        # The locking store decides once its own settings are checked (a bad one is no connection problem).
        if not isinstance(self, LockingRedisTokenStorage) and _pings(ping, client, by_default=True):
            self._check_connection()

    def _check_connection(self) -> None:
        """PING once (0.6.1's construction check): unreachable is a ``ConnectionError``, in both languages.

        Unreachable means no connection, no answer in time, or a refused password.
        Any reply shows the server is there, even an error reply: an ACL without
        ``ping``, or a replica mid-failover or a server still loading (an outage,
        which the store rides out like any other once it is in use).
        """
        import redis

        answered = (redis.exceptions.ResponseError, redis.exceptions.BusyLoadingError)
        try:
            with translated_errors(self.location, "checking the connection (PING)", self._secrets):
                try:
                    self._client.ping()
                except answered as exc:
                    if is_database_out_of_range(exc):  # SELECT failed: no outage, a wrong URL
                        raise ConfigurationError(database_out_of_range(self.location)) from None
                    logger.debug("Redis at %s answered the PING with %s", self.location, type(exc).__name__)
        except ConfigurationError:
            raise
        except StorageUnavailableError as exc:
            raise StorageUnavailableError(f"{CONNECT_FAILED}: {exc}") from None
        except StorageError as exc:  # some other redis-py error: say so, as an unreachable server
            raise StorageUnavailableError(f"{CONNECT_FAILED}: {exc}") from None
        except Exception as exc:  # a stand-in client (tests replace redis.from_url) failing its own way
            reason = scrub(str(exc) or type(exc).__name__, self._secrets)
            raise StorageUnavailableError(
                f"{CONNECT_FAILED}: cannot reach Redis at {self.location}: {reason} ({type(exc).__name__})"
            ) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, ping: bool | None = None) -> Self:
        """Build from ``KOREA_INVESTMENT_REDIS_URL`` (default ``redis://localhost:6379/0``),
        ``KOREA_INVESTMENT_REDIS_PASSWORD`` (used when the URL carries no password) and
        ``KOREA_INVESTMENT_REDIS_KEY_PREFIX`` (default ``korea_investment:token``), so that
        applications and the CLI agree on the keys with no code.  ``ping``: see the constructor."""
        env = os.environ if environ is None else environ
        url = (env.get(ENV_REDIS_URL) or "").strip() or DEFAULT_REDIS_URL
        key_prefix = (env.get(ENV_REDIS_KEY_PREFIX) or "").strip() or DEFAULT_KEY_PREFIX
        target = resolve_target(url, None, env)
        return cls(url, password=target.password or "", key_prefix=key_prefix, ping=ping)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(location={self.location!r}, key_prefix={self.key_prefix!r})"

    @property
    def redis_client(self) -> Any:
        """The redis-py client (0.6.1's attribute)."""
        return self._client

    def _get_redis_key(self, api_key: str) -> str:
        """The token hash's key for ``api_key``, under ``key_prefix`` (0.6.1's method)."""
        return self.redis_keys(api_key).token

    def redis_keys(self, api_key: str) -> RedisKeys:
        """The Redis names this store uses for ``api_key`` (for operators and tests)."""
        return RedisKeys.for_api_key(self.key_prefix, api_key)

    def describe(self) -> StorageDescription:
        """``redis`` and the redacted location with the key prefix."""
        return StorageDescription("redis", f"{self.location} (prefix {self.key_prefix})")

    def health_check(self) -> StorageHealth:
        """PING the server: reachability and round-trip time, never raising for an outage."""
        started = time.perf_counter()
        try:
            self._call("checking health", self._client.ping)
        except StorageError as exc:
            return StorageHealth(reachable=False, round_trip_ms=None, location=self.location, error=str(exc))
        rtt = (time.perf_counter() - started) * 1000
        return StorageHealth(reachable=True, round_trip_ms=rtt, location=self.location, detail="reachable (PING)")

    def purpose_lease(
        self,
        api_key: str,
        purpose: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        fence_margin: float = DEFAULT_FENCE_MARGIN,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
    ) -> RedisHeldLease:
        """A long-lived hold of ``api_key``'s lease for ``purpose`` (see :class:`~.lease.HeldLease`).

        The same ``SET NX PX`` lease, generation, renewal and owner-checked release as the token
        issuer's, on the purpose's own key beside the token's (one cluster slot).
        """
        return RedisHeldLease(
            self, api_key, purpose, lease_seconds=lease_seconds, fence_margin=fence_margin, hold_seconds=hold_seconds
        )

    # ------------------------------------------------------------------ 0.6.x API
    def save_token(self, token_data: dict[str, Any]) -> bool:
        """Store a 0.6.x-shaped token dict (without its secret); False if a newer token is kept."""
        return self._store(TokenRecord.from_legacy_dict(token_data))

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        """Delete this app key's token; True when one was stored."""
        del api_secret  # the slot is the app key's, whichever secret asks
        deleted = self._call("deleting the token", self._client.delete, self.redis_keys(api_key).token)
        return bool(deleted)

    # ------------------------------------------------------------------ the hooks
    def _flight_scope(self) -> Hashable:
        return self._scope

    def _read_record(self, credentials: Credentials) -> TokenRecord | None:
        try:
            fields = self._call("reading the token", self._client.hgetall, self.redis_keys(credentials.api_key).token)
        except UnreadableKeyError as exc:
            self._warn_once("type", "ignoring what is stored at the token key (%s); the next save replaces it", exc)
            return None
        if not fields:
            return None
        try:
            record = _record_from_hash(fields)
        except ValueError as exc:
            self._warn_once(
                "hash", "ignoring a malformed token hash at %s (%s); the next save replaces it", self.location, exc
            )
            return None
        return record if record.belongs_to(credentials.api_key, credentials.fingerprint) else None

    def _host_copy(self) -> HostCopy | None:
        return self._host

    def _new_lease(self, credentials: Credentials) -> IssuanceLease:
        return ProcessLease(
            credentials, lambda record: SaveOutcome.STORED if self._store(record) else SaveOutcome.REFUSED
        )

    def _compare_and_delete(self, credentials: Credentials, access_token: str) -> bool:
        keys = self.redis_keys(credentials.api_key)
        deleted = self._call(
            "deleting a dead token",
            self._delete_script,
            keys=[keys.token, keys.fence, keys.dead],
            args=[access_token, GENERATION_TTL_MS, token_digest(access_token)],
        )
        return bool(deleted)

    # ---------------------------------------------------------------- internals
    def _store(self, record: TokenRecord) -> bool:
        if record.seconds_left() <= 0:
            logger.debug("not storing a token that has already expired")
            return False
        keys = self.redis_keys(record.api_key)
        stored = self._call(
            "storing the token",
            self._store_script,
            keys=[keys.token, keys.dead],
            args=[
                repr(record.expires_at),
                _expire_at_ms(record),
                token_digest(record.access_token),
                *_hash_fields(record),
            ],
        )
        return bool(stored)

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one redis-py call with its errors translated and redacted."""
        with translated_errors(self.location, action, self._secrets):
            return fn(*args, **kwargs)


class LockingRedisTokenStorage(RedisTokenStorage):
    """:class:`RedisTokenStorage` plus the cross-server single flight: a fleet issues once.

    Extra args:
        lease_seconds: lease length; renewed every fifth of it while issuing.
            A crashed holder delays the others by at most this.
        failure_backoff: seconds during which a failed issuance stops other
            servers from calling tokenP (0 disables the marker).
        poll_interval: longest single follower wait before it looks at the
            lease again, pub/sub messages notwithstanding (at most 0.5 s).

    It connects on first use unless ``ping=True``: a process of the fleet can start
    while Redis is down and run on a token its host kept (a store that never
    answered and has nothing kept still fails at once, 3 s at most).  0.6.1 had
    no such class; its :class:`RedisTokenStorage` pings, as there.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        password: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        client: Any = None,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        socket_connect_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        refresh_margin: float | None = None,
        issue_deadline: float | None = None,
        wait_timeout: float | None = None,
        outage_allowance: float | None = None,
        host_copy: bool = True,
        ping: bool | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        failure_backoff: float = DEFAULT_FAILURE_BACKOFF,
        poll_interval: float = MAX_POLL_INTERVAL,
    ) -> None:
        super().__init__(
            redis_url,
            password,
            key_prefix,
            client=client,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            refresh_margin=refresh_margin,
            issue_deadline=issue_deadline,
            wait_timeout=wait_timeout,
            outage_allowance=outage_allowance,
            host_copy=host_copy,
        )
        self.lease_seconds = check_seconds("lease_seconds", lease_seconds, positive=True)
        if self.lease_seconds < 0.05:
            raise ConfigurationError("lease_seconds must be at least 0.05 (it is renewed every fifth of it)")
        self.failure_backoff = check_seconds("failure_backoff", failure_backoff)
        self.poll_interval = check_seconds("poll_interval", poll_interval, positive=True)
        if self.poll_interval > MAX_POLL_INTERVAL:
            raise ConfigurationError(f"poll_interval must be at most {MAX_POLL_INTERVAL} s, got {poll_interval!r}")
        self._fenced_save_script = self._client.register_script(lua.FENCED_SAVE)
        if _pings(ping, client, by_default=False):
            self._check_connection()

    # ------------------------------------------------------------------ the hooks
    def _new_lease(self, credentials: Credentials) -> IssuanceLease:
        return RedisLease(self, credentials)

    @contextlib.contextmanager
    def _ready_inbox(self, channel: str) -> Iterator[_Inbox]:
        """Subscribe to ``channel`` on a connection of our own, confirmed before we yield."""
        pubsub = self._call("subscribing to the ready channel", self._client.pubsub)
        try:
            self._call("subscribing to the ready channel", pubsub.subscribe, channel)
            inbox = _Inbox(pubsub, self)
            if not inbox.confirmed(self.socket_timeout):
                logger.debug("no subscription confirmation from %s; relying on the poll", self.location)
            yield inbox
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()


class RedisLease(IssuanceLease):
    """The Redis issuance lease: ``SET NX PX`` with a generation, renewal, a fenced save.

    The lease object exists before the script that may take the lease runs,
    inside the leader's ``with`` block, so an interruption at any point is
    followed by an owner-checked release.  Its renewal thread holds only a
    weak reference to it and stops at the hold bound, at release, or when the
    lease object is gone.
    """

    def __init__(self, storage: LockingRedisTokenStorage, credentials: Credentials) -> None:
        super().__init__(credentials)
        self._storage = storage
        self.keys = storage.redis_keys(credentials.api_key)
        self.failed_key = self.keys.failed(credentials.fingerprint)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(12)}"
        self.generation = 0
        self.pid = os.getpid()
        self.lost = False
        #: True while the fenced save runs: its release of the lock is not a loss.
        self.saving = False
        self._stop = threading.Event()
        self._until = 0.0
        weakref.finalize(self, self._stop.set)

    def acquire(self, deadline: float) -> Acquired:
        storage = self._storage
        keys = self.keys
        long_wait = LongWait(f"another process or server (lease at {storage.location})", deadline)
        with storage._ready_inbox(keys.channel) as inbox:
            while True:  # subscribed before this first look, so no "ready" can slip past
                long_wait.tick()
                self.taken = True  # the script may take it: from here the with block releases it
                verdict = storage._call(
                    "taking the issuance lease",
                    storage._acquire_script,
                    keys=[keys.lock, keys.generation, self.failed_key, keys.fence],
                    args=[self.owner, _ms(storage.lease_seconds), GENERATION_TTL_MS],
                )
                kind, number = text(verdict[0]), int(verdict[1])
                if kind == "lead":
                    self.generation = number
                    self._start_renewal()
                    logger.debug("took the token issuance lease (generation %d)", number)
                    return Acquired.HELD
                self.taken = False
                peer_failure = None
                if kind == "failed":
                    # Another caller's attempt failed.  A bad key or secret is ours too: fail now.
                    # Anything else (its own deadline ran out, KIS answered 500) is not: wait out
                    # the backoff like a held lease, then try ourselves, within our own deadline.
                    peer_failure = _peer_failure(text(verdict[2]) if len(verdict) > 2 else "", number)
                    if isinstance(peer_failure, InvalidCredentialsError):
                        raise peer_failure
                left = deadline - time.monotonic()
                if left <= 0:
                    if peer_failure is not None:
                        raise TokenWaitTimeout(f"waited {storage.wait_timeout:.0f}s for a token; {peer_failure}")
                    raise TokenWaitTimeout(
                        f"waited {storage.wait_timeout:.0f}s for another process or server holding the token "
                        f"issuance lease at {storage.location} to store a token; retry (a dead holder's lease "
                        f"expires within {storage.lease_seconds:g}s)"
                    )
                pause = storage.poll_interval if number < 0 else min(number / 1000, storage.poll_interval)
                if inbox.wait(min(pause, left)) in ("ready", "released"):
                    return Acquired.LOOK_AGAIN  # the store changed: let the caller read it
                # a timeout (lease may have vanished) or "failed": look at the lease again

    def held(self) -> bool:
        if self.settled or self.lost or not self.taken or self.pid != os.getpid():
            return False
        storage = self._storage
        held = storage._call(
            "checking the issuance lease", storage._held_script, keys=[self.keys.lock], args=[self.owner]
        )
        if not held:
            self.lost = True
            logger.warning("the token issuance lease was lost (it expired, or the store lost it)")
        return bool(held)

    def save(self, record: TokenRecord) -> SaveOutcome:
        owner = self.owner if self.pid == os.getpid() else ""  # a forked child never holds its parent's lease
        self.saving = True
        try:
            saved = self._fenced_save(owner, record)
        finally:
            self.saving = False
        self.settled = True
        self._stop.set()
        if not saved:
            logger.info(
                "a newer token or lease was already in the store (our generation %d); keeping that", self.generation
            )
            return SaveOutcome.REFUSED
        return SaveOutcome.STORED

    def _fenced_save(self, owner: str, record: TokenRecord) -> bool:
        storage = self._storage
        keys = self.keys
        saved = storage._call(
            "saving the new token",
            storage._fenced_save_script,
            keys=[keys.token, keys.lock, keys.fence, self.failed_key, keys.dead],
            args=[
                owner,
                self.generation,
                repr(record.expires_at),
                _expire_at_ms(record),
                keys.channel,
                GENERATION_TTL_MS,
                record.access_token,
                token_digest(record.access_token),
                *_hash_fields(record),
            ],
        )
        return bool(saved)

    def _release(self, failure: BaseException | None) -> None:
        self._stop.set()
        if self.pid != os.getpid():
            return  # it belongs to the process we were forked from
        marker = ""
        if isinstance(failure, Exception) and not isinstance(failure, StorageError | TokenWaitTimeout | LeaseLost):
            marker = _failure_marker(failure)
        storage = self._storage
        marker_ms = _ms(storage.failure_backoff) if marker and storage.failure_backoff > 0 else 0
        try:
            self._release_script(marker_ms, marker)
        except StorageUnavailableError as exc:
            logger.warning("could not release the token issuance lease (%s); retrying in the background", exc)
            threading.Thread(
                target=self._release_later, args=(marker_ms, marker), name="kis-token-lease-release", daemon=True
            ).start()
        except StorageError as exc:  # never mask the caller's own outcome; the lease expires by itself
            logger.warning(
                "could not release the token issuance lease (%s); it expires within %.0fs", exc, storage.lease_seconds
            )

    def _release_script(self, marker_ms: int, marker: str) -> None:
        storage = self._storage
        storage._call(
            "releasing the issuance lease",
            storage._release_script,
            keys=[self.keys.lock, self.failed_key],
            args=[self.owner, self.keys.channel, marker_ms, marker],
        )

    def _release_later(self, marker_ms: int, marker: str) -> None:
        """Keep trying to release until the lease would have expired anyway."""
        end = time.monotonic() + self._storage.lease_seconds
        delay = 0.05
        while time.monotonic() < end:
            time.sleep(delay)
            try:
                self._release_script(marker_ms, marker)
                return
            except StorageError:
                delay = min(delay * 2, 0.5)

    def _start_renewal(self) -> None:
        storage = self._storage
        hold = self.hold_seconds
        if hold is None:
            hold = storage.issue_deadline + DEFAULT_CALL_SECONDS + HOLD_SLACK
        self._until = time.monotonic() + hold
        _start_renewal(self, self._stop, storage.lease_seconds / RENEWALS_PER_LEASE, "kis-token-lease-renewal")

    def renewal_until(self) -> float:
        """When renewal stops (monotonic): the issuance's whole bound, fixed when the lease was taken."""
        return self._until

    def renew_once(self) -> bool | None:
        """One renewal: True when extended, False to retry soon (store down), None to stop."""
        if self.settled:
            return None
        storage = self._storage
        try:
            renewed = storage._call(
                "renewing the issuance lease",
                storage._renew_script,
                keys=[self.keys.lock],
                args=[self.owner, _ms(storage.lease_seconds)],
            )
        except StorageError as exc:
            logger.warning("could not renew the token issuance lease (%s); trying again soon", exc)
            return False
        if not renewed and not self._stop.is_set() and not self.saving:
            self.lost = True
            logger.warning(
                "lost the token issuance lease (it expired); the fenced save decides whether our token is stored"
            )
            return None
        return True

    def __repr__(self) -> str:
        return f"RedisLease(generation={self.generation}, taken={self.taken}, settled={self.settled}, lost={self.lost})"


class RedisHeldLease(HeldLease):
    """A long-lived hold of one app key's lease for a purpose: the token issuer's lease, held for hours.

    Taken by the same ``ACQUIRE`` script as :class:`RedisLease` (``SET NX PX``, a generation above
    every earlier one, shared with the issuer's counter), renewed by the same owner-checked
    ``RENEW`` every fifth of the lease, released by the same owner-checked ``RELEASE``.  What
    differs is what a long hold needs:

    * **Self-fencing.**  :meth:`held` is the time since the last renewal the server *confirmed*,
      counted from when it was sent, against ``lease - fence_margin``: no I/O, and false before
      the lease can lapse at the server.  A holder paused (SIGSTOP, a VM freeze) finds it false the
      moment it runs again, since the monotonic clock ran on.
    * **Bounded renewal.**  Renewal goes on only ``hold_seconds`` past the holder's last
      :meth:`keep`; a renewal the server refuses (the lease lapsed and maybe moved on) ends the
      hold for good.
    * **Fenced writes.**  :meth:`fenced_set` writes a key only while the server still names us.
    """

    def __init__(
        self,
        storage: RedisTokenStorage,
        api_key: str,
        purpose: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        fence_margin: float = DEFAULT_FENCE_MARGIN,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
    ) -> None:
        super().__init__(purpose)
        self.lease_seconds = check_seconds("lease_seconds", lease_seconds, positive=True)
        self.fence_margin = check_seconds("fence_margin", fence_margin)
        if self.fence_margin >= self.lease_seconds:
            raise ConfigurationError("fence_margin must be shorter than lease_seconds")
        self.hold_seconds = check_seconds("hold_seconds", hold_seconds, positive=True)
        self._storage = storage
        keys = storage.redis_keys(api_key)
        self.lock_key = keys.lease_lock(purpose)
        self._channel = keys.lease_channel(purpose)
        self._acquire_keys = [self.lock_key, keys.generation, f"{self.lock_key}:failed", keys.fence]
        self._guard = threading.Lock()
        self._owner: str | None = None
        self._confirmed = 0.0
        self._until = 0.0
        self._pid = os.getpid()
        self._stop = threading.Event()

    def try_acquire(self) -> int | None:
        if self.held():
            return self.generation
        self._end_hold()  # a lapsed hold of ours: stop its renewal first
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(12)}"
        storage = self._storage
        sent = time.monotonic()
        verdict = storage._call(
            f"taking the {self.purpose} lease",
            storage._acquire_script,
            keys=self._acquire_keys,
            args=[owner, _ms(self.lease_seconds), GENERATION_TTL_MS],
        )
        if text(verdict[0]) != "lead":
            return None
        stop = threading.Event()
        with self._guard:
            self._owner, self._confirmed, self._stop, self._pid = owner, sent, stop, os.getpid()
            self._until = sent + self.hold_seconds
            self.generation = int(verdict[1])
        _start_renewal(self, stop, self.lease_seconds / RENEWALS_PER_LEASE, f"kis-lease-{self.purpose}")
        logger.debug("took the %s lease (generation %d)", self.purpose, self.generation)
        return self.generation

    def held(self) -> bool:
        with self._guard:
            return (
                self._owner is not None
                and self._pid == os.getpid()
                and time.monotonic() - self._confirmed < self.lease_seconds - self.fence_margin
            )

    def keep(self) -> None:
        with self._guard:
            if self._owner is not None:
                self._until = time.monotonic() + self.hold_seconds

    def release(self) -> None:
        owner = self._end_hold()
        if owner is None:
            return
        storage = self._storage
        try:
            storage._call(
                f"releasing the {self.purpose} lease",
                storage._release_script,
                keys=[self.lock_key, self._acquire_keys[2]],
                args=[owner, self._channel, 0, ""],
            )
        except Exception as exc:  # best effort, never the caller's failure: it lapses within one lease anyway
            # (a holder woken from a pause finds redis-py's connections broken under it: not only StorageError)
            logger.warning(
                "could not release the %s lease (%s); it lapses within %gs", self.purpose, exc, self.lease_seconds
            )

    def fenced_set(self, key: str, value: str, ttl_seconds: float) -> bool:
        """``SET key value PX ttl`` only while the server still names us the holder; True when written."""
        with self._guard:
            owner = self._owner
        if owner is None:
            return False
        storage = self._storage
        written = storage._call(
            f"writing under the {self.purpose} lease",
            storage._fenced_set_script,
            keys=[self.lock_key, key],
            args=[owner, value, _ms(ttl_seconds)],
        )
        return bool(written)

    def is_taken(self) -> bool:
        """Whether anyone holds the lease now (one ``GET``: the minimal ACL has no ``EXISTS``)."""
        storage = self._storage
        return storage._call(f"reading the {self.purpose} lease", storage._client.get, self.lock_key) is not None

    def renewal_until(self) -> float:
        with self._guard:
            return self._until

    def renew_once(self) -> bool | None:
        """One renewal: True when confirmed, False to retry soon (store slow or down), None to stop."""
        with self._guard:
            owner = self._owner
        if owner is None or self._pid != os.getpid():
            return None
        storage = self._storage
        sent = time.monotonic()
        try:
            renewed = storage._call(
                f"renewing the {self.purpose} lease",
                storage._renew_script,
                keys=[self.lock_key],
                args=[owner, _ms(self.lease_seconds)],
            )
        except Exception as exc:  # a store down, or a connection broken by a pause: held() runs out by itself
            logger.warning("could not renew the %s lease (%s); trying again soon", self.purpose, exc)
            return False
        with self._guard:
            if self._owner != owner:
                return None  # released meanwhile
            if not renewed:
                self._owner = None
                logger.warning("lost the %s lease (it lapsed, or the store lost it)", self.purpose)
                return None
            self._confirmed = sent
        return True

    def _end_hold(self) -> str | None:
        with self._guard:
            owner, self._owner = self._owner, None
            self._stop.set()
            self.generation = 0
        return owner


class _Renewable(Protocol):
    def renewal_until(self) -> float: ...

    def renew_once(self) -> bool | None: ...


def _start_renewal(lease: _Renewable, stop: threading.Event, interval: float, name: str) -> None:
    threading.Thread(target=_renew, args=(weakref.ref(lease), stop, interval), name=name, daemon=True).start()


def _renew(ref: weakref.ref[_Renewable], stop: threading.Event, interval: float) -> None:
    """Extend a lease every ``interval`` seconds until ``stop``, its renewal bound, or its object is gone.

    Holding only a weak reference between two renewals, it cannot keep a
    leaked lease (one whose holder was interrupted and dropped it) alive.
    """
    wait = interval
    while True:
        lease = ref()
        if lease is None:
            return
        until = lease.renewal_until()
        del lease
        if stop.wait(max(0.0, min(wait, until - time.monotonic()))):
            return
        lease = ref()
        if lease is None:
            return
        if time.monotonic() >= lease.renewal_until():
            logger.warning("stopped renewing a lease (%r): its holder ran past its bound", lease)
            return
        outcome = lease.renew_once()
        del lease
        if outcome is None:
            return
        wait = interval if outcome else min(interval, 0.5)


class _Inbox:
    """The ready channel of one wait, read only by the thread that waits."""

    def __init__(self, pubsub: Any, storage: RedisTokenStorage) -> None:
        self._pubsub = pubsub
        self._storage = storage

    def confirmed(self, timeout: float) -> bool:
        """True once the server confirmed the subscription (so later publishes reach us)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            message = self._get(left)
            if message is not None and text(message.get("type")) == "subscribe":
                return True
        return False

    def wait(self, timeout: float) -> str | None:
        """The next message on the channel within ``timeout`` seconds, or None."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            message = self._get(left)
            if message is not None and text(message.get("type")) == "message":
                return text(message.get("data"))
        return None

    def _get(self, timeout: float) -> Any:
        return self._storage._call("waiting on the ready channel", self._pubsub.get_message, timeout=timeout)


# ---------------------------------------------------------------------- helpers
_PEER_ERRORS: dict[str, type[TokenIssueError]] = {
    "InvalidCredentialsError": InvalidCredentialsError,
    "TokenRateLimitedError": TokenRateLimitedError,
}


def _failure_marker(failure: Exception) -> str:
    """What other servers learn of a failed issuance: the error's class and KIS code, never its text."""
    code = getattr(failure, "code", None)
    return f"{type(failure).__name__[:64]}:{code if isinstance(code, str) else ''}"


def _peer_failure(marker: str, ttl_ms: int) -> TokenIssueError:
    """The error a failure marker stands for: raised as is for bad credentials, else named in a timeout."""
    name, _, code = marker.partition(":")
    kind = _PEER_ERRORS.get(name, TokenIssueError)
    what = " ".join(part for part in (name or "an error", code) if part)
    return kind(
        f"another process or server just failed to obtain a token for this app key ({what}). "
        f"To spare KIS a stampede of retries, nobody retries for {max(ttl_ms, 0) / 1000:.1f}s more; "
        "try again after that.",
        code=code or None,
    )


def _hash_fields(record: TokenRecord) -> list[str]:
    """The hash as a flat field/value list: the 0.6.x fields, a fingerprint instead of the secret."""
    return [
        "access_token", record.access_token,
        "access_token_token_expired", record.legacy_expiry_text,
        "timestamp", str(int(record.expires_at)),
        "api_key", record.api_key,
        "fingerprint", record.fingerprint,
        "token_type", record.token_type,
        "expires_at", repr(record.expires_at),
        "issued_at", repr(record.issued_at),
    ]  # fmt: skip


def _record_from_hash(fields: Mapping[Any, Any]) -> TokenRecord:
    """Parse an HGETALL reply; ``ValueError`` when it is not one of our token hashes."""
    data = {text(k): text(v) for k, v in fields.items()}

    def number(*names: str) -> float:
        for name in names:
            if name in data:
                try:
                    return float(data[name])
                except ValueError:
                    raise ValueError(f"{name} is not a number") from None
        raise ValueError(f"{names[0]} is missing")

    return TokenRecord.from_json(
        {
            "access_token": data.get("access_token"),
            "api_key": data.get("api_key"),
            "fingerprint": data.get("fingerprint"),
            "expires_at": number("expires_at", "timestamp"),
            "issued_at": number("issued_at") if "issued_at" in data else 0.0,
            "token_type": data.get("token_type", "Bearer"),
            "access_token_token_expired": data.get("access_token_token_expired"),
        }
    )


def _expire_at_ms(record: TokenRecord) -> int:
    """The absolute PEXPIREAT time: never later than the token's own expiry."""
    return math.floor(record.expires_at * 1000)


def _pings(ping: bool | None, client: Any, *, by_default: bool) -> bool:
    """Whether construction pings: as asked, else the class's default for a store built from a URL."""
    if ping is not None:
        return bool(ping)
    return by_default and client is None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _check_key_prefix(prefix: str) -> None:
    """Reject prefixes whose keys would not share a hash slot (an empty ``{}`` tag)."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError("key_prefix must be a non-empty string")
    start = prefix.find("{")
    if start != -1 and prefix.find("}", start + 1) == start + 1:
        raise ConfigurationError(
            "key_prefix must not contain an empty hash tag '{}': the token and its lease would land in "
            "different Redis Cluster slots"
        )
