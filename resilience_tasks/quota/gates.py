"""Quota gates: a provider's cool-down, a team's budget, the resource's rate limit.

Cheapest first: the cool-down and the budget only read values the admission round trip
already fetched; the rate limit takes a unit from Redis (the one extra round trip). The gates
own no keys: each asks the store that owns a key for its name and for how to read its value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

from resilience_tasks.errors import Defer, Degrade
from resilience_tasks.fallback.scope import is_degraded
from resilience_tasks.gate import Call, Gate
from resilience_tasks.quota.policy import Budget, RateLimit, decide, utc_day
from resilience_tasks.quota.storage import CooldownStore, FleetRateLimiter, SpendLedger


def _float(value: bytes | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


class CooldownGate(Gate):
    """After a provider's 429, the whole fleet waits out its ``Retry-After``, not just one task."""

    def __init__(self, cooldowns: CooldownStore, resource: str) -> None:
        self.resource = resource
        self._cooldowns = cooldowns
        self._key = cooldowns.key(resource)

    def watch(self, call: Call) -> tuple[str, ...]:
        return (self._key,)

    def check(self, call: Call, watched: Mapping[str, bytes | None]) -> None:
        wait = self._cooldowns.remaining(watched.get(self._key))
        if wait > 0:
            raise Defer(
                wait + random.uniform(0, min(1.0, wait * 0.1)),
                f"{self.resource} asked to wait (429): {wait:.1f}s left",
            )


class BudgetGate(Gate):
    """The team's daily budget (and the resource's, within the team), checked before the call."""

    def __init__(
        self,
        ledger: SpendLedger,
        resource: str,
        budgets: Callable[[], tuple[Budget | None, Budget | None]],
        free: bool = False,
    ) -> None:
        self.resource = resource
        self._ledger = ledger
        self._budgets = budgets
        self._free = free

    def _watched(self) -> list[tuple[str, Budget, str]]:
        if self._free:  # a provider that costs nothing cannot overspend: it is where
            return []  # an over-budget team is switched to
        team_budget, resource_budget = self._budgets()
        if team_budget is None and resource_budget is None:
            return []  # the common case: nothing to read, not even today's date
        day = utc_day()
        team = self._ledger.team
        found = []
        if team_budget is not None:
            found.append((self._ledger.spend_key(None, day), team_budget, f"team {team}"))
        if resource_budget is not None:
            found.append(
                (
                    self._ledger.spend_key(self.resource, day),
                    resource_budget,
                    f"team {team} on {self.resource}",
                )
            )
        return found

    def watch(self, call: Call) -> tuple[str, ...]:
        return tuple(key for key, _, _ in self._watched())

    def check(self, call: Call, watched: Mapping[str, bytes | None]) -> None:
        for key, budget, who in self._watched():
            decision = decide(budget, _float(watched.get(key)), who)
            if decision.allowed:
                continue
            delay = decision.retry_after + random.uniform(0, 60)
            if decision.action == "degrade" and is_degraded():
                continue  # already on the degraded path: the work runs there, cheaper
            if decision.action == "degrade":
                raise Degrade(delay, f"over budget: {decision.reason}")
            raise Defer(delay, f"over budget: {decision.reason}")


#: Seconds batch work waits beyond an interactive call's due time, while that call comes back.
_STAND_ASIDE = 0.2


class RateLimitGate(Gate):
    """Take a unit of the resource's fleet-wide limit, waiting briefly or deferring if none."""

    def __init__(
        self,
        limiter: FleetRateLimiter,
        resource: str,
        limit: Callable[[], RateLimit | None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.resource = resource
        self._limiter = limiter
        self._limit = limit
        self._sleep = sleep
        self._waiting_key = limiter.waiting_key(resource)

    def watch(self, call: Call) -> tuple[str, ...]:
        return (self._waiting_key,) if self._limit() is not None else ()

    def check(self, call: Call, watched: Mapping[str, bytes | None]) -> None:
        limit = self._limit()
        if limit is None:
            return
        waiting = watched.get(self._waiting_key)
        if waiting and not call.interactive:
            # Interactive work waits on this limit (the mark outlives its due time by a second,
            # while it comes back): batch work stands aside until after it.
            ahead = self._limiter.waiting_for(waiting) + _STAND_ASIDE
            raise Defer(
                ahead * (1 + random.uniform(0, limit.jitter)),
                f"rate limit {limit.spec}: interactive work goes first",
            )
        patience = limit.max_wait_in_worker
        decision = self._limiter.acquire(limit, self.resource, call, reserve=False)
        while not decision.allowed and decision.retry_after <= patience:
            self._sleep(decision.retry_after)  # the next unit is close: wait for it here
            patience -= decision.retry_after
            decision = self._limiter.acquire(limit, self.resource, call, reserve=False)
        if decision.allowed:
            return
        if call.interactive:  # interactive work waits for the next free unit, ahead of batch
            self._limiter.interactive_waits(self.resource, decision.retry_after)
            raise Defer(decision.retry_after, f"rate limit {decision.window}")
        # batch work leaves the worker with a place in line (one more round trip, only here)
        decision = self._limiter.acquire(limit, self.resource, call, reserve=True)
        if decision.allowed:
            return
        delay = decision.retry_after + random.uniform(0, limit.jitter * decision.interval)
        raise Defer(delay, f"rate limit {decision.window}")
