"""Quota gates: a provider's cool-down, a team's budget, the resource's rate limit.

Cheapest first: the cool-down and the budget only read values the admission round trip
already fetched; the rate limit takes a unit from Redis (the one extra round trip).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import redis

from resilience_tasks.errors import Defer, Degrade
from resilience_tasks.gate import Call, Gate
from resilience_tasks.quota.budget import Budget, decide, utc_day
from resilience_tasks.quota.rate_limit import FleetRateLimiter, RateLimit
from resilience_tasks.state.keys import KeySpace


def _float(value: bytes | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


class CooldownGate(Gate):
    """After a provider's 429, the whole fleet waits out its ``Retry-After``, not just one task."""

    def __init__(self, resource: str, keys: KeySpace) -> None:
        self.resource = resource
        self._key = keys.cooldown(resource)

    def watch(self, call: Call) -> tuple[str, ...]:
        return (self._key,)

    def check(self, call: Call, watched: Mapping[str, bytes | None]) -> None:
        wait = _float(watched.get(self._key)) - time.time()
        if wait > 0:
            raise Defer(
                wait + random.uniform(0, min(1.0, wait * 0.1)),
                f"{self.resource} asked to wait (429): {wait:.1f}s left",
            )


class BudgetGate(Gate):
    """The team's daily budget (and the resource's, within the team), checked before the call."""

    def __init__(
        self,
        team: str,
        resource: str,
        keys: KeySpace,
        budgets: Callable[[], tuple[Budget | None, Budget | None]],
    ) -> None:
        self.team = team
        self.resource = resource
        self._keys = keys
        self._budgets = budgets

    def _watched(self) -> list[tuple[str, Budget, str]]:
        team_budget, resource_budget = self._budgets()
        day = utc_day()
        found = []
        if team_budget is not None:
            found.append((self._keys.team_spend(self.team, day), team_budget, f"team {self.team}"))
        if resource_budget is not None:
            found.append(
                (
                    self._keys.team_resource_spend(self.team, self.resource, day),
                    resource_budget,
                    f"team {self.team} on {self.resource}",
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
            if decision.action == "degrade":
                raise Degrade(delay, f"over budget: {decision.reason}")
            raise Defer(delay, f"over budget: {decision.reason}")


#: Seconds batch work waits beyond an interactive call's due time, while that call comes back.
_STAND_ASIDE = 0.2


class RateLimitGate(Gate):
    """Take a unit of the resource's fleet-wide limit, waiting briefly or deferring if none."""

    def __init__(
        self,
        team: str,
        resource: str,
        keys: KeySpace,
        limiter: FleetRateLimiter,
        limit: Callable[[], RateLimit | None],
        client: redis.Redis,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.team = team
        self.resource = resource
        self._limiter = limiter
        self._limit = limit
        self._client = client
        self._sleep = sleep
        self._waiting_key = keys.interactive_waiting(resource)

    def watch(self, call: Call) -> tuple[str, ...]:
        return (self._waiting_key,) if self._limit() is not None else ()

    def check(self, call: Call, watched: Mapping[str, bytes | None]) -> None:
        limit = self._limit()
        if limit is None:
            return
        waiting = watched.get(self._waiting_key)
        if waiting and not call.interactive:
            # Interactive work waits on this limit (the key outlives its due time by a second,
            # while it comes back): batch work stands aside until after it.
            ahead = max(0.0, _float(waiting) - time.time()) + _STAND_ASIDE
            raise Defer(
                ahead * (1 + random.uniform(0, limit.jitter)),
                f"rate limit {limit.spec}: interactive work goes first",
            )
        identifiers = limit.identifiers(self.resource, self.team, call.args, call.kwargs)
        patience = limit.max_wait_in_worker
        decision = self._limiter.acquire(limit, identifiers, reserve=False)
        while not decision.allowed and decision.retry_after <= patience:
            self._sleep(decision.retry_after)  # the next unit is close: wait for it here
            patience -= decision.retry_after
            decision = self._limiter.acquire(limit, identifiers, reserve=False)
        if decision.allowed:
            return
        if call.interactive:  # interactive work waits for the next free unit, ahead of batch
            delay = decision.retry_after
            self._client.set(self._waiting_key, time.time() + delay, px=int((delay + 1.0) * 1000))
            raise Defer(delay, f"rate limit {decision.window}")
        # batch work leaves the worker with a place in line (one more round trip, only here)
        decision = self._limiter.acquire(limit, identifiers, reserve=True)
        if decision.allowed:
            return
        delay = decision.retry_after + random.uniform(0, limit.jitter * decision.interval)
        raise Defer(delay, f"rate limit {decision.window}")
