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
``slow``            consecutive slow calls (at least ``slow_call_duration``), successes and
                    failures alike; a fast success resets it, a fast failure leaves it; a slow
                    half-open trial adds one too (and reopens the breaker)
``opened_at``       server seconds (float) of the last opening; set only when it opens
``successes``       successful trials in the current half-open period
``fail_max``        fleet override of the policy's ``fail_max`` (the ``fail_max`` setter)
``reset_timeout``   fleet override of the policy's ``reset_timeout`` (seconds, float)
``success_threshold`` fleet override of the policy's ``success_threshold``
=================== ===========================================================================

Opening keeps ``failures`` and ``slow`` (as pybreaker keeps its ``fail_counter``), closing
resets both. An override field wins over the policy's value, which the scripts receive in
``ARGV`` as the default; so the effective reset timeout is ``HGET reset_timeout`` or else the
policy's. The trial-lease sorted set (``KeySpace.trial_leases``) holds one member per trial
in flight, scored by lease expiry; the call and failure windows are hashes of per-second
counts.

The recording scripts say why an outcome opened the breaker (``cause``): ``failures``
(``fail_max`` in a row), ``failure_rate``, ``slow_calls`` (``slow_call_max`` slow calls in a
row), ``failed_trial`` or ``slow_trial`` (a half-open trial that failed, or succeeded slowly);
``''`` when it did not open it.
"""

from __future__ import annotations

from resilience_tasks.state.lua import CLOCK

#: The breaker's admission, as a Lua function other admission scripts can reuse: prepend
#: ``CLOCK`` (it reads ``now``), then call it. Arguments may be strings (ARGV values).
#: Returns ``decision, state, failures, wait, transition, slow`` where decision is 0 refused,
#: 1 admitted, 2 admitted as a half-open trial; ``wait`` (a string) is the seconds until a
#: refused call could be admitted; ``transition`` is ``'open>half-open'`` or ``''``; ``slow``
#: is the run of slow calls (a caller that takes only the first five values drops it).
ADMIT_FUNCTION = """
local function breaker_admit(breaker_key, leases_key, window_key, reset_timeout, trial_calls,
                             trial_lease, window, token)
  local b = redis.call('HMGET', breaker_key, 'state', 'failures', 'opened_at', 'reset_timeout',
                       'slow')
  local state = b[1] or 'closed'
  local failures = tonumber(b[2] or '0')
  local timeout = tonumber(b[4] or reset_timeout)
  local slow = tonumber(b[5] or '0')
  if state == 'closed' then
    window = tonumber(window)
    if window > 0 then
      redis.call('HINCRBY', window_key, math.floor(now), 1)
      redis.call('EXPIRE', window_key, window + 1)
    end
    return 1, state, failures, '0', '', slow
  end
  local transition = ''
  if state == 'open' then
    local reopen = tonumber(b[3] or '0') + timeout
    if now < reopen then
      return 0, state, failures, tostring(reopen - now), '', slow
    end
    redis.call('HSET', breaker_key, 'state', 'half-open', 'successes', 0)
    redis.call('DEL', leases_key)
    state = 'half-open'
    transition = 'open>half-open'
  end
  redis.call('ZREMRANGEBYSCORE', leases_key, '-inf', now)
  if redis.call('ZCARD', leases_key) < tonumber(trial_calls) then
    redis.call('ZADD', leases_key, now + tonumber(trial_lease), token)
    return 2, state, failures, '0', transition, slow
  end
  local first = redis.call('ZRANGE', leases_key, 0, 0, 'WITHSCORES')
  local wait = math.min(tonumber(first[2]) - now, timeout)
  return 0, state, failures, tostring(wait), transition, slow
end
"""

# KEYS: breaker, trial leases, call window
# ARGV: reset_timeout, trial_calls, trial_lease, window (0 = off), token
# Returns {decision, state, failures, wait, transition, slow}
# A task's admission adds its delivery count and the gates' values to this in one script of
# its own (``resilience_tasks.admission``).
ADMIT = (
    CLOCK
    + ADMIT_FUNCTION
    + """
