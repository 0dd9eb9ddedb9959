"""The dead-letter store: work that will not run, kept with the reason, never dropped."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from resilience_tasks.state.keys import KeySpace


@dataclass(frozen=True)
class DeadLetter:
    task_id: str
    reason: str
    at: float
    message: Any


class DeadLetterStore:
    """One team's dead letters: a hash of id -> entry and an index by time."""

    def __init__(self, client: redis.Redis, team: str, keys: KeySpace | None = None) -> None:
        keys = keys or KeySpace()
        self._client = client
        self.entries_key = keys.dead_letters(team)
        self.index_key = keys.dead_letter_index(team)

    def add(self, task_id: str, reason: str, message: Any) -> DeadLetter:
        """Record ``message`` (JSON-able data, or raw bytes/str kept as text) with its reason."""
        if isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        entry = DeadLetter(task_id=task_id, reason=reason, at=time.time(), message=message)
        payload = json.dumps(entry.__dict__, default=repr)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self.entries_key, task_id, payload)
        pipe.zadd(self.index_key, {task_id: entry.at})
        pipe.execute()
        return entry

    def get(self, task_id: str) -> DeadLetter | None:
        raw = self._client.hget(self.entries_key, task_id)
        return DeadLetter(**json.loads(raw)) if raw is not None else None

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        ids = cast(list[bytes], self._client.zrevrange(self.index_key, 0, limit - 1))
        if not ids:
            return []
        raws = self._client.hmget(self.entries_key, ids)
        return [DeadLetter(**json.loads(raw)) for raw in raws if raw is not None]

    def count(self) -> int:
        return int(self._client.zcard(self.index_key))

    def remove(self, task_id: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(self.entries_key, task_id)
        pipe.zrem(self.index_key, task_id)
        pipe.execute()
