"""The Redis store's coordination for one app key's session: a fenced lease, a capped hash of wants.

Why a short lease with self-fencing (not a lock held for life): Redis cannot tell that a process
died, only that it stopped renewing. The owner takes ``SET owner <id> NX PX ttl`` (with a fencing
generation from ``INCR``) and renews it every ``ttl/4`` by compare-and-pexpire. It counts its right
to the socket from the moment it *sent* the last confirmed renewal: once ``ttl - margin`` has passed
without one, :meth:`RedisCoordinator.held` turns false and the node closes the socket at once, so
the old session is gone before the lease can lapse and anyone else may acquire. A SIGSTOP'd owner
loses the lease the same way and fences itself when it wakes.

The wants are one hash, ``holder -> {info, subs, expires}``, changed only by Lua scripts that read
the server's clock (``TIME``), drop expired holders, and refuse a change that would grow the union
past the cap, all in one step. Every name carries the app key's ``{digest}`` hash tag (one cluster
slot), beside the token's keys under the store's prefix.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from ..token.record import key_id
from ..token.redis_connect import text
from .owner import APPROVAL_MAX_AGE, WANTS_TTL, HolderInfo, OwnerInfo, RelayClient, RelayServer, limit_error
from .registry import SUBSCRIPTION_CAP, Subscription
from .relay import subscription_of

__all__ = ["OWNER_TTL", "RedisBackend", "RedisCoordinator", "RedisWants", "StreamKeys"]

_log = logging.getLogger(__name__)

#: The owner's lease (seconds); renewed every quarter of it.
OWNER_TTL = 2.0
#: The owner stops trusting its lease this long before it could lapse (clock drift, a slow reply).
FENCE_MARGIN = 0.5
#: A follower calls the owner gone after this long without any relayed message (the owner's state
#: goes out every 0.5 s, so this is four missed beats).
SILENCE_BOUND = 2.0

ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local generation = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  return generation
end
return 0
"""

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

STATE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] wants hash. ARGV: holder, info JSON, subs CSV ('' = none), ttl ms, cap, check ('1'/'0').
PUT_WANTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local all = redis.call('HGETALL', KEYS[1])
local counts, others, before = {}, {}, {}
local nbefore = 0
for i = 1, #all, 2 do
  local ok, entry = pcall(cjson.decode, all[i + 1])
  if (not ok) or type(entry) ~= 'table' or tonumber(entry.expires) == nil or tonumber(entry.expires) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    for s in string.gmatch(entry.subs or '', '[^,]+') do
      counts[s] = (counts[s] or 0) + 1
      if all[i] ~= me then others[s] = true end
      if not before[s] then before[s] = true; nbefore = nbefore + 1 end
    end
  end
end
local after, nafter = {}, 0
for s in pairs(others) do after[s] = true; nafter = nafter + 1 end
for s in string.gmatch(ARGV[3], '[^,]+') do
  if not after[s] then after[s] = true; nafter = nafter + 1 end
end
if ARGV[6] == '1' and nafter > tonumber(ARGV[5]) and nafter > nbefore then
  local out = {0}
  for s, n in pairs(counts) do table.insert(out, s .. '=' .. n) end
  return out
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], me)
else
  local ttl = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], me, cjson.encode({info = ARGV[2], subs = ARGV[3], expires = now + ttl}))
  redis.call('PEXPIRE', KEYS[1], ttl * 10)
end
return {1}
"""

# KEYS[1] wants hash: drop expired holders, return {now, holder, entry, ...}.
LIVE_WANTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {tostring(now)}
for i = 1, #all, 2 do
  local ok, entry = pcall(cjson.decode, all[i + 1])
  if (not ok) or type(entry) ~= 'table' or tonumber(entry.expires) == nil or tonumber(entry.expires) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return out
"""


