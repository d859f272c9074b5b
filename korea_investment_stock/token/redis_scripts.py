"""The Lua scripts behind the Redis token stores, one constant per atomic step.

Why scripts: each step (store + expiry, take the lease, fenced save + release +
publish) must be one indivisible server-side action, or another server can act
in the gap.  Every key a script touches arrives in ``KEYS``; none is built
inside Lua, so all of them can share one cluster hash slot (see
:class:`~.redis.RedisKeys`).  Numbers cross the boundary as strings, and the
scripts return only integers and strings (Lua floats would be truncated).

Whatever sits under our names, the scripts heal rather than wedge: a key of
the wrong type, or a hash a reader would reject (missing fields, an expiry no
calendar shows such as ``inf``), counts as "no token" and is replaced, the way
the file store replaces a damaged file.  They read with ``redis.pcall`` so
that costs nothing on the normal path.

Hash fields written: ``access_token``, ``access_token_token_expired``,
``timestamp``, ``api_key``, ``fingerprint``, ``token_type``, ``expires_at``,
``issued_at`` and ``generation``.  Never the app secret.
"""

from __future__ import annotations

#: 9999-12-31 23:59:59 KST: the last expiry a reader can show as KIS's expiry
#: string.  A stored expiry at or beyond it is unreadable, so it blocks nothing.
MAX_READABLE_EXPIRY = 253402268399

_STORED_TOKEN = f"""
-- The stored token's expiry and generation.  The expiry is nil when the hash is
-- not a token a reader would accept (wrong type, missing fields, NaN, inf, a
-- year past 9999): such a hash must never block a save.
local function stored_token(key)
  local fields = redis.pcall('HMGET', key, 'expires_at', 'generation', 'access_token', 'fingerprint', 'api_key')
  if fields.err then
    return nil, 0
  end
  local generation = tonumber(fields[2]) or 0
  if generation ~= generation then
    generation = 0
  end
  local expiry = tonumber(fields[1])
  if not (fields[3] and fields[4] and fields[5]) or not expiry or expiry ~= expiry
      or expiry >= {MAX_READABLE_EXPIRY} then
    return nil, generation
  end
  return expiry, generation
end
"""

_DEAD = """
-- True when the token with this digest was found dead (compare-and-delete) and must never be
-- stored again.  A tombstone key of the wrong type names nothing.
local function dead(key, digest)
  local found = redis.pcall('HGET', key, digest)
  return found ~= false and type(found) ~= 'table'
end
"""

