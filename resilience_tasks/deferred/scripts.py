"""Lua scripts of the deferred store: writes and claims are atomic, times are the server's.

Keys (one team's): a sorted set of task ids scored by due time; for each resource, a sorted set
of ids *parked* on its breaker, scored by when they were parked (first in, first out, so a task
whose trial failed goes to the back of the line), and its expiry index, scored by when each
expires (``max_defer_age`` after it was first deferred: expired work is released to its worker,
which dead-letters it); a hash of
task id -> message JSON; a sorted set of claimed ids scored by claim expiry; a hash counting
failed publishes per id.

A claimed message stays in the hash while it is published and until a worker starts it
(``STARTED``): a claim that expires (the pump died before publishing, or the published message
was lost between the broker and a worker) is put back in the due set and published again.

Parked work is released by the breaker's state (``RELEASE_PARKED``): while the breaker is open
nothing; once a trial may run, at most as many entries as trials may be in flight, one batch
per ``reset_timeout`` (a marker key with that expiry); once it is closed, everything.
The breaker hash is read for ``state``, ``opened_at`` and ``reset_timeout`` (the fleet-wide
value set through the breaker, when there is one), the trial leases by their expiry scores.
"""

from __future__ import annotations

from resilience_tasks.state.lua import with_clock

# KEYS: due, messages, delivery counter; ARGV: task_id, message json, delay seconds
# Returns the due time (server seconds) as a string.
DEFER = with_clock("""
local due = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], due, ARGV[1])
redis.call('DEL', KEYS[3])
return tostring(due)
""")

# KEYS: parked, expiry index, messages, delivery counter
# ARGV: task_id, message json, seconds until it expires. Returns its expiry (server seconds).
PARK = with_clock("""
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('DEL', KEYS[4])
return tostring(expires)
""")

# KEYS: due, messages, claims; ARGV: limit, claim lease seconds
# Returns a flat list: id1, message1, id2, message2, ...
CLAIM_DUE = with_clock("""
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], 'NX', now, id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local message = redis.call('HGET', KEYS[2], id)
  if message then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), id)
    table.insert(out, id)
    table.insert(out, message)
  end
end
return out
""")

# KEYS: messages, claims, then per resource: parked, expiry index, breaker, trial leases,
#       release marker
# ARGV: limit, claim lease seconds, then per resource: default reset_timeout, trial_calls
# Returns a flat list: id1, message1, id2, message2, ...
RELEASE_PARKED = with_clock("""
local limit = tonumber(ARGV[1])
local out = {}
local taken = 0
local function claim(parked, expiry, id)
  redis.call('ZREM', parked, id)
  redis.call('ZREM', expiry, id)
  local message = redis.call('HGET', KEYS[1], id)
  if message then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    table.insert(out, id)
    table.insert(out, message)
    taken = taken + 1
  end
end
for r = 0, (#KEYS - 2) / 5 - 1 do
  local parked, expiry, breaker = KEYS[3 + 5 * r], KEYS[4 + 5 * r], KEYS[5 + 5 * r]
  local leases, marker = KEYS[6 + 5 * r], KEYS[7 + 5 * r]
  -- work that waited too long goes back to its worker, which dead-letters it
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0,
                                 math.max(0, limit - taken))) do
    claim(parked, expiry, id)
  end
  local take = 0
  if taken < limit and redis.call('ZCARD', parked) > 0 then
    local b = redis.call('HMGET', breaker, 'state', 'opened_at', 'reset_timeout')
    local state = b[1] or 'closed'
    if state == 'closed' then
      take = limit - taken
    elseif redis.call('EXISTS', marker) == 0 then
      local reset = tonumber(b[3] or ARGV[3 + 2 * r])
      if state == 'half-open' or now >= tonumber(b[2] or '0') + reset then
        local live = redis.call('ZCOUNT', leases, now, '+inf')
        take = math.min(limit - taken, tonumber(ARGV[4 + 2 * r]) - live)
        if take > 0 then
          redis.call('SET', marker, '1', 'PX', math.max(1, math.ceil(reset * 1000)))
        end
      end
    end
  end
  if take > 0 then
    for _, id in ipairs(redis.call('ZRANGE', parked, 0, take - 1)) do
      claim(parked, expiry, id)
    end
  end
end
return out
""")

# KEYS: claims, publish failures; ARGV: lease seconds, task ids
# The published entries stay claimed until a worker starts them (or the lease expires).
PUBLISHED = with_clock("""
local lease = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', lease, ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return #ARGV - 1
""")

# KEYS: due, messages, claims, parked (this task's resource)
# ARGV: task id. A worker started the work: forget its entry, unless it was deferred again.
STARTED = """
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
"""

# KEYS: due, messages, claims, publish failures
# ARGV: task ids. Forget entries for good (dead-lettered, or acknowledged by an operator).
FORGET = """
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[4], id)
end
return #ARGV
"""

# KEYS: due, messages, claims, then every parked set; ARGV: cursor, count
# Entries whose id is in no set would never be published: make them due now.
# Returns {next cursor, number of orphans made due}.
RECONCILE = with_clock("""
local scan = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local found = 0
local flat = scan[2]
for i = 1, #flat, 2 do
  local id = flat[i]
  local placed = redis.call('ZSCORE', KEYS[1], id) or redis.call('ZSCORE', KEYS[3], id)
  local k = 4
  while not placed and k <= #KEYS do
    placed = redis.call('ZSCORE', KEYS[k], id)
    k = k + 1
  end
  if not placed then
    redis.call('ZADD', KEYS[1], now, id)
    found = found + 1
  end
end
return {scan[1], found}
""")
