"""The target's state inside its process: its fault, its quota and what reached it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from resilience_tasks.testing.faults.spec import Fault


def _duration(seconds: float) -> str:
    """OpenAI's spelling of a reset delay: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


@dataclass
class Quota:
    """A one-minute window of requests and tokens, told in OpenAI's ``x-ratelimit-*`` headers."""

    requests: int
    tokens: int
    window: float = 60.0
    started: float = field(default_factory=time.monotonic)
    used_requests: int = 0
    used_tokens: int = 0

    def _roll(self) -> float:
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started, self.used_requests, self.used_tokens = now, 0, 0
        return self.window - (now - self.started)

    def spend(self, tokens: int) -> None:
        self._roll()
        self.used_requests += 1
        self.used_tokens += tokens

    def headers(self, exhausted: bool = False) -> list[tuple[str, str]]:
        reset = _duration(self._roll())
        left_requests = 0 if exhausted else max(0, self.requests - self.used_requests)
        left_tokens = max(0, self.tokens - self.used_tokens)
        return [
            ("x-ratelimit-limit-requests", str(self.requests)),
            ("x-ratelimit-remaining-requests", str(left_requests)),
            ("x-ratelimit-reset-requests", reset),
            ("x-ratelimit-limit-tokens", str(self.tokens)),
            ("x-ratelimit-remaining-tokens", str(left_tokens)),
            ("x-ratelimit-reset-tokens", reset),
        ]


class Target:
    """The target's state: its fault, its quota and what reached it (one event loop, no locks)."""

    def __init__(self, name: str, fault: Fault, quota: Quota) -> None:
        self.name = name
        self.fault = fault
        self.quota = quota
        self.tool_calls: Counter[str] = Counter()
        self.held = 0  # a gauge: requests held right now; reset leaves it
        self.reset()
        self._index = 0  # calls decided under the current fault
        self._changed = asyncio.Event()

    def reset(self) -> None:
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.endpoints: Counter[str] = Counter()
        self.tool_calls.clear()
        self.completions = 0

    def next_index(self) -> int:
        self._index += 1
        return self._index - 1

    def switch(self, fault: Fault) -> None:
        """Take ``fault`` from the next decision on, and wake the held requests."""
        self.fault, self._index = fault, 0
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.fault.mode,
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "endpoints": dict(self.endpoints),
            "tool_calls": dict(self.tool_calls),
            "held": self.held,
        }
