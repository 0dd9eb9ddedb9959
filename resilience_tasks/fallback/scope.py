"""What the code running now is serving: its degraded mode and what served its calls.

A task's run (or a decorated function's call) opens a scope; chain calls inside it read whether
they run on the degraded queue and leave their provenance (``Served``) there. ``served()`` reads
it back in the worker; the task sends it as a Celery event and keeps it beside its result.
Context variables, so concurrent coroutines and threads each see their own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Served:
    """How one chain call was answered.

    ``protocol`` is what produced the answer: ``call`` (the first provider tried),
    ``retry`` (the same provider, again), ``switch_provider``, ``hedge`` (a hedged call won),
    ``degrade`` (a degraded provider) or ``cache`` (a stored answer: ``stale``, ``age``
    seconds old). ``cost`` is the dollars of every provider call made for it, hedged losers
    included; ``attempts`` counts those calls. ``steps`` says what was tried, in order.
    """

    chain: str
    provider: str | None = None
    protocol: str = "call"
    degraded: bool = False
    stale: bool = False
    cost: float = 0.0
    attempts: int = 0
    age: float | None = None
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Served:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass
class Scope:
    """One task run or decorated call: whether it is degraded, and its chain calls so far."""

    degraded: bool = False
    in_task: bool = False
    served: list[Served] = field(default_factory=list)
    current: Served | None = None


_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "resilience_tasks_scope", default=None
)


@contextmanager
def opened(*, degraded: bool = False, in_task: bool = False) -> Iterator[Scope]:
    """Open a scope for one task run or call; nested chain calls report into it."""
    scope = Scope(degraded=degraded, in_task=in_task)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


_LAST: contextvars.ContextVar[Served | None] = contextvars.ContextVar(
    "resilience_tasks_last_served", default=None
)


def remember(record: Served) -> None:
    """Keep the latest chain call's record for ``served()`` outside any scope."""
    _LAST.set(record)


def current() -> Scope | None:
    return _SCOPE.get()


def is_degraded() -> bool:
    """Whether the running task was moved to its degraded queue (only degraded providers)."""
    scope = _SCOPE.get()
    return scope is not None and scope.degraded


def served() -> Served | None:
    """What served the latest chain call of the running task or call, or None."""
    scope = _SCOPE.get()
    if scope is None:
        return _LAST.get()
    return scope.served[-1] if scope.served else None


def note(step: str) -> None:
    """Record a step of the chain call in progress (no-op outside one)."""
    scope = _SCOPE.get()
    if scope is not None and scope.current is not None:
        scope.current.steps.append(step)
