"""Lua scripts that move a fleet breaker between states atomically.

Every transition happens inside one script, so two workers can never both see "open, timeout
elapsed" and both send a trial (pybreaker's ``CircuitRedisStorage`` uses plain GET/SET and lets
every process trial at once). Time comes from the Redis server (``CLOCK``), so the fleet shares
one clock. Floats are returned as strings: Lua numbers become integers on the way out. Every
key is passed in ``KEYS`` and all of one breaker's keys share the ``KeySpace`` hash tag, so the
scripts run on Redis Cluster; optional keys are announced by an ``ARGV`` flag, never by a
placeholder key (which would hash to another slot).

The breaker hash (``KeySpace.breaker``), the one record of a breaker's state:

=================== ===========================================================================
``state``           ``closed`` | ``open`` | ``half-open``; missing means ``closed``
``failures``        consecutive failures; a failed half-open trial adds one too (as pybreaker)
``opened_at``       server seconds (float) of the last opening; set only when it opens
``successes``       successful trials in the current half-open period
``fail_max``        fleet override of the policy's ``fail_max`` (the ``fail_max`` setter)
``reset_timeout``   fleet override of the policy's ``reset_timeout`` (seconds, float)
``success_threshold`` fleet override of the policy's ``success_threshold``
=================== ===========================================================================

An override field wins over the policy's value, which the scripts receive in ``ARGV`` as the
default; so the effective reset timeout is ``HGET reset_timeout`` or else the policy's. The
trial-lease sorted set (``KeySpace.trial_leases``) holds one member per trial in flight, scored
by lease expiry; the call and failure windows are hashes of per-second counts.
"""

from __future__ import annotations

from resilience_tasks.state.lua import CLOCK

#: The breaker's admission, as a Lua function other admission scripts can reuse: prepend
#: ``CLOCK`` (it reads ``now``), then call it. Arguments may be strings (ARGV values).
#: Returns ``decision, state, failures, wait, transition`` where decision is 0 refused,
#: 1 admitted, 2 admitted as a half-open trial; ``wait`` (a string) is the seconds until a
#: refused call could be admitted; ``transition`` is ``'open>half-open'`` or ``''``.
ADMIT_FUNCTION = """
local function breaker_admit(breaker_key, leases_key, window_key, reset_timeout, trial_calls,
                             trial_lease, window, token)
  local b = redis.call('HMGET', breaker_key, 'state', 'failures', 'opened_at', 'reset_timeout')
  local state = b[1] or 'closed'
  local failures = tonumber(b[2] or '0')
  local timeout = tonumber(b[4] or reset_timeout)
  if state == 'closed' then
    window = tonumber(window)
    if window > 0 then
      redis.call('HINCRBY', window_key, math.floor(now), 1)
      redis.call('EXPIRE', window_key, window + 1)
    end
    return 1, state, failures, '0', ''
  end
  local transition = ''
  if state == 'open' then
    local reopen = tonumber(b[3] or '0') + timeout
    if now < reopen then
      return 0, state, failures, tostring(reopen - now), ''
    end
    redis.call('HSET', breaker_key, 'state', 'half-open', 'successes', 0)
    redis.call('DEL', leases_key)
    state = 'half-open'
    transition = 'open>half-open'
  end
  redis.call('ZREMRANGEBYSCORE', leases_key, '-inf', now)
  if redis.call('ZCARD', leases_key) < tonumber(trial_calls) then
    redis.call('ZADD', leases_key, now + tonumber(trial_lease), token)
    return 2, state, failures, '0', transition
  end
  local first = redis.call('ZRANGE', leases_key, 0, 0, 'WITHSCORES')
  local wait = math.min(tonumber(first[2]) - now, timeout)
  return 0, state, failures, tostring(wait), transition
end
"""

# KEYS: breaker, trial leases, call window
# ARGV: reset_timeout, trial_calls, trial_lease, window (0 = off), token
# Returns {decision, state, failures, wait, transition}
# A task's admission adds its delivery count and the gates' values to this in one script of
# its own (``resilience_tasks.admission``).
ADMIT = (
    CLOCK
    + ADMIT_FUNCTION
    + """
local decision, state, failures, wait, transition = breaker_admit(
  KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {decision, state, failures, wait, transition}
"""
)

# KEYS: breaker, trial leases, call window, failure window
# ARGV: fail_max, token ('' when not a trial), window (0 = off), min_calls, failure_rate,
#       reset_timeout
# Returns {old_state, new_state, failures, trial_failed (0|1), effective reset_timeout}
RECORD_FAILURE = (
    CLOCK
    + """
local b = redis.call('HMGET', KEYS[1], 'state', 'fail_max', 'reset_timeout')
local state = b[1] or 'closed'
local timeout = b[3] or ARGV[6]
local function reopen()
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'successes', 0)
end
if state == 'half-open' then
  if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[2]) then
    local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
    reopen()
    redis.call('DEL', KEYS[2])
    return {state, 'open', failures, 1, timeout}
  end
  return {state, state, tonumber(redis.call('HGET', KEYS[1], 'failures') or '0'), 0, timeout}
end
if state == 'open' then
  return {state, state, tonumber(redis.call('HGET', KEYS[1], 'failures') or '0'), 0, timeout}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local tripped = failures >= tonumber(b[2] or ARGV[1])
local window = tonumber(ARGV[3])
if window > 0 then
  local second = math.floor(now)
  redis.call('HINCRBY', KEYS[4], second, 1)
  redis.call('EXPIRE', KEYS[4], window + 1)
  local oldest = second - window + 1
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
  local calls = total(KEYS[3])
  local fails = total(KEYS[4])
  if calls >= tonumber(ARGV[4]) and fails >= calls * tonumber(ARGV[5]) then
    tripped = true
  end
end
if tripped then
  reopen()
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  return {state, 'open', failures, 0, timeout}
end
return {state, state, failures, 0, timeout}
"""
)

# KEYS: breaker, trial leases
# ARGV: token ('' when not a trial), success_threshold
# Returns {old_state, new_state}
RECORD_SUCCESS = """
local b = redis.call('HMGET', KEYS[1], 'state', 'success_threshold')
local state = b[1] or 'closed'
if state == 'half-open' then
  if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
    if successes >= tonumber(b[2] or ARGV[2]) then
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
# As pybreaker: opening stamps ``opened_at`` and keeps the failure count, closing forgets it.
FORCE_STATE = (
    CLOCK
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'successes', 0)
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], 'opened_at', tostring(now))
elseif ARGV[1] == 'closed' then
  redis.call('HSET', KEYS[1], 'failures', 0)
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {state, ARGV[1]}
"""
)
