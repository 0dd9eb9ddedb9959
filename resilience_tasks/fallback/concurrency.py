"""The fleet concurrency limit: a semaphore over every worker, with expiring leases and a limit
that adapts (AIMD).

A dependency that slows down keeps every caller waiting; a fixed bulkhead per process still
lets the fleet send ``processes x limit`` calls. Here the slots are leases in one Redis sorted
set, so the limit holds for the whole fleet, and each lease expires (``Concurrency.lease``), so
a worker killed mid-call gives its slot back at the next ``acquire``.

The limit moves as Netflix's concurrency-limits moves it in one process: a success adds
``1 / limit`` (a whole limit's worth of successes adds one, up to the ceiling); a drop
(timeout, error, 429) multiplies it by ``backoff`` (never below ``min_limit``). A burst of
simultaneous drops counts once: a drop of a lease granted before the last decrease is
ignored, as TCP halves its window at most once per round trip, so the calls that were in
flight when the dependency faltered do not drive the limit to its floor. ``"ignore"`` only
frees the slot (a caller's error, a cancelled hedge). Releasing a lease that expired or was
never granted frees nothing and moves nothing, so no outcome is counted twice.

One round trip per operation; the layout of the keys is described in ``scripts.py``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback import scripts
from resilience_tasks.fallback.policy import Concurrency
from resilience_tasks.fallback.scripts import AsyncStateClient
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace

#: How a call that held a lease ended, as the limit reads it.
Outcome = Literal["success", "drop", "ignore"]
OUTCOMES: Final = ("success", "drop", "ignore")


@dataclass(frozen=True)
class Lease:
    """A slot held by one call: pass it back to ``release``.

    ``limit`` is the fleet's limit when it was granted and ``in_flight`` the calls in flight
    then (this one included); ``acquired_at`` is this process's ``time.monotonic()`` at the
    grant, to measure the call.
    """

    token: str
    resource: str
    limit: float
    in_flight: int
    acquired_at: float


class FleetConcurrencyLimit:
    """One resource's fleet-wide concurrency limit.

    ``acquire()`` returns a ``Lease`` or ``None`` (the fleet is at its limit: the caller
    waits elsewhere, e.g. in the deferred store, for ``policy.retry_after``); every lease goes
    back through ``release(lease, outcome)``. Each operation has an ``_async`` twin taking a
    ``redis.asyncio`` client (bound to the caller's event loop).
    """

    def __init__(
        self, client: StateClient, keys: KeySpace, resource: str, policy: Concurrency
    ) -> None:
        self._client = client
        self.resource = resource
        self.policy = policy
        self.leases_key = keys.concurrency_leases(resource)
        self.limit_key = keys.concurrency_limit(resource)
        self._keys = [self.leases_key, self.limit_key]
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._release = client.register_script(scripts.RELEASE)
        self._in_flight = client.register_script(scripts.IN_FLIGHT)

    # -- each script's ARGV, shared with the asyncio path --------------------------------------

    def _bounds(self) -> list[Any]:
        return [self.policy.limit, self.policy.min_limit, self.policy.ceiling]

    def _acquire_args(self, token: str | None) -> list[Any]:
        return [token or uuid.uuid4().hex, repr(float(self.policy.lease)), *self._bounds()]

    def _release_args(self, lease: Lease, outcome: str) -> list[Any]:
        if outcome not in OUTCOMES:
            raise ConfigurationError(f"release outcome must be one of {OUTCOMES}, got {outcome!r}")
        return [
            lease.token,
            outcome,
            repr(float(self.policy.lease)),
            *self._bounds(),
            repr(float(self.policy.backoff)),
        ]

    def _lease(self, token: str, reply: Any) -> Lease | None:
        if int(reply[0]) != 1:
            return None
        return Lease(token, self.resource, float(reply[2]), int(reply[1]), time.monotonic())

    def _clamped(self, raw: Any) -> float:
        limit = self.policy.limit if raw is None else float(raw)
        return max(float(self.policy.min_limit), min(float(self.policy.ceiling), limit))

    # -- operations ------------------------------------------------------------------------------

    def acquire(self, token: str | None = None) -> Lease | None:
        """Take a slot, or ``None`` when the fleet is at its limit. Expired leases are purged
        first. A ``token`` that already holds a live lease (a redelivered task) gets it back
        renewed, without a second slot."""
        args = self._acquire_args(token)
        return self._lease(args[0], self._acquire(self._keys, args))

    def release(self, lease: Lease, outcome: Outcome) -> bool:
        """Free the slot and move the limit by ``outcome``. False when the lease had already
        expired or was unknown: nothing was freed or moved."""
        reply: Any = self._release(self._keys, self._release_args(lease, outcome))
        return int(reply[0]) == 1

    def in_flight(self) -> int:
        """Leases held now across the fleet (expired ones not counted)."""
        return int(self._in_flight([self.leases_key], []))

    def current_limit(self) -> float:
        """The fleet's limit now (a float: successes raise it by fractions)."""
        return self._clamped(self._client.hget(self.limit_key, "limit"))

    def reset(self) -> None:
        """Forget the adapted limit (back to ``policy.limit``); leases in flight stay."""
        self._client.delete(self.limit_key)

    # -- the asyncio twins -----------------------------------------------------------------------

    async def acquire_async(
        self, aclient: AsyncStateClient, token: str | None = None
    ) -> Lease | None:
        args = self._acquire_args(token)
        return self._lease(
            args[0], await scripts.run_async(aclient, scripts.ACQUIRE, self._keys, args)
        )

    async def release_async(
        self, aclient: AsyncStateClient, lease: Lease, outcome: Outcome
    ) -> bool:
        args = self._release_args(lease, outcome)
        reply = await scripts.run_async(aclient, scripts.RELEASE, self._keys, args)
        return int(reply[0]) == 1

    async def in_flight_async(self, aclient: AsyncStateClient) -> int:
        return int(await scripts.run_async(aclient, scripts.IN_FLIGHT, [self.leases_key], []))

    async def current_limit_async(self, aclient: AsyncStateClient) -> float:
        raw: Any = await aclient.hget(self.limit_key, "limit")
        return self._clamped(raw)
