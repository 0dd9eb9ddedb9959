"""The Lua of the fleet retry budget, the fleet concurrency limit and the result cache.

Every script that needs the time starts with ``CLOCK`` (server seconds), so the whole fleet
shares one clock; every key arrives in ``KEYS`` from ``KeySpace`` (one hash tag), so the
scripts run on Redis Cluster. Floats leave a script as strings: Lua numbers become integers on
the way out.

The retry budget hash (``KeySpace.retry_budget``) holds one field per second and kind:
``c:<second>`` first calls, ``r:<second>`` retries. The window is the current second and the
``window - 1`` before it. Fields older than that are deleted (always by a withdrawal, by a
deposit once the hash holds more fields than a window can), and the key expires ``window + 1``
seconds after the last write, so an idle resource leaves nothing behind.

The concurrency limit keeps a sorted set of leases (``KeySpace.concurrency_leases``: member
the token, score its expiry) and a hash (``KeySpace.concurrency_limit``) with ``limit`` (the
current AIMD limit, a float; the policy's ``limit`` when absent) and ``decreased_at`` (server
seconds of the last multiplicative decrease).

Both clients run these: ``register_script`` for the sync client, ``run_async`` for
``redis.asyncio`` clients (bound to their event loop, so registered per call: only a SHA-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import redis.asyncio as aioredis

from resilience_tasks.state.lua import with_clock

#: A ``redis.asyncio`` client of one server or of a Redis Cluster.
AsyncStateClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster


async def run_async(
    aclient: AsyncStateClient, source: str, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run ``source`` on ``aclient`` (EVALSHA, loading the script when the server lacks it)."""
    return await aclient.register_script(source)(keys, args)


# A float as a string in full (``tostring`` keeps 14 digits).
_NUM = """
local function num(x) return string.format('%.17g', x) end
"""

# Sums a retry budget's window and deletes the fields older than it. Reads ``now``.
_BUDGET_WINDOW = (
    _NUM
    + """
local function budget_window(key, window, prune)
  local oldest = math.floor(now) - window + 1
  local calls, retries, stale = 0, 0, {}
  local raw = redis.call('HGETALL', key)
  for i = 1, #raw, 2 do
    local kind, second = string.match(raw[i], '^(%a):(%d+)$')
    second = tonumber(second)
    if second == nil or second < oldest then
      stale[#stale + 1] = raw[i]
    elseif kind == 'c' then
      calls = calls + tonumber(raw[i + 1])
    else
      retries = retries + tonumber(raw[i + 1])
    end
  end
  if prune then
    for i = 1, #stale, 100 do
      redis.call('HDEL', key, unpack(stale, i, math.min(i + 99, #stale)))
    end
  end
  return calls, retries
end
"""
)

# A first call was made, as a Lua function other scripts reuse (the task's admission counts
# its first attempt in the same round trip). Reads ``now``.
DEPOSIT_FUNCTION = (
    _BUDGET_WINDOW
    + """
local function budget_deposit(key, window)
  redis.call('HINCRBY', key, 'c:' .. math.floor(now), 1)
  redis.call('EXPIRE', key, window + 1)
  if redis.call('HLEN', key) > 2 * window then budget_window(key, window, true) end
end
"""
)

# KEYS: budget hash. ARGV: window (seconds).
DEPOSIT = with_clock(
    DEPOSIT_FUNCTION
    + """
budget_deposit(KEYS[1], tonumber(ARGV[1]))
return 1
"""
)

# May a retry go out now? Counts it when it may.
# KEYS: budget hash. ARGV: window (seconds), ratio, min_per_second.
# Returns {granted 1/0, calls, retries (this one included), allowed (string)}.
WITHDRAW = with_clock(
    _BUDGET_WINDOW
    + """
local window = tonumber(ARGV[1])
local calls, retries = budget_window(KEYS[1], window, true)
local allowed = tonumber(ARGV[2]) * calls + tonumber(ARGV[3]) * window
if retries + 1 > allowed + 1e-9 then return {0, calls, retries, num(allowed)} end
redis.call('HINCRBY', KEYS[1], 'r:' .. math.floor(now), 1)
redis.call('EXPIRE', KEYS[1], window + 1)
return {1, calls, retries + 1, num(allowed)}
"""
)

