"""Where a task's provenance is kept beside its result: what served its chain calls.

One JSON string per task that called a chain, for as long as results are kept, so a caller
(or an operator) can ask afterwards whether an answer came from the primary, a backup, a
degraded provider or a stale cache. Tasks that call no chain write nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from resilience_tasks.fallback.scope import Served
from resilience_tasks.state.connection import StateClient
from resilience_tasks.state.keys import KeySpace


class ProvenanceStore:
    def __init__(self, client: StateClient, keys: KeySpace, team: str, ttl: float) -> None:
        self._client = client
        self._keys = keys
        self._team = team
        self._ttl = max(1, int(ttl))

    def save(self, task_id: str, records: Sequence[Served]) -> None:
        payload = json.dumps([record.as_dict() for record in records], separators=(",", ":"))
        self._client.set(self._keys.served(self._team, task_id), payload, ex=self._ttl)

    def load(self, task_id: str) -> list[Served]:
        raw = self._client.get(self._keys.served(self._team, task_id))
        if not raw:
            return []
        try:
            data = json.loads(raw)
        except ValueError:
            return []
        return [Served.from_dict(item) for item in data if isinstance(item, dict)]
