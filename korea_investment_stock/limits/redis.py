"""The budget shared by servers: one Lua script per acquire, on the Redis the token store uses.

The script reads the server's ``TIME``, so the clocks of the clients do not
matter: it reserves the next slot and answers how long to wait for it, in one
round trip.  The client counts that wait from when the reply arrived
(:func:`.budget.departure`): a call never leaves before its slot, however long
the server stalled before running the script, and is late by at most the
reply's way back.  The keys embed the token key's ``{<key id>}`` hash tag, so a
Cluster keeps a budget and its token in one slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import LimiterStoreUnavailable, StorageError, StoragePermissionError
from ..token.redis_connect import describe_client, import_redis, text, translated_errors
from .budget import BUCKET_NAME, RECENT_GRANTS, RateLimiter, SharedRateLimiter, Usage, departure
from .file import HostFallbackLimiter

#: Same default as the Redis token stores: the budgets sit beside the tokens.
DEFAULT_KEY_PREFIX = "korea_investment:token"
#: A budget nobody used for this long is forgotten (its keys expire).
IDLE_TTL_MS = 60_000

# One hash per budget, and only the commands the token stores need too (TIME, HMGET, HSET, HGETALL,
# PEXPIRE): the minimal ACL of docs/token-stores.md adds nothing for the limiter but SCAN, for
# ``kis-token limit``.
# Fields: tat, penalty_until and at (µs on the server's clock), rate, head (the next ring position)
# and g0..g<ring-1>, the ring of recent grants.
#
# Every script reads the state on the server's clock: a state written when ``TIME`` read later than
# it does now (a failover to a server whose clock is behind, a clock stepped back) is moved back by
# the difference, so it keeps the backlog it had and never blocks longer.  The key lives until the
# next free slot plus the idle TTL: a slow rate's state outlives the wait for its next slot.
_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'penalty_until', 'at', 'head')
local ahead = math.max(0, (tonumber(state[3]) or 0) - now)
local tat = (tonumber(state[1]) or 0) - ahead
local penalty_until = (tonumber(state[2]) or 0) - ahead
local head = tonumber(state[4]) or 0
local function fmt(n) return string.format('%.0f', n) end
local function keep(until_)
  redis.call('PEXPIRE', KEYS[1], math.ceil((until_ - now) / 1000) + tonumber(ARGV[#ARGV]))
end
"""

# KEYS: state hash.  ARGV: interval µs, max wait µs, rate, ring size, idle TTL ms.
# Answers {1, wait µs} for a reserved slot, {0, wait µs} when it is beyond the max wait.
RESERVE = (
    _STATE
    + """
local slot = math.max(tat, now)
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {0, fmt(wait)}
end
local ring = tonumber(ARGV[4])
if ahead > 0 then
  for i = 0, ring - 1 do redis.call('HSET', KEYS[1], 'g' .. i, '0') end  -- another clock's grants
end
local next_free = slot + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'tat', fmt(next_free), 'penalty_until', fmt(penalty_until), 'at', fmt(now),
  'rate', ARGV[3], 'head', (head + 1) % ring, 'g' .. (head % ring), fmt(slot))
keep(next_free)
return {1, fmt(wait)}
"""
)

# KEYS: state hash.  ARGV: penalty µs, idle TTL ms.  New slots start a penalty from now, once per penalty.
PENALIZE = (
    _STATE
    + """
if now < penalty_until then
  return 0
end
local penalty = tonumber(ARGV[1])
local next_free = math.max(tat, now) + penalty
redis.call('HSET', KEYS[1], 'tat', fmt(next_free), 'penalty_until', fmt(now + penalty), 'at', fmt(now))
keep(next_free)
return 1
"""
)

# KEYS: state hash.  ARGV: idle TTL ms (unused).  Answers {rate, grants in the last second, backlog µs}.
USAGE = (
    _STATE
    + """
local used, rate = 0, ''
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'rate' then
    rate = fields[i + 1]
  elseif ahead == 0 and string.sub(name, 1, 1) == 'g' then
    local s = tonumber(fields[i + 1])
    if s and s <= now and s > now - 1000000 then used = used + 1 end
  end
end
return {rate, used, fmt(math.max(0, tat - now))}
"""
)

# KEYS: a probe key under the prefix.  The limiter's writes, on a key of their own that expires at once:
# for kis-token health, which must know that an acquire could write, not only read.
PROBE = """
redis.call('HSET', KEYS[1], 'at', redis.call('TIME')[1])
redis.call('PEXPIRE', KEYS[1], 1000)
return 1
"""


