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

#: Store a token hash and its absolute expiry together, unless the stored token
#: expires later (a newer token is never replaced by an older one).  The stored
#: ``generation`` is kept, so an unfenced write cannot reset the fence.
#: KEYS: token.  ARGV: expires_at (s), expire_at (ms, for PEXPIREAT), field/value pairs...
#: Returns 1 when stored, 0 when a newer token was kept.
STORE = (
    _STORED_TOKEN
    + """
local stored_expiry, stored_generation = stored_token(KEYS[1])
if stored_expiry and stored_expiry > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'generation', tostring(stored_generation), unpack(ARGV, 3))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
)

#: The fenced save of a freshly issued token.  Stores only if we still hold the
#: lease, or if our generation is newer than the stored one, and never over a
#: token that expires later.  Then: clear any failure marker, release our lease,
#: and publish "ready" so waiting servers re-read at once.
#: KEYS: token, lock, failed.
#: ARGV: owner, generation, expires_at (s), expire_at (ms), channel, field/value pairs...
#: Returns 1 when stored, 0 when refused.
FENCED_SAVE = (
    _STORED_TOKEN
    + """
local holds = redis.pcall('GET', KEYS[2]) == ARGV[1]
local stored_expiry, stored_generation = stored_token(KEYS[1])
local saved = 0
if (holds or tonumber(ARGV[2]) > stored_generation)
    and not (stored_expiry and stored_expiry > tonumber(ARGV[3])) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'generation', ARGV[2], unpack(ARGV, 6))
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  redis.call('DEL', KEYS[3])
  saved = 1
end
if holds then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[5], 'ready')
return saved
"""
)

#: Try to become the issuer.  A live failure marker wins (the fleet waits it
#: out instead of retrying KIS); then the lease, taken with SET NX PX and
#: numbered by a generation counter for the fenced save.  Re-running it after
#: a lost reply is harmless: the owner check returns the lease we already hold.
#: A lease, marker or counter of the wrong type is dropped; a counter that is
#: not a number restarts above the stored token's generation.
#: KEYS: lock, generation counter, failed, token.  ARGV: owner, lease (ms), counter TTL (ms).
#: Returns {'lead', generation} | {'wait', lease PTTL ms} | {'failed', marker PTTL ms, marker}.
ACQUIRE = """
local function read(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err then
    redis.call('DEL', key)
    return false
  end
  return value
end
local failed = read(KEYS[3])
if failed then
  return {'failed', redis.call('PTTL', KEYS[3]), failed}
end
local holder = read(KEYS[1])
if holder == ARGV[1] then
  return {'lead', tonumber(read(KEYS[2])) or 0}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local generation = redis.pcall('INCR', KEYS[2])
  if type(generation) == 'table' then
    local stored = tonumber(redis.pcall('HGET', KEYS[4], 'generation')) or 0
    if stored ~= stored or stored < 0 or stored >= 2^52 then
      stored = 0
    end
    generation = math.floor(stored) + 1
    redis.call('SET', KEYS[2], generation)
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {'lead', generation}
end
return {'wait', redis.call('PTTL', KEYS[1])}
"""

#: Extend our lease while a slow issuance runs; a lease we lost stays lost.
#: KEYS: lock.  ARGV: owner, lease (ms).  Returns 1 when extended, else 0.
RENEW = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: Give the lease back without a new token (a peer's token was found, or the
#: issuance failed).  On failure, leave a short marker so other servers do not
#: stampede KIS with retries.  Either way publish, so waiters look again now.
#: KEYS: lock, failed.  ARGV: owner, channel, marker TTL (ms, "0" for none), marker text.
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

#: Delete the stored token only if it is still the one that failed, so callers
#: that saw the same dead token delete it once and never delete its successor.
#: KEYS: token.  ARGV: access_token.  Returns 1 when deleted, else 0.
COMPARE_AND_DELETE = """
if redis.pcall('HGET', KEYS[1], 'access_token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Every script, by name, for tests and for ``SCRIPT LOAD`` tooling.
ALL_SCRIPTS: dict[str, str] = {
    "store": STORE,
    "fenced_save": FENCED_SAVE,
    "acquire": ACQUIRE,
    "renew": RENEW,
    "release": RELEASE,
    "compare_and_delete": COMPARE_AND_DELETE,
}
