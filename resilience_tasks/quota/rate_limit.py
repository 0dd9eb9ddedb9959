"""Fleet-wide rate limits on Redis, with the ``limits`` library's moving window.

Celery's ``rate_limit`` is per worker instance: three workers with ``10/s`` run at 30/s. Here
one limit holds for the whole fleet, whatever the number of workers, because every admission
takes a unit from the same moving window in Redis, in one atomic script timed by the Redis
server's clock. The moving window bounds every sliding interval, not just calendar-aligned
ones: a ``20/second`` limit never lets 21 calls into any second.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import limits
import redis
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.state.keys import KeySpace

_ABBREVIATIONS = {
    "s": "second",
    "sec": "second",
    "secs": "second",
    "seconds": "second",
    "m": "minute",
    "min": "minute",
    "mins": "minute",
    "minutes": "minute",
    "h": "hour",
    "hr": "hour",
    "hours": "hour",
    "d": "day",
    "days": "day",
}
_UNIT = re.compile(r"(?<=/)\s*([a-z]+)\s*$|(?<=per )\s*(?:\d+\s+)?([a-z]+)\s*$")


def _normalise(part: str) -> str:
    """``10/s`` -> ``10/second``: accept the abbreviations people write."""
    text = part.strip().lower()
    match = _UNIT.search(text)
    if match:
        unit = match.group(1) or match.group(2)
        if unit in _ABBREVIATIONS:
            text = (
                text[: match.start(1) if match.group(1) else match.start(2)] + _ABBREVIATIONS[unit]
            )
    return text


def parse_windows(spec: str) -> tuple[limits.RateLimitItem, ...]:
    """Parse ``"10/second;500/minute"``; raise ``ConfigurationError`` naming the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"rate_limit must be a string like '500/minute', got {spec!r}")
    items = []
    for part in spec.split(";"):
        try:
            (item,) = limits.parse_many(_normalise(part))
        except ValueError:
            raise ConfigurationError(
                f"rate_limit {spec!r}: cannot read {part.strip()!r}; write it like "
                f"'500/minute', '10/second;10000/day' or '20 per 2 seconds'"
            ) from None
        if item.amount < 1:
            raise ConfigurationError(
                f"rate_limit {spec!r}: {part.strip()!r} allows nothing; the amount must be >= 1"
            )
        items.append(item)
    return tuple(items)


@dataclass(frozen=True)
class RateLimit:
    """A fleet-wide limit on a resource: one or more windows (``"10/second;500/minute"``).

    ``per_team`` gives each team its own window; ``key`` derives a further identifier from the
    task's arguments (e.g. the API key an account uses), so each key gets its own window.
    When the next unit frees within ``max_wait_in_worker`` seconds, a refused call waits for it
    inside the worker. Otherwise it leaves the worker with a place in line: a slot of the
    refusing window, spaced at the window's rate after those already waiting, plus up to
    ``jitter`` of a slot's length; it waits in the deferred store until then, so a backlog
    returns at the limit's pace rather than all at once.
    """

    spec: str
    per_team: bool = False
    key: Callable[..., str] | None = None
    max_wait_in_worker: float = 1.0
    jitter: float = 0.1
    windows: tuple[limits.RateLimitItem, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", parse_windows(self.spec))
        if self.key is not None and not callable(self.key):
            raise ConfigurationError(f"RateLimit.key must be callable, got {self.key!r}")
        wait = self.max_wait_in_worker
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < 60:
            raise ConfigurationError(
                f"RateLimit.max_wait_in_worker must be seconds in [0, 60), got {wait!r}"
            )
        if isinstance(self.jitter, bool) or not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"RateLimit.jitter must be in [0, 1], got {self.jitter!r}")

    @classmethod
    def of(cls, value: str | RateLimit) -> RateLimit:
        return value if isinstance(value, RateLimit) else cls(value)

    def identifiers(
        self, resource: str, team: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, ...]:
        """The names that pick this call's window."""
        ids = [resource]
        if self.per_team:
            ids.append(f"team={team}")
        if self.key is not None:
            ids.append(f"key={self.key(*args, **kwargs)}")
        return tuple(ids)