#: Store a token hash and its absolute expiry together, unless the stored token
#: expires later (a newer token is never replaced by an older one), or the token
#: was found dead.  The stored ``generation`` is kept, so an unfenced write
#: cannot reset the fence.
#: KEYS: token, tombstones.  ARGV: expires_at (s), expire_at (ms, for PEXPIREAT), token digest,
#: field/value pairs...
#: Returns 1 when stored, 0 when a newer token was kept or the token is dead.
STORE = (
    _STORED_TOKEN
    + _DEAD
    + """
local stored_expiry, stored_generation = stored_token(KEYS[1])
if (stored_expiry and stored_expiry > tonumber(ARGV[1])) or dead(KEYS[2], ARGV[3]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'generation', tostring(stored_generation), unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
)

_HELPERS = """
-- A string key's value and PTTL, or false.  A value of the wrong type is dropped, and
-- so is one without a TTL: a lease or marker that can never expire would wedge the fleet.
local function live(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err then
    redis.call('DEL', key)
    return false, -2
  end
  if not value then
    return false, -2
  end
  local ttl = redis.call('PTTL', key)
  if ttl == -1 then
    redis.call('DEL', key)
    return false, -2
  end
  return value, ttl
end
-- A counter key as a whole number in [0, 2^52), else 0 (missing, wrong type, garbage).
local function counter(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err then
    redis.call('DEL', key)
    return 0
  end
  local number = tonumber(value)
  if not number or number ~= number or number < 0 or number >= 2^52 then
    return 0
  end
  return math.floor(number)
end
"""

#: The fenced save of a freshly issued token (KIS's fencing-token check, done
#: at the resource).  The ``fence`` key holds the highest generation that ever
#: wrote or invalidated this token slot.  We store if we still hold the lease,
#: or if our generation is newer than the fence (nobody since our lease wrote
#: or deleted here: our token is the newest KIS gave), and never over a token
#: that expires later, nor a token found dead: KIS hands back the same token
#: for hours, so a lease granted before a compare-and-delete may come back from
#: tokenP with exactly the token that was deleted.  A replay of a save that
#: already succeeded (redis-py retries a command whose reply was lost) answers
#: "stored" again.  Then: clear our credential's failure marker, release our
#: lease, publish "ready".
#: KEYS: token, lock, fence, failed marker (ours), tombstones.
#: ARGV: owner, generation, expires_at (s), expire_at (ms), channel, fence TTL (ms), access_token,
#: token digest, field/value pairs...
#: Returns 1 when stored (now or by the replayed call), 0 when refused.
FENCED_SAVE = (
    _STORED_TOKEN
    + _HELPERS
    + _DEAD
    + """
local holds = redis.pcall('GET', KEYS[2]) == ARGV[1]
local generation = tonumber(ARGV[2])
local fence = counter(KEYS[3])
local stored_expiry, stored_generation = stored_token(KEYS[1])
local saved = 0
if stored_expiry and stored_generation == generation
    and redis.pcall('HGET', KEYS[1], 'access_token') == ARGV[7] then
  saved = 1
elseif (holds or generation > fence) and not (stored_expiry and stored_expiry > tonumber(ARGV[3]))
    and not dead(KEYS[5], ARGV[8]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'generation', ARGV[2], unpack(ARGV, 9))
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  if generation > fence then
    redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[6])
  end
  redis.call('DEL', KEYS[4])
  saved = 1
end
if holds then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[5], 'ready')
return saved
"""
)

#: Try to become the issuer.  A live failure marker for *our* credential wins
#: (the fleet waits it out instead of retrying KIS; another secret's failure
#: is not ours); then the lease, taken with SET NX PX.  Its generation is above
#: the last one granted, above the fence, and at least the server's clock in
#: milliseconds, so it never goes backwards: not after a delete, not after the
#: counter was evicted, flushed or lost in a failover.  Re-running it after a
#: lost reply is harmless: the owner check returns the lease we already hold.
#: KEYS: lock, generation counter, failed marker (ours), fence.
#: ARGV: owner, lease (ms), counter TTL (ms).
#: Returns {'lead', generation} | {'wait', lease PTTL ms} | {'failed', marker PTTL ms, marker}.
ACQUIRE = (
    _HELPERS
    + """
local failed, failed_ttl = live(KEYS[3])
if failed then
  return {'failed', failed_ttl, failed}
end
local holder, holder_ttl = live(KEYS[1])
if holder == ARGV[1] then
  return {'lead', counter(KEYS[2])}
end
if holder then
  return {'wait', holder_ttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local now = redis.call('TIME')
local clock_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local generation = math.max(counter(KEYS[2]) + 1, counter(KEYS[4]) + 1, clock_ms)
redis.call('SET', KEYS[2], string.format('%.0f', generation), 'PX', ARGV[3])
return {'lead', generation}
"""
)

#: Extend our lease while a slow issuance runs; a lease we lost stays lost.
#: KEYS: lock.  ARGV: owner, lease (ms).  Returns 1 when extended, else 0.
RENEW = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: Is the lease still ours?  Asked before every tokenP call.
#: KEYS: lock.  ARGV: owner.  Returns 1 when held, else 0.
HELD = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"""

#: Give the lease back without a new token (a peer's token was found, or the
#: issuance failed).  On failure, leave a short marker for our credential so
#: other servers do not stampede KIS with retries.  Either way publish, so
#: waiters look again now.
#: KEYS: lock, failed marker (ours).  ARGV: owner, channel, marker TTL (ms, "0" for none), marker text.
#: Returns 1 when the lease was ours, else 0 (and then writes nothing).
RELEASE = """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
  redis.call('PUBLISH', ARGV[2], 'failed')
else
  redis.call('PUBLISH', ARGV[2], 'released')
end
return 1
"""

#: Write a value only while a lease is ours: what the holder of a long-lived lease publishes (the
#: real-time owner's session state, the approval key it issued) can never come from a holder that
#: lost the lease, whatever its clock believed.
#: KEYS: lock, target.  ARGV: owner, value, TTL (ms).  Returns 1 when written, else 0.
FENCED_SET = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

#: Delete the stored token only if it is still the one that failed, so callers
#: that saw the same dead token delete it once and never delete its successor.
#: The fence rises to the deleted token's generation, so a delayed save of any
#: older token can never come back; and the token is remembered as dead (its
#: digest and expiry in the tombstones hash) for as long as it could live, so
#: no save brings *it* back, whatever the lease.  Tombstones of tokens past
#: their expiry are dropped here; the hash itself expires with the fence.
#: KEYS: token, fence, tombstones.  ARGV: access_token, fence TTL (ms), token digest.
#: Returns 1 when deleted, else 0.
COMPARE_AND_DELETE = (
    _HELPERS
    + """
if redis.pcall('HGET', KEYS[1], 'access_token') ~= ARGV[1] then
  return 0
end
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation')) or 0
if generation == generation and generation > counter(KEYS[2]) and generation < 2^52 then
  redis.call('SET', KEYS[2], string.format('%.0f', generation), 'PX', ARGV[2])
end
local expiry = tonumber(redis.call('HGET', KEYS[1], 'expires_at')) or 0
local now = tonumber(redis.call('TIME')[1])
local tombstones = redis.pcall('HGETALL', KEYS[3])
if tombstones.err then
  redis.call('DEL', KEYS[3])
else
  for i = 1, #tombstones, 2 do
    if (tonumber(tombstones[i + 1]) or 0) < now then
      redis.call('HDEL', KEYS[3], tombstones[i])
    end
  end
end
if expiry <= now then
  expiry = now + 86400  -- an expiry we cannot read: a day, a token's whole life
end
redis.call('HSET', KEYS[3], ARGV[3], string.format('%.0f', expiry))
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return redis.call('DEL', KEYS[1])
"""
)

#: Every script, by name, for tests and for ``SCRIPT LOAD`` tooling.
ALL_SCRIPTS: dict[str, str] = {
    "store": STORE,
    "fenced_save": FENCED_SAVE,
    "acquire": ACQUIRE,
    "renew": RENEW,
    "held": HELD,
    "release": RELEASE,
    "fenced_set": FENCED_SET,
    "compare_and_delete": COMPARE_AND_DELETE,
}
