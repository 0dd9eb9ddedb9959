"""The whole of a deferred task message, as JSON.

Everything needed to publish the task again as if it had never left: its name and id (so the
caller's ``AsyncResult`` still resolves), arguments, queue, the Celery options that tie it to
its workflow (parent, root, callbacks, chain, group), and our own bookkeeping (why it waits, how
many retry attempts it has used, when it was first deferred).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from resilience_tasks.errors import MalformedMessageError

__all__ = ["DeferredMessage", "MalformedMessageError"]


@dataclass(frozen=True)
class DeferredMessage:
    task_id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    resource: str = ""
    reason: str = ""
    attempts: int = 0
    failed_trials: int = 0
    first_attempt_at: float = 0.0
    defer_count: int = 0
    first_deferred_at: float = 0.0
    deferred_at: float = 0.0
    interactive: bool = False
    degraded: bool = False

    def deferred_again(
        self, reason: str, attempts: int, failed_trials: int = 0, now: float | None = None
    ) -> DeferredMessage:
        """This message, deferred once more at ``now``."""
        now = time.time() if now is None else now
        return replace(
            self,
            reason=reason,
            attempts=attempts,
            failed_trials=failed_trials,
            defer_count=self.defer_count + 1,
            first_deferred_at=self.first_deferred_at or now,
            deferred_at=now,
        )

    def age(self, now: float | None = None) -> float:
        """Seconds since the work was first deferred (0 if it never was)."""
        if not self.first_deferred_at:
            return 0.0
        return (time.time() if now is None else now) - self.first_deferred_at

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeferredMessage:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            known = {f.name for f in fields(cls)}
            message = cls(**{key: value for key, value in data.items() if key in known})
        except (ValueError, TypeError) as exc:
            raise MalformedMessageError(f"cannot decode deferred message: {exc}") from None
        if not message.task_id or not message.task:
            raise MalformedMessageError("deferred message has no task_id or task name")
        if not isinstance(message.args, list) or not isinstance(message.kwargs, dict):
            raise MalformedMessageError("deferred message args/kwargs have the wrong type")
        return message
