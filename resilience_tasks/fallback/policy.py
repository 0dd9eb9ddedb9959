"""The fleet-wide limits a resource may declare besides its breaker: a concurrency limit (the
bulkhead that scales down) and a retry budget. Validated at declaration, naming the field."""

from __future__ import annotations

from dataclasses import dataclass

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.policies import _validate as check


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` calls to the resource in flight across the whole fleet.

    The limit adapts (AIMD, as Netflix's concurrency-limits does in one process): each timeout,
    error or 429 multiplies it by ``backoff`` (never below ``min_limit``); each success adds
    ``1 / limit``, so a whole limit's worth of successes adds one (never above ``max_limit``,
    by default the declared ``limit``). A call holds a lease that expires after ``lease``
    seconds, so a worker that dies mid-call cannot keep its slot. A call over the limit waits
    in the deferred store for ``retry_after`` seconds (jittered) and frees its worker slot;
    with ``max_wait_in_worker``, it first waits that long in the worker for a slot to free up
    (cheaper when calls are short and the limit is only briefly full; costlier when the
    dependency hangs, as the waiting call holds its worker slot meanwhile).
    """

    limit: int
    min_limit: int = 1
    max_limit: int | None = None
    backoff: float = 0.5
    lease: float = 300.0
    retry_after: float = 1.0
    max_wait_in_worker: float = 0.0

    def __post_init__(self) -> None:
        owner = "Concurrency"
        check.positive_seconds(
            owner, "max_wait_in_worker", self.max_wait_in_worker, allow_zero=True
        )
        check.positive_int(owner, "limit", self.limit)
        check.positive_int(owner, "min_limit", self.min_limit)
        if self.max_limit is not None:
            check.positive_int(owner, "max_limit", self.max_limit)
        if self.min_limit > self.limit:
            raise ConfigurationError(
                f"Concurrency.min_limit ({self.min_limit}) must not exceed limit ({self.limit})"
            )
        if self.max_limit is not None and self.max_limit < self.limit:
            raise ConfigurationError(
                f"Concurrency.max_limit ({self.max_limit}) must not be below limit ({self.limit})"
            )
        if (
            isinstance(self.backoff, bool)
            or not isinstance(self.backoff, int | float)
            or not (0.0 < self.backoff < 1.0)
        ):
            raise ConfigurationError(
                f"Concurrency.backoff must be a factor in (0, 1), got {self.backoff!r}"
            )
        check.positive_seconds(owner, "lease", self.lease)
        check.positive_seconds(owner, "retry_after", self.retry_after)

    @property
    def ceiling(self) -> int:
        return self.max_limit if self.max_limit is not None else self.limit


@dataclass(frozen=True)
class RetryBudget:
    """Retries may be at most ``ratio`` of the calls made to the resource over the last
    ``window`` seconds, counted for the whole fleet (Finagle's and Envoy's retry budget), plus
    ``min_per_second`` retries a second so a quiet resource can still retry. A retry the budget
    refuses is not made: the call falls through to the chain's next protocol."""

    ratio: float = 0.2
    window: int = 10
    min_per_second: float = 1.0

    def __post_init__(self) -> None:
        owner = "RetryBudget"
        if (
            isinstance(self.ratio, bool)
            or not isinstance(self.ratio, int | float)
            or not (0.0 <= self.ratio <= 1.0)
        ):
            raise ConfigurationError(f"RetryBudget.ratio must be in [0, 1], got {self.ratio!r}")
        check.positive_int(owner, "window", self.window)
        check.positive_seconds(owner, "min_per_second", self.min_per_second, allow_zero=True)
