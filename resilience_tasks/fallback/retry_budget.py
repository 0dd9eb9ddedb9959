"""The fleet retry budget: retries to a resource stay a fraction of the calls made to it.

Per-process retry limits multiply under an outage: a hundred workers each allowed three
retries send four times the traffic to a dependency that is already failing. Finagle and
Envoy bound retries by a budget instead: over the last ``window`` seconds, retries may be at
most ``ratio`` of the first calls plus ``min_per_second`` a second (so a quiet resource can
still retry). Here the counts live in Redis, per server second, so the budget holds for the
whole fleet, and a withdrawal checks and counts in one script, so two workers cannot both
take the last retry.

One round trip per operation; the layout of the hash is described in ``scripts.py``.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from resilience_tasks.fallback import scripts
from resilience_tasks.fallback.policy import RetryBudget
from resilience_tasks.fallback.scripts import AsyncStateClient
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace


class Balance(TypedDict):
    """A retry budget's window now, for operators: first ``calls`` and ``retries`` counted in
    the last ``window`` seconds, the retries ``allowed`` over that window, and how many
    more may go out now (``remaining``, whole retries)."""

    calls: int
    retries: int
    allowed: float
    remaining: int
    window: int


class FleetRetryBudget:
    """One resource's retry budget, shared by every process on the same Redis.

    Call ``deposit()`` for every first attempt and ``withdraw()`` before every retry: a retry
    it refuses is not made. Each operation has an ``_async`` twin taking a ``redis.asyncio``
    client (clients of that kind are bound to their event loop, so the caller passes its own).
    """

    def __init__(
        self, client: StateClient, keys: KeySpace, resource: str, budget: RetryBudget
    ) -> None:
        self.resource = resource
        self.budget = budget
        self.key = keys.retry_budget(resource)
        self._deposit = client.register_script(scripts.DEPOSIT)
        self._withdraw = client.register_script(scripts.WITHDRAW)
        self._balance = client.register_script(scripts.BALANCE)

    def _args(self) -> list[Any]:
        return [
            self.budget.window,
            repr(float(self.budget.ratio)),
            repr(self.budget.min_per_second),
        ]

    def deposit(self) -> None:
        """Count a first attempt (it earns ``ratio`` of a retry for ``window`` seconds)."""
        self._deposit([self.key], [self.budget.window])

    def withdraw(self) -> bool:
        """May a retry go out now? When it may, it is counted in the same step."""
        reply: Any = self._withdraw([self.key], self._args())
        return int(reply[0]) == 1

    def balance(self) -> Balance:
        """The budget's window now (calls, retries, allowed, remaining); writes nothing."""
        return self._read(self._balance([self.key], self._args()))

    async def deposit_async(self, aclient: AsyncStateClient) -> None:
        await scripts.run_async(aclient, scripts.DEPOSIT, [self.key], [self.budget.window])

    async def withdraw_async(self, aclient: AsyncStateClient) -> bool:
        reply = await scripts.run_async(aclient, scripts.WITHDRAW, [self.key], self._args())
        return int(reply[0]) == 1

    async def balance_async(self, aclient: AsyncStateClient) -> Balance:
        return self._read(
            await scripts.run_async(aclient, scripts.BALANCE, [self.key], self._args())
        )

    def _read(self, reply: Any) -> Balance:
        calls, retries, allowed = int(reply[0]), int(reply[1]), float(reply[2])
        return Balance(
            calls=calls,
            retries=retries,
            allowed=allowed,
            remaining=max(0, math.floor(allowed + 1e-9) - retries),
            window=self.budget.window,
        )
