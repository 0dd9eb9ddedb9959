"""What the handle and the target process agree on: the modes, a fault, the stats, addresses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Every mode with the parameters it takes and their defaults.
MODES: Mapping[str, Mapping[str, float]] = {
    "healthy": {},
    "latency": {"delay": 1.0},
    "slow_tail": {"fraction": 0.1, "delay": 5.0},
    "errors": {"rate": 1.0, "status": 500},
    "rate_limited": {"rate": 1.0, "retry_after": 1.0},
    "hang": {},
    "down": {},
}

#: The model ``GET /v1/models`` lists (any model name is answered).
MODEL = "fault-chat"


@dataclass(frozen=True)
class Fault:
    """A mode and its parameters, validated (``Fault.of``) on both sides of the control port."""

    mode: str = "healthy"
    params: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, mode: str, **params: Any) -> Fault:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        unknown = sorted(set(params) - set(MODES[mode]))
        if unknown:
            takes = ", ".join(MODES[mode]) or "no parameters"
            raise ValueError(f"mode {mode!r} takes {takes}; got {', '.join(unknown)}")
        values = {**MODES[mode], **params}
        for key, value in values.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{mode}.{key} must be a number >= 0, got {value!r}")
            if key in ("rate", "fraction") and value > 1:
                raise ValueError(f"{mode}.{key} must be between 0 and 1, got {value!r}")
        if "status" in values and values["status"] not in range(500, 600):
            raise ValueError(f"{mode}.status must be an HTTP 5xx status, got {values['status']!r}")
        return cls(mode, {key: float(value) for key, value in values.items()})

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.params}


def picked(share: float, index: int) -> bool:
    """Whether call ``index`` (from 0) is in an evenly spread ``share`` of the calls.

    0.1 picks calls 9, 19, 29... (every 10th), 0.5 every other one, 1 all, 0 none: a benchmark
    reading a p99 gets the same tail on every run.
    """
    return math.floor((index + 1) * share + 1e-9) > math.floor(index * share + 1e-9)


@dataclass(frozen=True)
class FaultStats:
    """What reached a target since it started or was last reset."""

    #: HTTP requests that reached the service port (none do while it is down).
    requests: int
    #: What the fault did with them: ``ok``, ``delayed``, ``error``, ``rate_limited``, ``hung``.
    outcomes: Mapping[str, int]
    #: Requests by endpoint: ``chat``, ``models``, ``mcp``, ``other``.
    endpoints: Mapping[str, int]
    #: MCP tool calls that ran, by tool (a call refused by a fault never runs).
    tool_calls: Mapping[str, int]
    #: Requests held right now (``hang``).
    held: int
    mode: str


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
