"""The Redis store's coordination for one app key's session: the store's lease, a capped hash of wants.

Why the store's own lease: one coordination primitive serves every "exactly one in the fleet" job
(architecture.md). The owner holds the token store's lease for the purpose ``stream-owner``
(:meth:`~..token.redis.RedisTokenStorage.purpose_lease`): the same ``SET NX PX`` script with a
fencing generation, owner-checked renewal and release as the token issuer's, on the key
``<token key>:stream-owner:lock`` beside the token's. Redis cannot tell that a process died, only
that it stopped renewing; so the lease is short (:data:`OWNER_TTL`) and the owner trusts it only
``ttl - margin`` past the last renewal the server confirmed: then
:meth:`RedisCoordinator.held` turns false and the node closes the socket at once, before the lease
can lapse and anyone else may acquire. A SIGSTOP'd owner loses the lease the same way and fences
itself the moment it runs again. What the owner writes (its session state, the approval key it
issued) goes through the lease's fenced write, so a holder that lost the lease writes nothing.

The wants are one hash, ``holder -> {info, subs, expires}``, changed only by Lua scripts that read
the server's clock (``TIME``), drop expired holders, and refuse a change that would grow the union
past the cap, all in one step. Every name carries the app key's ``{digest}`` hash tag (one cluster
slot), beside the token's keys under the store's prefix.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..token.lease import STREAM_OWNER
from ..token.record import key_id
from ..token.redis import RedisHeldLease, RedisTokenStorage
from ..token.redis_connect import text
from .owner import APPROVAL_MAX_AGE, WANTS_TTL, HolderInfo, OwnerInfo, RelayClient, RelayServer, limit_error
from .registry import SUBSCRIPTION_CAP, Subscription
from .relay import subscription_of

__all__ = ["OWNER_TTL", "RedisBackend", "RedisCoordinator", "RedisWants", "StreamKeys"]

_log = logging.getLogger(__name__)

#: The owner's lease (seconds), renewed every fifth of it: short, since a dead owner delays failover
#: by up to one lease (the 3 s target), and self-fencing, not the length, protects the socket.
OWNER_TTL = 2.0
#: The owner stops trusting its lease this long before it could lapse (clock drift, a slow reply).
FENCE_MARGIN = 0.5
#: A follower calls the owner gone after this long without any relayed message (the owner's state
#: goes out every 0.5 s, so this is four missed beats).
SILENCE_BOUND = 2.0
#: How long the owner's published state lives without a refresh (``stream-status`` of a dead owner).
STATE_TTL = 10.0

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
    """The Redis names of one app key's session data: ``<prefix>:stream:{<digest>}:...``.

    The owner's lease is not here: it is the token store's, for the purpose ``stream-owner``.
    """

    def __init__(self, prefix: str, app_key: str) -> None:
        digest = key_id(app_key)
        self.digest = digest[:16]
        base = f"{prefix}:stream:{{{digest}}}"
        self.state = f"{base}:state"
        self.wants = f"{base}:wants"
        self.approval = f"{base}:approval"
        self.frames = f"{base}:frames"
        self.nudges = f"{base}:nudges"


class RedisCoordinator:
    """The owner election: the store's ``stream-owner`` lease, plus the owner's published state."""

    def __init__(self, client: Any, keys: StreamKeys, lease: RedisHeldLease) -> None:
        self._client = client
        self._keys = keys
        self.lease = lease

    def try_acquire(self, me: HolderInfo) -> int | None:
        generation = self.lease.try_acquire()
        if generation is not None:
            self.publish_state(OwnerInfo(me, generation))
        return generation

    def held(self) -> bool:
        return self.lease.held()

    def keep(self) -> None:
        self.lease.keep()

    def release(self) -> None:
        self.lease.release()  # the state lingers until STATE_TTL, but state() asks the lease first

    def publish_state(self, info: OwnerInfo) -> None:
        document = {
            "info": info.owner.to_dict(),
            "generation": info.generation,
            "session_since": info.session_since,
            "active": list(info.active),
        }
        self.lease.fenced_set(self._keys.state, json.dumps(document), STATE_TTL)

    def state(self) -> OwnerInfo | None:
        raw = self._client.get(self._keys.state)
        if raw is None or not self.lease.is_taken():
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
    """The approval key under ``...:approval`` with a TTL below KIS's 24 h, written under the owner's lease.

    Each Approval call kills the previous key, so issuing is the owner's job alone: the node issues
    only while its lease holds, and the write is fenced by the lease, so a key issued by an owner
    that has just lost the lease is never stored over its successor's.
    """

    def __init__(self, client: Any, keys: StreamKeys, lease: RedisHeldLease) -> None:
        self._client = client
        self._keys = keys
        self._lease = lease

    def read(self) -> str | None:
        value = self._client.get(self._keys.approval)
        return None if value is None else text(value)

    def write(self, key: str) -> bool:
        return self._lease.fenced_set(self._keys.approval, key, APPROVAL_MAX_AGE)


class RedisBackend:
    """Everything one app key's session needs on a Redis store, beside the token's keys."""

    kind = "redis"
    silence_bound: float | None = SILENCE_BOUND

    def __init__(self, store: RedisTokenStorage, app_key: str) -> None:
        self.client = store.redis_client
        self.prefix = store.key_prefix
        self.keys = StreamKeys(self.prefix, app_key)
        lease = store.purpose_lease(app_key, STREAM_OWNER, lease_seconds=OWNER_TTL, fence_margin=FENCE_MARGIN)
        self.coordinator = RedisCoordinator(self.client, self.keys, lease)
        self.wants = RedisWants(self.client, self.keys)
        self.approvals = RedisApprovals(self.client, self.keys, lease)

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
