"""Lua scripts of the deferred store: writes and claims are atomic, times are the server's.

Keys: a sorted set of task ids scored by due time, a hash of task id -> message JSON, and a
sorted set of claimed ids scored by claim expiry. A claimed message stays in the hash until
the pump has published it and acknowledged the claim; a claim that expires (the pump died
between claim and ack) is put back in the due set.
"""

from __future__ import annotations

# KEYS: due, messages, delivery counter ('-' for none)
# ARGV: task_id, message json, delay seconds
# Returns the due time (server seconds) as a string.
DEFER = """
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], due, ARGV[1])
if KEYS[3] ~= '-' then redis.call('DEL', KEYS[3]) end
return tostring(due)
"""

# KEYS: due, messages, claims
# ARGV: limit, claim lease seconds
# Returns a flat list: id1, message1, id2, message2, ...
CLAIM_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
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
"""

# KEYS: due, messages, claims
# ARGV: task ids
# Drops the claims; keeps a message if its task was deferred again meanwhile.
ACK = """
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[3], id)
  if not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('HDEL', KEYS[2], id)
  end
end
return #ARGV
"""
