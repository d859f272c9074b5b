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
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import LimiterStoreUnavailable, StorageError
from ..token.redis_connect import describe_client, import_redis, text, translated_errors
from .budget import RECENT_GRANTS, RateLimiter, SharedRateLimiter, Usage, departure
from .file import HostFallbackLimiter

#: Same default as the Redis token stores: the budgets sit beside the tokens.
DEFAULT_KEY_PREFIX = "korea_investment:token"
#: A budget nobody used for this long is forgotten (its keys expire).
IDLE_TTL_MS = 60_000

# Every script reads the state on the server's clock: a state written when ``TIME`` read later than
# it does now (a failover to a server whose clock is behind, a clock stepped back) is moved back by
# the difference, so it keeps the backlog it had and never blocks longer.  The keys live until the
# next free slot plus the idle TTL: a slow rate's state outlives the wait for its next slot.
_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'penalty_until', 'at')
local ahead = math.max(0, (tonumber(state[3]) or 0) - now)
local tat = (tonumber(state[1]) or 0) - ahead
local penalty_until = (tonumber(state[2]) or 0) - ahead
local function fmt(n) return string.format('%.0f', n) end
local function keep(key, until_)
  redis.call('PEXPIRE', key, math.ceil((until_ - now) / 1000) + tonumber(ARGV[#ARGV]))
end
"""

# KEYS: state hash, recent list.  ARGV: interval µs, max wait µs, rate, ring size, idle TTL ms.
# Answers {1, wait µs} for a reserved slot, {0, wait µs} when it is beyond the max wait.
RESERVE = (
    _STATE
    + """
local slot = math.max(tat, now)
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {0, fmt(wait)}
end
local next_free = slot + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'tat', fmt(next_free), 'penalty_until', fmt(penalty_until), 'at', fmt(now),
  'rate', ARGV[3])
keep(KEYS[1], next_free)
redis.call('LPUSH', KEYS[2], fmt(slot))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
keep(KEYS[2], next_free)
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
keep(KEYS[1], next_free)
return 1
"""
)

# KEYS: state hash, recent list.  ARGV: idle TTL ms (unused).  Answers {rate, grants in the last second,
# backlog µs}.
USAGE = (
    _STATE
    + """
local used = 0
if ahead == 0 then
  for _, slot in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    local s = tonumber(slot)
    if s and s <= now and s > now - 1000000 then used = used + 1 end
  end
end
return {redis.call('HGET', KEYS[1], 'rate') or '', used, fmt(math.max(0, tat - now))}
"""
)


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

    def _new_fallback(self) -> RateLimiter:
        """While Redis cannot be reached, the processes of this host share one fallback budget."""
        return HostFallbackLimiter()

    def __repr__(self) -> str:
        return f"RedisRateLimiter(location={self.location!r}, key_prefix={self.key_prefix!r}, rate={self.rate!r})"

    def describe(self) -> str:
        return f"redis {self.location} (prefix {self.key_prefix})"

    def keys(self, bucket: str) -> tuple[str, str]:
        """The state hash and the recent-grants list of one budget."""
        key_hash, environment = bucket.split(".", 1)
        state = f"{self.key_prefix}:{{{key_hash}}}:rate:{environment}"
        return state, f"{state}:recent"

    def buckets(self) -> list[str]:
        """Every budget with keys in Redis now (for ``kis-token limit``); bounded to 1000."""
        found: list[str] = []
        for key in self._scan(f"{self.key_prefix}:*:rate:*"):
            name = text(key)
            if name.endswith(":recent"):
                continue
            head, _, environment = name.rpartition(":rate:")
            key_hash = head.rpartition("{")[2].rstrip("}")
            found.append(f"{key_hash}.{environment}")
            if len(found) >= 1000:
                break
        return sorted(found)

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
        state, _ = self.keys(bucket)
        self._run(
            "pausing the rate limit", self._penalize_script, keys=[state], args=[round(seconds * 1e6), IDLE_TTL_MS]
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

    def _run(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            with translated_errors(self.location, action, self._secrets):
                return fn(*args, **kwargs)
        except StorageError as exc:
            raise LimiterStoreUnavailable(str(exc)) from None

    def _scan(self, pattern: str) -> Iterator[Any]:
        try:
            with translated_errors(self.location, "listing rate limits", self._secrets):
                yield from self._client.scan_iter(match=pattern, count=500)
        except StorageError:
            return