class StreamKeys:
    """The Redis names of one app key's session: ``<prefix>:stream:{<digest>}:...``."""

    def __init__(self, prefix: str, app_key: str) -> None:
        digest = key_id(app_key)
        self.digest = digest[:16]
        base = f"{prefix}:stream:{{{digest}}}"
        self.owner = f"{base}:owner"
        self.generation = f"{base}:generation"
        self.state = f"{base}:state"
        self.wants = f"{base}:wants"
        self.approval = f"{base}:approval"
        self.frames = f"{base}:frames"
        self.nudges = f"{base}:nudges"


class RedisCoordinator:
    """The fenced owner lease (see the module docstring)."""

    def __init__(self, client: Any, keys: StreamKeys, ttl: float = OWNER_TTL, margin: float = FENCE_MARGIN) -> None:
        self._client = client
        self._keys = keys
        self.ttl = ttl
        self.margin = margin
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._state = client.register_script(STATE)
        self._token: str | None = None
        self._confirmed = 0.0
        self._generation = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def try_acquire(self, me: HolderInfo) -> int | None:
        if self.held():
            return self._generation
        token = f"{me.holder}:{uuid.uuid4().hex[:8]}"
        sent = time.monotonic()
        info = json.dumps({"info": me.to_dict(), "generation": 0, "session_since": None, "active": []})
        generation = int(
            self._acquire(
                keys=[self._keys.owner, self._keys.generation, self._keys.state],
                args=[token, int(self.ttl * 1000), info, int(self.ttl * 1000)],
            )
        )
        if not generation:
            return None
        with self._lock:
            self._token, self._confirmed, self._generation = token, sent, generation
            self._stop = threading.Event()
        threading.Thread(target=self._renew_loop, args=(token, self._stop), name="kis-rt-lease", daemon=True).start()
        return generation

    def _renew_loop(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 4):
            sent = time.monotonic()
            try:
                ok = int(self._renew(keys=[self._keys.owner], args=[token, int(self.ttl * 1000)]))
            except Exception as exc:  # a slow or lost server: held() runs out by itself
                _log.warning("renewing the session lease failed: %s", exc)
                continue
            with self._lock:
                if self._token != token:
                    return
                if not ok:
                    _log.warning("the session lease was lost (it lapsed, or the store lost it)")
                    self._token = None
                    return
                self._confirmed = sent

    def held(self) -> bool:
        with self._lock:
            return self._token is not None and time.monotonic() - self._confirmed < self.ttl - self.margin

    def release(self) -> None:
        with self._lock:
            token, self._token = self._token, None
            self._stop.set()
        if token is None:
            return
        try:
            self._release(keys=[self._keys.owner, self._keys.state], args=[token])
        except Exception as exc:  # it lapses within the ttl anyway
            _log.warning("releasing the session lease failed: %s", exc)

    def publish_state(self, info: OwnerInfo) -> None:
        token = self._token
        if token is None:
            return
        document = {
            "info": info.owner.to_dict(),
            "generation": info.generation,
            "session_since": info.session_since,
            "active": list(info.active),
        }
        self._state(keys=[self._keys.owner, self._keys.state], args=[token, json.dumps(document), 10_000])

    def state(self) -> OwnerInfo | None:
        raw = self._client.get(self._keys.state)
        if raw is None or self._client.get(self._keys.owner) is None:
            return None
        try:
            document = json.loads(text(raw))
        except ValueError:
            return None
        owner = HolderInfo.from_dict(document.get("info"))
        if owner is None:
            return None
        since = document.get("session_since")
        return OwnerInfo(
            owner,
            int(document.get("generation", 0) or 0),
            float(since) if isinstance(since, (int, float)) else None,
            tuple(str(s) for s in document.get("active", [])),
        )


