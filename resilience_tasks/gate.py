"""The shape of a proactive check: what it reads in the admission round trip, and its verdict.

A gate runs before each attempt, after the breaker admitted the call. It names the Redis keys
it needs (``watch``); the breaker's admission script reads them in the same round trip, so a
gate that only reads costs nothing extra. ``check`` lets the call through by returning, or
turns it away by raising ``Defer`` (wait in the deferred store) or ``Degrade`` (take the
degraded path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """One attempt's task arguments and marks, as the gates see them."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    interactive: bool = False


class Gate:
    """Base class: no keys, no objection."""

    def watch(self, call: Call) -> tuple[str, ...]:
        return ()

    def check(self, call: Call, watched: Mapping[str, bytes | None]) -> None:
        return None
