"""The deferred store: work that must wait, kept in Redis until it may run.

Work refused by an open breaker is *parked* on that breaker and comes back at the pace the
breaker can admit it: a trial's worth while it is open or half-open, everything once it closes.
Work that waits for a time (a retry's backoff, a rate limit's slot, a provider's 429, a budget's
next day) is due at that time. Nothing is parked as a broker countdown/ETA message (which the
Redis transport redelivers after ``visibility_timeout`` and which sits in worker memory). The
pump (``pump.py``) claims work that may run and publishes it again under the same task id; the
entry stays claimed until a worker starts the task, so a message lost on its way is published
again when its claim expires.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from resilience_tasks.deferred import scripts
from resilience_tasks.deferred.message import DeferredMessage
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace


@dataclass(frozen=True)
class Claimed:
    """A claimed entry: the raw JSON is kept so a malformed one can be dead-lettered as is."""

    task_id: str
    raw: bytes


@dataclass(frozen=True)
class ParkingSpot:
    """Where one resource's parked work waits, and how to read its breaker's pace."""

    resource: str
    parked_key: str
    expiry_key: str
    breaker_key: str
    leases_key: str
    marker_key: str
    reset_timeout: float
    trial_calls: int


class DeferredStore:
    """One team's deferred work."""

    def __init__(self, client: StateClient, team: str, keys: KeySpace | None = None) -> None:
        keys = keys or KeySpace()
        self._client = client
        self._keys = keys
        self._team = team
        self.due_key = keys.deferred_due(team)
        self.messages_key = keys.deferred_messages(team)
        self.claims_key = keys.deferred_claims(team)
        self.publish_failures_key = keys.deferred_publish_failures(team)
        self._defer = client.register_script(scripts.DEFER)
        self._park = client.register_script(scripts.PARK)
        self._claim = client.register_script(scripts.CLAIM_DUE)
        self._release_parked = client.register_script(scripts.RELEASE_PARKED)
        self._published = client.register_script(scripts.PUBLISHED)
        self._started = client.register_script(scripts.STARTED)
        self._forget = client.register_script(scripts.FORGET)
        self._reconcile = client.register_script(scripts.RECONCILE)

    # -- keys this store owns ------------------------------------------------------------------

    def parked_key(self, resource: str) -> str:
        """The set of work parked on ``resource``'s breaker (shares the store's hash tag)."""
        return self._keys.deferred_parked(self._team, resource)

    def _expiry_key(self, resource: str) -> str:
        return self._keys.deferred_parked_expiry(self._team, resource)

    def parking_spot(self, resource: str, reset_timeout: float, trial_calls: int) -> ParkingSpot:
        """Where work parked on ``resource``'s breaker waits, for the pump."""
        return ParkingSpot(
            resource=resource,
            parked_key=self.parked_key(resource),
            expiry_key=self._expiry_key(resource),
            breaker_key=self._keys.breaker(resource),
            leases_key=self._keys.trial_leases(resource),
            marker_key=self._keys.deferred_parked_released(self._team, resource),
            reset_timeout=reset_timeout,
            trial_calls=trial_calls,
        )

    # -- writing -------------------------------------------------------------------------------

    def add(self, message: DeferredMessage, delay: float) -> float:
        """Store ``message`` due in ``delay`` seconds; returns the due time (server clock).

        Keyed by task id, so a message redelivered and deferred twice is stored once. The
        message's delivery counter is cleared in the same step: waiting is not a redelivery.
        """
        return self._store(self.due_key, message, delay)

    def park(self, message: DeferredMessage, resource: str, expires_in: float) -> float:
        """Park ``message`` until ``resource``'s breaker can admit it, or until it expires in
        ``expires_in`` seconds (then it is released to be dead-lettered); returns its expiry
        (server clock)."""
        keys = [
            self.parked_key(resource),
            self._expiry_key(resource),
            self.messages_key,
            self._keys.deliveries(self._team, message.task_id),
        ]
        return float(self._park(keys, [message.task_id, message.to_json(), max(0.0, expires_in)]))

    def _store(self, key: str, message: DeferredMessage, delay: float) -> float:
        delivery_key = self._keys.deliveries(self._team, message.task_id)
        due = self._defer(
            [key, self.messages_key, delivery_key], [message.task_id, message.to_json(), delay]
        )
        return float(due)

    # -- the pump's side -----------------------------------------------------------------------

    def claim_due(self, limit: int = 500, lease: float = 60.0) -> list[Claimed]:
        """Claim up to ``limit`` due entries for ``lease`` seconds."""
        flat = self._claim([self.due_key, self.messages_key, self.claims_key], [limit, lease])
        return _claimed(flat)

    def claim_parked(
        self, spots: Iterable[ParkingSpot], limit: int = 500, lease: float = 60.0
    ) -> list[Claimed]:
        """Claim parked entries that their breakers can take now (see ``scripts``)."""
        keys: list[str] = [self.messages_key, self.claims_key]
        args: list[Any] = [limit, lease]
        for spot in spots:
            keys += [
                spot.parked_key,
                spot.expiry_key,
                spot.breaker_key,
                spot.leases_key,
                spot.marker_key,
            ]
            args += [spot.reset_timeout, spot.trial_calls]
        if len(keys) == 2:
            return []
        return _claimed(self._release_parked(keys, args))

    def published(self, task_ids: list[str], lease: float) -> None:
        """Keep published entries claimed for ``lease`` seconds, until a worker starts them."""
        if task_ids:
            self._published([self.claims_key, self.publish_failures_key], [lease, *task_ids])

    def publish_failed(self, task_id: str) -> int:
        """Count a failed publish of ``task_id``; returns how many there were."""
        return int(self._client.hincrby(self.publish_failures_key, task_id, 1))

    def started(self, task_id: str, resource: str) -> bool:
        """A worker started ``task_id``: forget its entry (one round trip, only for work that
        was deferred). Returns whether an entry was waiting for it."""
        keys = [self.due_key, self.messages_key, self.claims_key, self.parked_key(resource)]
        return bool(self._started(keys, [task_id]))

    def forget(self, *task_ids: str) -> None:
        """Drop entries for good (dead-lettered, or published by an operator)."""
        if task_ids:
            keys = [self.due_key, self.messages_key, self.claims_key, self.publish_failures_key]
            self._forget(keys, list(task_ids))

    def reconcile(self, resources: Iterable[str], count: int = 500) -> int:
        """Make every entry that sits in no set due now; returns how many were found.

        An entry without a place would never be published (a crash between writes of an older
        version, a hand edit): it is not dropped but brought back.
        """
        keys = [
            self.due_key,
            self.messages_key,
            self.claims_key,
            *(self.parked_key(resource) for resource in resources),
        ]
        cursor: Any = 0
        found = 0
        while True:
            cursor, orphans = self._reconcile(keys, [cursor, count])
            found += int(orphans)
            if int(cursor) == 0:
                return found

    # -- operators -----------------------------------------------------------------------------

    def release(self, task_ids: list[str] | None = None, resources: Iterable[str] = ()) -> int:
        """Make waiting work due now (all of it, or ``task_ids``), parked work included: for an
        operator who knows the dependency is back. Returns how many entries were moved."""
        moved = 0
        for resource in (None, *resources):
            source = self.due_key if resource is None else self.parked_key(resource)
            ids: list[Any] = (
                [i for i in task_ids if self._client.zscore(source, i) is not None]
                if task_ids is not None
                else list(self._client.zrange(source, 0, -1))
            )
            if not ids:
                continue
            pipe = self._client.pipeline(transaction=True)
            if resource is not None:
                pipe.zrem(source, *ids)
                pipe.zrem(self._expiry_key(resource), *ids)
            pipe.zadd(self.due_key, dict.fromkeys(ids, 0))
            pipe.execute()
            moved += len(ids)
        return moved

    def get(self, task_id: str) -> DeferredMessage | None:
        raw = self._client.hget(self.messages_key, task_id)
        return DeferredMessage.from_json(raw) if raw is not None else None

    def depth(self, resources: Iterable[str] = ()) -> int:
        """Entries waiting (due, parked on the named resources) or being published."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zcard(self.due_key)
        pipe.zcard(self.claims_key)
        for resource in resources:
            pipe.zcard(self.parked_key(resource))
        return sum(int(count) for count in pipe.execute())


def _claimed(flat: list[Any]) -> list[Claimed]:
    return [Claimed(task_id=flat[i].decode(), raw=flat[i + 1]) for i in range(0, len(flat), 2)]