local decision, state, failures, wait, transition, slow = breaker_admit(
  KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {decision, state, failures, wait, transition, slow}
"""
)

# KEYS: breaker, trial leases, call window, failure window
# ARGV: fail_max, token ('' when not a trial), window (0 = off), min_calls, failure_rate,
#       reset_timeout, slow (1 when the call was slow, else 0), slow_call_max
# Returns {old_state, new_state, failures, trial_failed (0|1), effective reset_timeout, slow,
#          cause}
RECORD_FAILURE = (
    CLOCK
    + """
local b = redis.call('HMGET', KEYS[1], 'state', 'fail_max', 'reset_timeout', 'slow')
local state = b[1] or 'closed'
local timeout = b[3] or ARGV[6]
local slow = tonumber(b[4] or '0')
local slow_call = ARGV[7] == '1'
local function reopen()
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'successes', 0)
end
local function count_slow()
  if slow_call then slow = redis.call('HINCRBY', KEYS[1], 'slow', 1) end
end
if state == 'half-open' then
  if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[2]) then
    local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
    count_slow()
    reopen()
    redis.call('DEL', KEYS[2])
    return {state, 'open', failures, 1, timeout, slow, 'failed_trial'}
  end
end
if state ~= 'closed' then
  local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
  return {state, state, failures, 0, timeout, slow, ''}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
count_slow()
local cause = ''
if failures >= tonumber(b[2] or ARGV[1]) then
  cause = 'failures'
elseif slow_call and slow >= tonumber(ARGV[8]) then
  cause = 'slow_calls'
end
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
  if cause == '' and calls >= tonumber(ARGV[4]) and fails >= calls * tonumber(ARGV[5]) then
    cause = 'failure_rate'
  end
end
if cause ~= '' then
  reopen()
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  return {state, 'open', failures, 0, timeout, slow, cause}
end
return {state, state, failures, 0, timeout, slow, ''}
"""
)

# KEYS: breaker, trial leases, call window, failure window
# ARGV: token ('' when not a trial), success_threshold, slow (1 when the call was slow, else 0),
#       slow_call_max, reset_timeout
# Returns {old_state, new_state, slow, trial_failed (0|1), effective reset_timeout, cause}
# A fast success in the closed state resets both runs (failures and slow calls); a slow one
# resets the failures and lengthens the run of slow calls, which may open the breaker.
RECORD_SUCCESS = (
    CLOCK
    + """
local b = redis.call('HMGET', KEYS[1], 'state', 'success_threshold', 'reset_timeout', 'slow')
local state = b[1] or 'closed'
local timeout = b[3] or ARGV[5]
local slow = tonumber(b[4] or '0')
local slow_call = ARGV[3] == '1'
local function reopen()
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'successes', 0)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end
if state == 'half-open' then
  if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
    if slow_call then
      slow = redis.call('HINCRBY', KEYS[1], 'slow', 1)
      reopen()
      return {state, 'open', slow, 1, timeout, 'slow_trial'}
    end
    local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
    if successes >= tonumber(b[2] or ARGV[2]) then
      redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'slow', 0, 'successes', 0)
      redis.call('DEL', KEYS[2])
      return {state, 'closed', 0, 0, timeout, ''}
    end
  end
  return {state, state, slow, 0, timeout, ''}
end
if state == 'closed' then
  if not slow_call then
    redis.call('HSET', KEYS[1], 'failures', 0, 'slow', 0)
    return {state, state, 0, 0, timeout, ''}
  end
  redis.call('HSET', KEYS[1], 'failures', 0)
  slow = redis.call('HINCRBY', KEYS[1], 'slow', 1)
  if slow >= tonumber(ARGV[4]) then
    reopen()
    return {state, 'open', slow, 0, timeout, 'slow_calls'}
  end
end
return {state, state, slow, 0, timeout, ''}
"""
)

# KEYS: breaker, trial leases, call window, failure window
# ARGV: new state
# Returns {old_state, new_state}
# As pybreaker: opening stamps ``opened_at`` and keeps the failure count (and the slow-call
# count), closing forgets them.
FORCE_STATE = (
    CLOCK
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'successes', 0)
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], 'opened_at', tostring(now))
elseif ARGV[1] == 'closed' then
  redis.call('HSET', KEYS[1], 'failures', 0, 'slow', 0)
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {state, ARGV[1]}
"""
)
