"""The dead-letter store: work that will not run, kept with the reason, and kept bounded.

Each entry is a JSON record in a hash (id -> record) with its time in a sorted-set index, the
index score being the Redis server's clock when the entry was added. Retention is enforced by
the same script that adds an entry, in the same round trip: entries older than ``max_age``
seconds and the oldest beyond ``max_entries`` are removed. A flood of bad messages therefore
cannot grow the store without bound, and no separate sweeper has to run.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from resilience_tasks.policies import _validate as check
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace
from resilience_tasks.state.lua import with_clock

#: Default retention: a week, and at most ten thousand entries per team.
DEFAULT_MAX_AGE = 7 * 86_400.0
DEFAULT_MAX_ENTRIES = 10_000

#: At most this many entries are trimmed by one call, so one add never blocks Redis for long
#: (after lowering a limit a lot, the store shrinks over the next few adds).
TRIM_BATCH = 1_000

_TRIM = """
local removed = 0
local function drop(ids)
  if #ids > 0 then
    redis.call('HDEL', KEYS[1], unpack(ids))
    redis.call('ZREM', KEYS[2], unpack(ids))
    removed = removed + #ids
  end
end
local max_age = tonumber(ARGV[1])
local max_entries = tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
if max_age >= 0 then
  drop(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - max_age), 'LIMIT', 0, batch))
end
if max_entries >= 0 then
  local excess = redis.call('ZCARD', KEYS[2]) - max_entries
  if excess > 0 then
    drop(redis.call('ZRANGE', KEYS[2], 0, math.min(excess, batch) - 1))
  end
end
"""

# KEYS: entries hash, index zset. ARGV: max_age, max_entries, batch (-1: no limit), id, record.
ADD = with_clock(
    """
local at = string.format('%.6f', now)
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[2], at, ARGV[4])
"""
    + _TRIM
    + """
return {at, removed}
"""
)

# KEYS: entries hash, index zset. ARGV: max_age, max_entries, batch.
TRIM = with_clock(_TRIM + "\nreturn removed\n")

# KEYS: entries hash, index zset. ARGV: id. Returns {record, score} or nil.
_READ = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
"""
READ = (
    _READ
    + """
if not record then return nil end
return {record, at or false}
"""
)
# The same, removing the entry: of two callers, one gets it.
TAKE = (
    _READ
    + """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not record then return nil end
return {record, at or false}
"""
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: the task's id (or a generated one), why, when (server clock), and what.

    ``message`` is what the writer recorded: for work refused by the task layer, the deferred
    message as JSON (replayable with ``DeferredMessage.from_json``); for a message the worker
    could not turn into a task, a dict with ``source: "intake"``, its headers, body text,
    content type and delivery info.
    """

    task_id: str
    reason: str
    at: float
    message: Any


class DeadLetterStore:
    """One team's dead letters, with retention by age and by count.

    ``max_age`` (seconds, default a week) and ``max_entries`` (default 10,000) bound the store;
    ``None`` disables that bound. Both are enforced on every ``add``, atomically with it.
    """

    def __init__(
        self,
        client: StateClient,
        team: str,
        keys: KeySpace | None = None,
        *,
        max_age: float | None = DEFAULT_MAX_AGE,
        max_entries: int | None = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if max_age is not None:
            check.positive_seconds("DeadLetterStore", "max_age", max_age)
        if max_entries is not None:
            check.positive_int("DeadLetterStore", "max_entries", max_entries)
        keys = keys or KeySpace()
        self._client = client
        self.entries_key = keys.dead_letters(team)
        self.index_key = keys.dead_letter_index(team)
        self.max_age = None if max_age is None else float(max_age)
        self.max_entries = max_entries
        self._add = client.register_script(ADD)
        self._trim = client.register_script(TRIM)
        self._take = client.register_script(TAKE)
        self._read = client.register_script(READ)

    @property
    def _keys(self) -> list[str]:
        return [self.entries_key, self.index_key]

    def _limits(self) -> list[float | int]:
        return [
            -1 if self.max_age is None else self.max_age,
            -1 if self.max_entries is None else self.max_entries,
            TRIM_BATCH,
        ]

    def add(self, task_id: str, reason: str, message: Any) -> DeadLetter:
        """Record ``message`` (JSON-able data, or raw bytes/str kept as text) with its reason.

        An entry with the same id is replaced (the same work dead-lettered again). Entries past
        the retention limits are removed in the same script.
        """
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        record = json.dumps(
            {"task_id": task_id, "reason": reason, "message": message}, default=repr
        )
        at, _removed = cast(
            list[Any], self._add(keys=self._keys, args=[*self._limits(), task_id, record])
        )
        return DeadLetter(task_id=task_id, reason=reason, at=float(at), message=message)

    def trim(self) -> int:
        """Apply the retention limits now (``add`` does it too); returns how many were removed."""
        return int(cast(int, self._trim(keys=self._keys, args=self._limits())))

    def get(self, task_id: str) -> DeadLetter | None:
        found = cast(list[bytes] | None, self._read(keys=self._keys, args=[task_id]))
        return _entry(found[0], found[1]) if found else None

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        pairs = self._client.zrevrange(self.index_key, 0, limit - 1, withscores=True)
        return self._entries(cast(list[tuple[bytes, float]], pairs))

    def oldest(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """The oldest ``limit`` dead letters, oldest first: the order to replay them in."""
        pairs = self._client.zrange(self.index_key, 0, limit - 1, withscores=True)
        return self._entries(cast(list[tuple[bytes, float]], pairs))

    def take(self, task_id: str) -> DeadLetter | None:
        """Remove the entry and return it, atomically: of two replays, only one gets it.

        A replay that then fails to publish should ``add`` it back.
        """
        found = cast(list[bytes] | None, self._take(keys=self._keys, args=[task_id]))
        return _entry(found[0], found[1]) if found else None

    def count(self) -> int:
        return int(self._client.zcard(self.index_key))

    def remove(self, task_id: str) -> None:
        self._take(keys=self._keys, args=[task_id])

    def _entries(self, pairs: Sequence[tuple[bytes, float]]) -> builtins.list[DeadLetter]:
        if not pairs:
            return []
        raws = cast(
            builtins.list[bytes | None], self._client.hmget(self.entries_key, [i for i, _ in pairs])
        )
        return [
            _entry(raw, at) for raw, (_, at) in zip(raws, pairs, strict=True) if raw is not None
        ]


def _entry(raw: bytes | str, at: float | bytes | str | None) -> DeadLetter:
    data = json.loads(raw)
    # Entries written before the index score became the time carried their own ``at``.
    when = data.pop("at", None) if at is None else float(at)
    data.pop("at", None)
    return DeadLetter(at=float(when or 0.0), **data)
