"""What a resource's quotas are, as plain values: rate limits, budgets, prices.

Pure data, validated when declared, with no Redis: ``storage.py`` applies them, ``gates.py``
checks them before each call. Declaring ``rate_limit="10/second"`` or ``Budget("$50/day")``
fails at once, with a message naming what is wrong.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import limits

from resilience_tasks.errors import ConfigurationError

# -- rate limits -------------------------------------------------------------------------------

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
    """Parse ``"10/second;500/minute"`` with ``limits``; raise ``ConfigurationError`` naming
    the bad part."""
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
        self, resource: str, team: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
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


# -- budgets and prices ------------------------------------------------------------------------

_BUDGET = re.compile(r"^\s*\$?\s*(\d+(?:\.\d+)?)\s*(?:usd)?\s*/\s*(day|d)\s*$", re.IGNORECASE)

OnExceed = Literal["defer", "degrade"]


def utc_day(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d")


def seconds_to_next_day(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


@dataclass(frozen=True)
class Budget:
    """A spending cap per UTC day, e.g. ``Budget("$50/day")``; ``on_exceed`` says what then."""

    spec: str
    on_exceed: OnExceed = "defer"
    amount: float = field(init=False)

    def __post_init__(self) -> None:
        match = _BUDGET.match(self.spec) if isinstance(self.spec, str) else None
        if match is None:
            raise ConfigurationError(
                f"budget {self.spec!r}: write it like '$50/day' (a daily amount in dollars)"
            )
        amount = float(match.group(1))
        if amount <= 0:
            raise ConfigurationError(f"budget {self.spec!r}: the amount must be > 0")
        if self.on_exceed not in ("defer", "degrade"):
            raise ConfigurationError(
                f"Budget.on_exceed must be 'defer' or 'degrade', got {self.on_exceed!r}"
            )
        object.__setattr__(self, "amount", amount)


@dataclass(frozen=True)
class Pricing:
    """Dollars per unit of each kind a resource's tasks report (``tokens_in``, ``tokens_out``)."""

    prices: Mapping[str, float]

    def __post_init__(self) -> None:
        if not isinstance(self.prices, Mapping) or not self.prices:
            raise ConfigurationError(
                f"prices must be a mapping of unit -> price, got {self.prices!r}"
            )
        for unit, price in self.prices.items():
            if not isinstance(unit, str) or not unit.isidentifier():
                raise ConfigurationError(f"prices: unit names must be identifiers, got {unit!r}")
            if (
                isinstance(price, bool)
                or not isinstance(price, int | float)
                or not math.isfinite(price)
                or price < 0
            ):
                raise ConfigurationError(
                    f"prices[{unit!r}] must be a non-negative number of dollars, got {price!r}"
                )

    def cost(self, units: Mapping[str, float]) -> float:
        return sum(self.prices.get(unit, 0.0) * amount for unit, amount in units.items())


@dataclass(frozen=True)
class BudgetDecision:
    allowed: bool
    action: OnExceed | None = None
    reason: str = ""
    retry_after: float = 0.0


def decide(budget: Budget, spent: float, who: str, now: float | None = None) -> BudgetDecision:
    """Whether ``who`` may spend more today under ``budget`` given ``spent`` so far."""
    if spent < budget.amount:
        return BudgetDecision(True)
    return BudgetDecision(
        False,
        budget.on_exceed,
        f"{who} spent ${spent:.2f} of its {budget.spec} budget today",
        seconds_to_next_day(now),
    )
