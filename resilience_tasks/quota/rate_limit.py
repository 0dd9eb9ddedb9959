"""Fleet-wide rate limits on Redis, with the ``limits`` library's moving window.

Celery's ``rate_limit`` is per worker instance: three workers with ``10/s`` run at 30/s. Here
one limit holds for the whole fleet, whatever the number of workers, because every admission
takes a unit from the same moving window in Redis, in one atomic script timed by the Redis
server's clock. The moving window bounds every sliding interval, not just calendar-aligned
ones: a ``20/second`` limit never lets 21 calls into any second.
"""

from __future__ import annotations

import re
import time
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
    A refusal shorter than ``max_wait_in_worker`` seconds is waited out inside the worker (the
    next unit is that close); a longer one sends the work to the deferred store until the
    window frees, plus up to ``jitter`` of the window's length so waiting work does not
    return all at once.
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
    allowed: bool
    retry_after: float = 0.0
    window: str = ""


# The acquire script, written by hand on the ``limits`` data layout (a list of hit timestamps
# per window, newest first) so ``limits``' window stats read the same keys. Two things
# ``limits``' own ``hit`` lacks: it stamps hits with the server's clock (``hit`` stamps them
# with the caller's, so a worker descheduled between reading its clock and reaching Redis
# writes a stamp from the past and the window lets extra calls in), and it takes several
# windows all-or-nothing (``hit`` takes them one at a time: a refusal by the per-second window
# would still take a unit from the per-day one, and a backlog waiting on the first would burn
# the second).
# KEYS: one per window; ARGV: cost, then (amount, expiry) per window.
# Returns 0 when every window granted the units, else the 1-based index of a refusing window.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[2 * i])
  local expiry = tonumber(ARGV[1 + 2 * i])
  if cost > amount then return i end
  local entry = redis.call('LINDEX', key, amount - cost)
  if entry and tonumber(entry) >= now - expiry then return i end
end
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[2 * i])
  for _ = 1, cost do redis.call('LPUSH', key, tostring(now)) end
  redis.call('LTRIM', key, 0, amount - 1)
  redis.call('EXPIRE', key, tonumber(ARGV[1 + 2 * i]))
end
return 0
"""


class FleetRateLimiter:
    """Takes units from moving windows in Redis: one round trip for all of a limit's windows.

    ``limits`` provides the parsing, the key names, the window statistics (when a refused call
    may try again) and ``clear``; the acquire itself is the script above.
    """

    def __init__(self, client: redis.Redis, keys: KeySpace | None = None) -> None:
        keys = keys or KeySpace()
        self._storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=f"{keys.prefix}:limits"
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(
        self, limit: RateLimit, identifiers: tuple[str, ...], cost: int = 1
    ) -> RateDecision:
        """Take ``cost`` units from every window, or say how long until the refusing one frees."""
        windows = limit.windows
        keys = [self._storage.prefixed_key(item.key_for(*identifiers)) for item in windows]
        args: list[Any] = [cost]
        for item in windows:
            args += [item.amount, item.get_expiry()]
        index = int(self._acquire(keys, args))
        if index == 0:
            return RateDecision(True)
        refused = windows[index - 1]
        return RateDecision(False, self.seconds_until_free(refused, identifiers), str(refused))

    def seconds_until_free(self, item: limits.RateLimitItem, identifiers: tuple[str, ...]) -> float:
        stats = self._limiter.get_window_stats(item, *identifiers)
        return max(0.0, stats.reset_time - time.time())

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

    @staticmethod
    def window_seconds(limit: RateLimit) -> float:
        return float(max(item.get_expiry() for item in limit.windows))