class RedisRateLimiter(SharedRateLimiter):
    """Per-app-key budgets in Redis, shared by every process and server that can reach it.

    Args:
        client: a ``redis.Redis`` (or Sentinel / Cluster client); the Redis token
            stores pass theirs, so one connection pool serves both.
        key_prefix: the token stores' prefix; budgets live at ``{prefix}:{<key id>}:rate:<environment>``.
        rate: calls per second; default by environment.
    """

    backend = "redis"

    def __init__(self, client: Any, key_prefix: str = DEFAULT_KEY_PREFIX, rate: float | None = None) -> None:
        super().__init__(rate)
        import_redis()
        self._client = client
        self.key_prefix = key_prefix
        self.location, self._secrets = describe_client(client)
        self._reserve_script = client.register_script(RESERVE)
        self._penalize_script = client.register_script(PENALIZE)
        self._usage_script = client.register_script(USAGE)
        self._probe_script = client.register_script(PROBE)

    def _new_fallback(self) -> RateLimiter:
        """While Redis cannot be reached, the processes of this host share one fallback budget."""
        return HostFallbackLimiter()

    def __repr__(self) -> str:
        return f"RedisRateLimiter(location={self.location!r}, key_prefix={self.key_prefix!r}, rate={self.rate!r})"

    def describe(self) -> str:
        return f"redis {self.location} (prefix {self.key_prefix})"

    def keys(self, bucket: str) -> tuple[str]:
        """The Redis keys of one budget: its state hash (the recent grants live in it too)."""
        key_hash, environment = bucket.split(".", 1)
        return (f"{self.key_prefix}:{{{key_hash}}}:rate:{environment}",)

    def buckets(self) -> list[str]:
        """Every budget with a key in Redis now (for ``kis-token limit``); bounded to 1000.

        Only keys named like ours (``<prefix>:{<key id>}:rate:<real|mock>``) count.
        Raises :class:`~..errors.StorageError` (``StoragePermissionError`` when the
        ACL lacks ``SCAN``) when Redis cannot list them: "no budget" would be a lie.
        """
        found: list[str] = []
        with translated_errors(self.location, "listing rate limits", self._secrets):
            for key in self._client.scan_iter(match=f"{self.key_prefix}:*:rate:*", count=500):
                head, _, environment = text(key).rpartition(":rate:")
                bucket = f"{head.rpartition('{')[2].rstrip('}')}.{environment}"
                if head.startswith(f"{self.key_prefix}:{{") and BUCKET_NAME.fullmatch(bucket):
                    found.append(bucket)
                    if len(found) >= 1000:
                        break
        return sorted(set(found))

    # ------------------------------------------------------------------ the shared store
    def _shared_reserve(self, bucket: str, rate: float, max_wait: float) -> float | None:
        interval_us = round(1_000_000 / rate)
        reply = self._run(
            "reserving a rate-limit slot",
            self._reserve_script,
            keys=list(self.keys(bucket)),
            args=[interval_us, round(max_wait * 1_000_000), repr(rate), RECENT_GRANTS, IDLE_TTL_MS],
        )
        replied_at = time.monotonic()  # the script ran before this: counting from here is never early
        granted, wait_us = int(reply[0]), int(text(reply[1]))
        return departure(replied_at, wait_us / 1_000_000) if granted else None

    def _shared_penalize(self, bucket: str, seconds: float) -> None:
        self._run(
            "pausing the rate limit",
            self._penalize_script,
            keys=list(self.keys(bucket)),
            args=[round(seconds * 1e6), IDLE_TTL_MS],
        )

    def _shared_usage(self, bucket: str, rate: float) -> Usage:
        reply = self._run(
            "reading the rate limit", self._usage_script, keys=list(self.keys(bucket)), args=[IDLE_TTL_MS]
        )
        stored_rate = text(reply[0])
        try:
            shown = float(stored_rate) if stored_rate else rate
        except ValueError:
            shown = rate
        return Usage(bucket, shown, int(reply[1]), int(text(reply[2])) / 1_000_000)

    def _shared_probe(self, bucket: str, rate: float) -> Usage:
        """A write the way an acquire writes (on a probe key that expires in a second), then a read."""
        key_hash = bucket.split(".", 1)[0]
        self._run("probing the rate limit", self._probe_script, keys=[f"{self.key_prefix}:{{{key_hash}}}:rate:probe"])
        return self._shared_usage(bucket, rate)

    def _run(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            with translated_errors(self.location, action, self._secrets):
                return fn(*args, **kwargs)
        except StoragePermissionError as exc:
            raise LimiterStoreUnavailable(str(exc), denied=True) from None
        except StorageError as exc:
            raise LimiterStoreUnavailable(str(exc)) from None
