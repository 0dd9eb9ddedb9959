"""Token and cost accounting, and budgets enforced before the call.

A task reports the units it used (``report_usage(tokens_in=..., tokens_out=...)``, see
``report.py``); the
resource's prices turn units into cost; spend accumulates in Redis per team, per resource and
per UTC day. A team's budget (``"$50/day"``) is checked before each call from a value read in
the admission's single round trip: over budget, the work is deferred to the next day or sent
to the degraded path, with a reason that says which budget and how much was spent.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import redis

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.state.keys import KeySpace

_BUDGET = re.compile(r"^\s*\$?\s*(\d+(?:\.\d+)?)\s*(?:usd)?\s*/\s*(day|d)\s*$", re.IGNORECASE)
SPEND_TTL = 40 * 86_400

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


class SpendLedger:
    """Spend and units per team, per resource and per UTC day, in Redis."""

    def __init__(self, client: redis.Redis, keys: KeySpace | None = None) -> None:
        self._client = client
        self._keys = keys or KeySpace()

    def record(
        self,
        team: str,
        resource: str,
        units: Mapping[str, float],
        pricing: Pricing | None,
        now: float | None = None,
    ) -> float:
        """Add ``units`` (and their cost) to today's totals; one round trip. Returns the cost."""
        day = utc_day(now)
        cost = pricing.cost(units) if pricing is not None else 0.0
        pipe = self._client.pipeline(transaction=True)
        for key in (
            self._keys.team_spend(team, day),
            self._keys.resource_spend(resource, day),
            self._keys.team_resource_spend(team, resource, day),
        ):
            pipe.incrbyfloat(key, cost)
            pipe.expire(key, SPEND_TTL)
        units_key = self._keys.team_resource_units(team, resource, day)
        for unit, amount in units.items():
            pipe.hincrbyfloat(units_key, unit, amount)
        pipe.expire(units_key, SPEND_TTL)
        pipe.execute()
        return cost

    def spent(self, team: str, resource: str | None = None, day: str | None = None) -> float:
        day = day or utc_day()
        key = (
            self._keys.team_spend(team, day)
            if resource is None
            else self._keys.team_resource_spend(team, resource, day)
        )
        return float(self._client.get(key) or 0.0)

    def resource_spent(self, resource: str, day: str | None = None) -> float:
        return float(self._client.get(self._keys.resource_spend(resource, day or utc_day())) or 0.0)

    def units(self, team: str, resource: str, day: str | None = None) -> dict[str, float]:
        raw = self._client.hgetall(self._keys.team_resource_units(team, resource, day or utc_day()))
        return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