class RedisWants:
    """The shared registry as a hash changed by Lua (see the module docstring)."""

    def __init__(self, client: Any, keys: StreamKeys, cap: int = SUBSCRIPTION_CAP, ttl: float = WANTS_TTL) -> None:
        self._keys = keys
        self.cap = cap
        self.ttl = ttl
        self._put = client.register_script(PUT_WANTS)
        self._live = client.register_script(LIVE_WANTS)

    def put(self, holder: HolderInfo, wants: frozenset[Subscription], *, check_cap: bool = True) -> None:
        mine = ",".join(sorted(str(s) for s in wants))
        reply = self._put(
            keys=[self._keys.wants],
            args=[
                holder.holder,
                json.dumps(holder.to_dict()),
                mine,
                int(self.ttl * 1000),
                self.cap,
                "1" if check_cap else "0",
            ],
        )
        if int(reply[0]) == 1:
            return
        counts: dict[str, int] = {}
        for item in reply[1:]:
            name, _, count = text(item).rpartition("=")
            counts[name] = int(count)
        added = [s for s in wants if str(s) not in counts]
        raise limit_error(self.cap, added, counts)

    def remove(self, holder: HolderInfo) -> None:
        self.put(holder, frozenset(), check_cap=False)

    def _entries(self) -> tuple[float, list[tuple[str, dict[str, Any]]]]:
        reply = self._live(keys=[self._keys.wants])
        now = float(text(reply[0]))
        entries = []
        for i in range(1, len(reply) - 1, 2):
            try:
                entry = json.loads(text(reply[i + 1]))
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append((text(reply[i]), entry))
        return now, entries

    def union(self) -> dict[Subscription, frozenset[str]]:
        found: dict[Subscription, set[str]] = {}
        for holder, entry in self._entries()[1]:
            for item in str(entry.get("subs", "")).split(","):
                subscription = subscription_of(item)
                if subscription is not None:
                    found.setdefault(subscription, set()).add(holder)
        return {s: frozenset(h) for s, h in found.items()}

    def holders(self) -> list[tuple[HolderInfo, frozenset[Subscription], float]]:
        now, entries = self._entries()
        rows = []
        for _, entry in entries:
            try:
                info = HolderInfo.from_dict(json.loads(str(entry.get("info", ""))))
            except ValueError:
                info = None
            if info is None:
                continue
            subs = frozenset(
                s for s in (subscription_of(x) for x in str(entry.get("subs", "")).split(",")) if s is not None
            )
            rows.append((info, subs, (float(entry.get("expires", now)) - now) / 1000.0))
        return rows


class RedisApprovals:
    """The approval key under ``...:approval`` with a TTL below KIS's 24 h."""

    def __init__(self, client: Any, keys: StreamKeys) -> None:
        self._client = client
        self._keys = keys

    def read(self) -> str | None:
        value = self._client.get(self._keys.approval)
        return None if value is None else text(value)

    def write(self, key: str) -> None:
        self._client.set(self._keys.approval, key, px=int(APPROVAL_MAX_AGE * 1000))


class RedisBackend:
    """Everything one app key's session needs on a Redis store, beside the token's keys."""

    kind = "redis"
    silence_bound: float | None = SILENCE_BOUND

    def __init__(self, client: Any, prefix: str, app_key: str) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = StreamKeys(prefix, app_key)
        self.coordinator = RedisCoordinator(client, self.keys)
        self.wants = RedisWants(client, self.keys)
        self.approvals = RedisApprovals(client, self.keys)

    def relay_server(self) -> RelayServer:
        from .relay_redis import RedisRelayServer

        return RedisRelayServer(self.client, self.keys.frames, self.keys.nudges)

    def relay_client(self) -> RelayClient:
        from .relay_redis import RedisRelayClient

        return RedisRelayClient(self.client, self.keys.frames, self.keys.nudges)

    def describe(self) -> str:
        pool = getattr(self.client, "connection_pool", None)
        where = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
        server = f"{where.get('host', '?')}:{where.get('port', '?')}:{where.get('db', 0)}"
        return f"redis:{server}:{self.prefix}:{self.keys.digest}"
