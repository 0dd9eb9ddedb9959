"""Lua scripts that move a fleet breaker between states atomically.

Every transition happens inside one script, so two workers can never both see "open, timeout
elapsed" and both send a trial (pybreaker's ``CircuitRedisStorage`` uses plain GET/SET and lets
every process trial at once). Time comes from the Redis server (``TIME``), so the fleet shares
one clock. Floats are returned as strings: Lua numbers become integers on the way out.

Breaker hash fields: ``state`` (closed | open | half-open), ``failures`` (consecutive),
``opened_at`` (server seconds), ``successes`` (successful trials in this half-open period).
The trial-lease sorted set holds one member per trial in flight, scored by lease expiry.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: breaker, trial leases, call window, delivery counter, then keys to read (watched)
# ARGV: reset_timeout, trial_calls, trial_lease, window (0 = off), token, delivery_ttl (0 = off)
# Returns {decision, state, failures, wait, deliveries, transition, {watched values}}
#   decision: 0 refused, 1 admitted, 2 admitted as a half-open trial
# The watched keys (today's spend, a provider cool-down...) ride along so the other admission
# checks cost no round trip of their own.
ADMIT = (
    _NOW
    + """
local watched = {}
for i = 5, #KEYS do watched[i - 4] = redis.call('GET', KEYS[i]) or '' end
local deliveries = 0
if tonumber(ARGV[6]) > 0 then
  deliveries = redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
local b = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at')
local state = b[1] or 'closed'
local failures = tonumber(b[2] or '0')
if state == 'closed' then
  local window = tonumber(ARGV[4])
  if window > 0 then
    redis.call('HINCRBY', KEYS[3], math.floor(now), 1)
    redis.call('EXPIRE', KEYS[3], window + 1)
  end
  return {1, state, failures, '0', deliveries, '', watched}
end
local transition = ''
if state == 'open' then
  local reopen = tonumber(b[3] or '0') + tonumber(ARGV[1])
  if now < reopen then
    return {0, state, failures, tostring(reopen - now), deliveries, '', watched}
  end
  redis.call('HSET', KEYS[1], 'state', 'half-open', 'successes', 0)
  redis.call('DEL', KEYS[2])
  state = 'half-open'
  transition = 'open>half-open'
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[5])
  return {2, state, failures, '0', deliveries, transition, watched}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = math.min(tonumber(first[2]) - now, tonumber(ARGV[1]))
return {0, state, failures, tostring(wait), deliveries, transition, watched}
"""
)

# KEYS: breaker, trial leases, call window, failure window
# ARGV: fail_max, token ('' when not a trial), window (0 = off), min_calls, failure_rate
# Returns {old_state, new_state, failures}
RECORD_FAILURE = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half-open' then
  if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[2]) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'successes', 0)
    redis.call('DEL', KEYS[2])
    return {state, 'open', tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')}
  end
  return {state, state, 0}
end
if state == 'open' then
  return {state, state, 0}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local tripped = failures >= tonumber(ARGV[1])
local window = tonumber(ARGV[3])
if window > 0 then
  local second = math.floor(now)
  redis.call('HINCRBY', KEYS[4], second, 1)
  redis.call('EXPIRE', KEYS[4], window + 1)
  local oldest = second - window + 1
  local calls, fails = 0, 0
  local function total(key)
    local sum = 0
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do
      if tonumber(flat[i]) < oldest then
        redis.call('HDEL', key, flat[i])
      else
        sum = sum + tonumber(flat[i + 1])
      end
    end
    return sum
  end
  calls = total(KEYS[3])
  fails = total(KEYS[4])
  if calls >= tonumber(ARGV[4]) and fails >= calls * tonumber(ARGV[5]) then
    tripped = true
  end
end
if tripped then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'successes', 0)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  return {state, 'open', failures}
end
return {state, state, failures}
"""
)

# KEYS: breaker, trial leases
# ARGV: token ('' when not a trial), success_threshold
# Returns {old_state, new_state}
RECORD_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half-open' then
  if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
    if successes >= tonumber(ARGV[2]) then
      redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'successes', 0)
      redis.call('DEL', KEYS[2])
      return {state, 'closed'}
    end
  end
  return {state, state}
end
if state == 'closed' then
  redis.call('HSET', KEYS[1], 'failures', 0)
end
return {state, state}
"""

# KEYS: breaker, trial leases, call window, failure window
# ARGV: new state
# Returns {old_state, new_state}
FORCE_STATE = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'failures', 0, 'successes', 0,
           'opened_at', tostring(now))
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {state, ARGV[1]}
"""
)
