"""Every Lua script of the quota layer, in one place.

Scripts that need the time start with the shared ``CLOCK`` preamble (``state/lua.py``), so
stamps, windows and deadlines follow the Redis server's clock, one clock for the fleet. Every
key a script touches arrives in ``KEYS`` and comes from ``KeySpace``, so all of a script's keys
share the deployment's hash tag and the script runs on Redis Cluster. Floats leave a script as
strings: Lua numbers become integers on the way out.
"""

from __future__ import annotations

from resilience_tasks.state.lua import with_clock

# Take units from moving windows, all or nothing.
#
# Written by hand on ``limits``' moving-window data layout (a list of hit stamps per window,
# newest first). What ``limits``' own ``hit`` lacks:
# - stamps from the server's clock (``hit`` stamps with the caller's, so a worker descheduled
#   between reading its clock and reaching Redis writes a stamp from the past and the window
#   lets an extra call in);
# - several windows taken all-or-nothing (``hit`` takes them one at a time: a refusal by the
#   per-second window would still take a unit from the per-day one);
# - a place in line for the refused: each refusal reserves the next free slot of the refusing
#   window (a virtual clock in the window's queue key, advanced by window/amount), so a backlog
#   comes back spread at the limit's rate instead of all at once when a unit frees, only to be
#   refused again. Work that should go first (``reserve`` = 0) asks for the next free unit.
# KEYS: window 1, queue 1, window 2, queue 2, ...
# ARGV: cost, reserve (1/0), then (amount, expiry seconds) per window.
# Returns {0, '0'} when every window granted, else {index of the refusing window, seconds to
# wait (-1: the cost exceeds the window)}.
ACQUIRE = with_clock(
    """
local cost = tonumber(ARGV[1])
local windows = #KEYS / 2
for i = 1, windows do
  local key = KEYS[2 * i - 1]
  local amount = tonumber(ARGV[1 + 2 * i])
  local expiry = tonumber(ARGV[2 + 2 * i])
  if cost > amount then return {i, '-1'} end
  local entry = redis.call('LINDEX', key, amount - cost)
  if entry and tonumber(entry) >= now - expiry then
    local free_at = tonumber(entry) + expiry
    if ARGV[2] == '1' then
      local queue = KEYS[2 * i]
      local slot = math.max(tonumber(redis.call('GET', queue) or '0'), free_at)
      local following = slot + expiry / amount
      redis.call('SET', queue, tostring(following), 'PX',
                 math.ceil((following - now + expiry) * 1000))
      free_at = slot
    end
    return {i, tostring(free_at - now)}
  end
end
for i = 1, windows do
  local key = KEYS[2 * i - 1]
  local amount = tonumber(ARGV[1 + 2 * i])
  for _ = 1, cost do redis.call('LPUSH', key, tostring(now)) end
  redis.call('LTRIM', key, 0, amount - 1)
  redis.call('EXPIRE', key, tonumber(ARGV[2 + 2 * i]))
end
return {0, '0'}
"""
)

# How many units each window holds now (stamps younger than its expiry), by the server clock.
# KEYS: one per window; ARGV: (amount, expiry seconds) per window.
# Returns one count per window.
WINDOW_USAGE = with_clock(
    """
local used = {}
for i, key in ipairs(KEYS) do
  local expiry = tonumber(ARGV[2 * i])
  local count = 0
  for _, stamp in ipairs(redis.call('LRANGE', key, 0, tonumber(ARGV[2 * i - 1]) - 1)) do
    if tonumber(stamp) >= now - expiry then count = count + 1 end
  end
  used[i] = count
end
return used
"""
)

# Push a deadline to ``now + seconds`` unless it is already later; the key lives until the
# deadline plus ``grace``. Concurrent writers (several 429s, several waiting calls) never
# shorten one another's wait.
# KEYS: the deadline key; ARGV: seconds, grace seconds.
# Returns the deadline (server seconds).
EXTEND_DEADLINE = with_clock(
    """
local deadline = math.max(now + tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], tostring(deadline), 'PX',
           math.ceil((deadline - now + tonumber(ARGV[2])) * 1000) + 1)
return tostring(deadline)
"""
)

# Add a call's spend and units to today's totals.
# KEYS: team spend, resource spend (all teams), team-on-resource spend, team-on-resource units
# ARGV: cost, ttl seconds, then (unit, amount) pairs.
RECORD_SPEND = """
local ttl = tonumber(ARGV[2])
for i = 1, 3 do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ttl)
end
for i = 3, #ARGV - 1, 2 do
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], ARGV[i + 1])
end
if #ARGV > 2 then redis.call('EXPIRE', KEYS[4], ttl) end
return 1
"""

# Record what a provider said of a resource's quota, stamped by the server clock: fields
# ``reset_<kind>`` (seconds from now) also give ``resets_at_<kind>``.
# KEYS: the resource's quota hash; ARGV: ttl seconds, then (field, value) pairs.
OBSERVE_QUOTA = with_clock(
    """
local fields = {'observed_at', tostring(now)}
for i = 2, #ARGV - 1, 2 do
  table.insert(fields, ARGV[i])
  table.insert(fields, ARGV[i + 1])
  local kind = string.match(ARGV[i], '^reset_(.+)$')
  if kind then
    table.insert(fields, 'resets_at_' .. kind)
    table.insert(fields, tostring(now + tonumber(ARGV[i + 1])))
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""
)