@dataclass(frozen=True)
class RateDecision:
    """``retry_after``: seconds until this call's reserved slot (or the next free unit);
    ``window``: the refusing window; ``interval``: its seconds per unit."""

    allowed: bool
    retry_after: float = 0.0
    window: str = ""
    interval: float = 0.0


# The acquire script, written by hand on the ``limits`` data layout (a list of hit timestamps
# per window, newest first) so ``limits``' window stats and ``clear`` work on the same keys.
# What ``limits``' own ``hit`` lacks:
# - stamps from the server's clock (``hit`` stamps with the caller's, so a worker descheduled
#   between reading its clock and reaching Redis writes a stamp from the past and the window
#   lets an extra call in);
# - several windows taken all-or-nothing (``hit`` takes them one at a time: a refusal by the
#   per-second window would still take a unit from the per-day one);
# - a place in line for the refused: each refusal reserves the next free slot of the refusing
#   window (a virtual clock in ``<key>:queue`` advanced by window/amount), so a backlog comes
#   back spread at the limit's rate instead of all at once when a unit frees, only to be refused
#   again. Work that should go first (``reserve`` = 0) asks for the next free unit instead.
# KEYS: one per window; ARGV: cost, reserve (1/0), then (amount, expiry) per window.
# Returns {0, '0'} when every window granted, else {index of the refusing window, seconds to
# wait (-1: the cost exceeds the window)}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[1 + 2 * i])
  local expiry = tonumber(ARGV[2 + 2 * i])
  if cost > amount then return {i, '-1'} end
  local entry = redis.call('LINDEX', key, amount - cost)
  if entry and tonumber(entry) >= now - expiry then
    local free_at = tonumber(entry) + expiry
    if ARGV[2] == '1' then
      local queue = key .. ':queue'
      local slot = math.max(tonumber(redis.call('GET', queue) or '0'), free_at)
      local following = slot + expiry / amount
      redis.call('SET', queue, tostring(following), 'PX',
                 math.ceil((following - now + expiry) * 1000))
      free_at = slot
    end
    return {i, tostring(free_at - now)}
  end
end
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[1 + 2 * i])
  for _ = 1, cost do redis.call('LPUSH', key, tostring(now)) end
  redis.call('LTRIM', key, 0, amount - 1)
  redis.call('EXPIRE', key, tonumber(ARGV[2 + 2 * i]))
end
return {0, '0'}
"""


class FleetRateLimiter:
    """Takes units from moving windows in Redis: one round trip for all of a limit's windows.

    ``limits`` provides the parsing, the key names, the window statistics and ``clear``; the
    acquire itself is the script above.
    """

    def __init__(self, client: redis.Redis, keys: KeySpace | None = None) -> None:
        keys = keys or KeySpace()
        self._storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=f"{keys.prefix}:limits"
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(
        self,
        limit: RateLimit,
        identifiers: tuple[str, ...],
        cost: int = 1,
        reserve: bool = True,
    ) -> RateDecision:
        """Take ``cost`` units from every window in one round trip; if refused, say how long
        to wait: until a slot reserved for this call (``reserve``), or until the next unit frees.
        """
        windows = limit.windows
        keys = [self._storage.prefixed_key(item.key_for(*identifiers)) for item in windows]
        args: list[Any] = [cost, 1 if reserve else 0]
        for item in windows:
            args += [item.amount, item.get_expiry()]
        index, wait = self._acquire(keys, args)
        if int(index) == 0:
            return RateDecision(True)
        refused = windows[int(index) - 1]
        seconds = float(wait.decode() if isinstance(wait, bytes) else wait)
        if seconds < 0:
            raise ValueError(f"a cost of {cost} can never fit {refused}")
        return RateDecision(False, seconds, str(refused), refused.get_expiry() / refused.amount)

    def remaining(self, limit: RateLimit, identifiers: tuple[str, ...]) -> dict[str, int]:
        """Units left in each window now (for status pages and tests)."""
        return {
            str(item): self._limiter.get_window_stats(item, *identifiers).remaining
            for item in limit.windows
        }

    def clear(self, limit: RateLimit, identifiers: tuple[str, ...]) -> None:
        """Empty the limit's windows (an operator's reset, e.g. after a provider raised a quota)."""
        for item in limit.windows:
            self._limiter.clear(item, *identifiers)
