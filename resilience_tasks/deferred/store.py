"""The deferred store: work that must wait, kept in Redis until it is due.

Work refused by an open breaker, or whose next retry is too far away to wait for inside a
worker, is written here instead of being parked as a broker countdown/ETA message (which the
Redis transport redelivers after ``visibility_timeout`` and which sits in worker memory). The
pump (``pump.py``) claims due work and publishes it again under the same task id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from resilience_tasks.deferred import scripts
from resilience_tasks.deferred.message import DeferredMessage
from resilience_tasks.state.keys import KeySpace


@dataclass(frozen=True)
class Claimed:
    """A claimed entry: the raw JSON is kept so a malformed one can be dead-lettered as is."""

    task_id: str
    raw: bytes


class DeferredStore:
    """One team's deferred work."""

    def __init__(self, client: redis.Redis, team: str, keys: KeySpace | None = None) -> None:
        keys = keys or KeySpace()
        self._client = client
        self._keys = keys
        self._team = team
        self.due_key = keys.deferred_due(team)
        self.messages_key = keys.deferred_messages(team)
        self.claims_key = keys.deferred_claims(team)
        self._defer = client.register_script(scripts.DEFER)
        self._claim = client.register_script(scripts.CLAIM_DUE)
        self._ack = client.register_script(scripts.ACK)

    def add(self, message: DeferredMessage, delay: float) -> float:
        """Store ``message`` due in ``delay`` seconds; returns the due time (server clock).

        Keyed by task id, so a message redelivered and deferred twice is stored once. The
        message's delivery counter is cleared in the same step: waiting is not a redelivery.
        """
        delivery_key = self._keys.deliveries(self._team, message.task_id)
        due = self._defer(
            [self.due_key, self.messages_key, delivery_key],
            [message.task_id, message.to_json(), delay],
        )
        return float(due)

    def claim_due(self, limit: int = 500, lease: float = 60.0) -> list[Claimed]:
        """Claim up to ``limit`` due entries for ``lease`` seconds."""
        flat = self._claim([self.due_key, self.messages_key, self.claims_key], [limit, lease])
        return [Claimed(task_id=flat[i].decode(), raw=flat[i + 1]) for i in range(0, len(flat), 2)]

    def ack(self, *task_ids: str) -> None:
        """Forget claimed entries once they have been published (one round trip for all)."""
        if task_ids:
            self._ack([self.due_key, self.messages_key, self.claims_key], list(task_ids))

    def release(self, task_ids: list[str] | None = None) -> int:
        """Make waiting work due now (all of it, or ``task_ids``): for an operator who knows
        the dependency is back. Returns how many entries were moved."""
        ids: list[Any] = (
            task_ids if task_ids is not None else list(self._client.zrange(self.due_key, 0, -1))
        )
        if not ids:
            return 0
        moved = self._client.zadd(self.due_key, dict.fromkeys(ids, 0), xx=True, ch=True)
        return int(cast(int, moved))

    def get(self, task_id: str) -> DeferredMessage | None:
        raw = self._client.hget(self.messages_key, task_id)
        return DeferredMessage.from_json(raw) if raw is not None else None

    def depth(self) -> int:
        """Entries waiting or being published."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zcard(self.due_key)
        pipe.zcard(self.claims_key)
        waiting, claimed = pipe.execute()
        return int(waiting) + int(claimed)