# The window's counts, for operators; writes nothing.
# KEYS: budget hash. ARGV: window (seconds), ratio, min_per_second.
# Returns {calls, retries, allowed (string)}.
BALANCE = with_clock(
    _BUDGET_WINDOW
    + """
local window = tonumber(ARGV[1])
local calls, retries = budget_window(KEYS[1], window, false)
return {calls, retries, num(tonumber(ARGV[2]) * calls + tonumber(ARGV[3]) * window)}
"""
)

# The current limit from the limit hash, within the policy's bounds (a policy redeclared with
# a lower ceiling takes effect at once). Arguments may be strings (ARGV values).
_CURRENT_LIMIT = (
    _NUM
    + """
local function current_limit(limit_key, initial, min_limit, ceiling)
  local limit = tonumber(redis.call('HGET', limit_key, 'limit') or initial)
  return math.max(tonumber(min_limit), math.min(tonumber(ceiling), limit))
end
"""
)

# Take a slot: purge expired leases, grant when fewer are in flight than the limit allows
# (its floor, at least min_limit). A token that already holds a live lease is granted again
# (its lease renewed) without taking a second slot.
# KEYS: leases, limit hash. ARGV: token, lease (seconds), initial limit, min_limit, ceiling.
# Returns {granted 1/0, in flight (this lease included), limit (string)}.
ACQUIRE = with_clock(
    _CURRENT_LIMIT
    + """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
local limit = current_limit(KEYS[2], ARGV[3], ARGV[4], ARGV[5])
local allowed = math.max(tonumber(ARGV[4]), math.floor(limit))
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
local in_flight = redis.call('ZCARD', KEYS[1])
if not held then
  if in_flight >= allowed then return {0, in_flight, num(limit)} end
  in_flight = in_flight + 1
end
redis.call('ZADD', KEYS[1], num(now + lease), ARGV[1])
local ms = math.ceil(lease * 1000)
if redis.call('PTTL', KEYS[1]) < ms then redis.call('PEXPIRE', KEYS[1], ms) end
return {1, in_flight, num(limit)}
"""
)

# Give a slot back and move the limit by the call's outcome. A lease that is gone or expired
# frees nothing more and moves nothing (it was, or will be, purged by an acquire). A drop of a
# lease granted before the last decrease is not counted again: one decrease per round of
# calls, as TCP halves its window at most once per round trip.
# KEYS: leases, limit hash. ARGV: token, outcome (success|drop|ignore), lease (seconds),
# initial limit, min_limit, ceiling, backoff.
# Returns {counted 1/0, limit (string)}.
RELEASE = with_clock(
    _CURRENT_LIMIT
    + """
local limit = current_limit(KEYS[2], ARGV[4], ARGV[5], ARGV[6])
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if expiry == nil then return {0, num(limit)} end
redis.call('ZREM', KEYS[1], ARGV[1])
if expiry <= now then return {0, num(limit)} end
local outcome = ARGV[2]
if outcome == 'success' then
  local raised = math.min(tonumber(ARGV[6]), limit + 1 / limit)
  if raised ~= limit then
    limit = raised
    redis.call('HSET', KEYS[2], 'limit', num(limit))
  end
elseif outcome == 'drop' then
  local granted_at = expiry - tonumber(ARGV[3])
  local decreased_at = tonumber(redis.call('HGET', KEYS[2], 'decreased_at') or '0')
  if granted_at >= decreased_at then
    limit = math.max(tonumber(ARGV[5]), limit * tonumber(ARGV[7]))
    redis.call('HSET', KEYS[2], 'limit', num(limit), 'decreased_at', num(now))
  end
end
return {1, num(limit)}
"""
)

# Leases in flight now (expired ones not counted); writes nothing.
# KEYS: leases. Returns the count.
IN_FLIGHT = with_clock(
    _NUM
    + """
return redis.call('ZCOUNT', KEYS[1], '(' .. num(now), '+inf')
"""
)

# Store a result with the server's time: ARGV[1] is a JSON object, to which ``stored_at`` is
# prepended, so an entry stays one JSON object an operator can read with GET.
# KEYS: entry. ARGV: JSON object, ttl (milliseconds). Returns stored_at (string).
CACHE_PUT = with_clock(
    """
local stamp = string.format('%.6f', now)
redis.call('SET', KEYS[1], '{"stored_at":' .. stamp .. ',' .. string.sub(ARGV[1], 2),
           'PX', ARGV[2])
return stamp
"""
)

# An entry and the server's time (for its age). KEYS: entry. Returns {entry or false, now}.
CACHE_GET = with_clock(
    """
return {redis.call('GET', KEYS[1]), string.format('%.6f', now)}
"""
)
