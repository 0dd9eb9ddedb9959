"""The options of a fleet-wide circuit breaker, validated when the task is declared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resilience_tasks.policies import _validate as check

ExclusionRule = type[BaseException] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class BreakerPolicy:
    """How a resource's breaker trips and recovers.

    The breaker opens after ``fail_max`` consecutive failures or, when ``failure_rate`` is set,
    once at least ``min_calls`` calls in the last ``window`` seconds failed at that rate or more.
    After ``reset_timeout`` seconds it goes half-open and the whole fleet sends exactly
    ``trial_calls`` trial calls; ``success_threshold`` successful trials close it, one failed
    trial opens it again. A trial's lease expires after ``trial_lease`` seconds, so a worker
    that dies mid-trial cannot keep the breaker half-open forever.

    ``slow_call_duration`` (seconds; None, the default, turns it off) also opens the breaker
    on a dependency that hangs rather than fails: a call is slow when it took at least that
    long, whether it then succeeded or failed (a timeout is slow *and* a failure), and
    ``slow_call_max`` slow calls in a row open the breaker, however large ``fail_max`` is. A
    fast success ends the run of slow calls, as it ends a run of failures; a fast failure does
    not. In half-open, a slow trial counts as a failed trial: the breaker opens again.

    ``exclude`` lists exception types (or predicates) that are not the dependency's fault, as
    in pybreaker; they never count as failures.
    """

    fail_max: int = 5
    reset_timeout: float = 60.0
    success_threshold: int = 1
    trial_calls: int = 1
    trial_lease: float = 60.0
    failure_rate: float | None = None
    window: int = 60
    min_calls: int = 20
    exclude: tuple[ExclusionRule, ...] = ()
    slow_call_duration: float | None = None
    slow_call_max: int = 3

    def __post_init__(self) -> None:
        owner = "BreakerPolicy"
        check.positive_int(owner, "fail_max", self.fail_max)
        check.positive_seconds(owner, "reset_timeout", self.reset_timeout)
        check.positive_int(owner, "success_threshold", self.success_threshold)
        check.positive_int(owner, "trial_calls", self.trial_calls)
        check.positive_seconds(owner, "trial_lease", self.trial_lease)
        if self.failure_rate is not None:
            check.fraction(owner, "failure_rate", self.failure_rate)
        check.positive_int(owner, "window", self.window)
        check.positive_int(owner, "min_calls", self.min_calls)
        if self.slow_call_duration is not None:
            check.positive_seconds(owner, "slow_call_duration", self.slow_call_duration)
        check.positive_int(owner, "slow_call_max", self.slow_call_max)
        check.exception_types(owner, "exclude", self.exclude, allow_predicates=True)

    @property
    def rate_window(self) -> int:
        """Seconds of the failure-rate window, or 0 when only consecutive failures count."""
        return self.window if self.failure_rate is not None else 0

    def is_slow(self, duration: float | None) -> bool:
        """Whether a call that took ``duration`` seconds is slow (never, when off or untimed)."""
        limit = self.slow_call_duration
        return limit is not None and duration is not None and duration >= limit

    def describe(self) -> dict[str, Any]:
        """The policy as plain data, for status pages and conflict messages."""
        return {
            "fail_max": self.fail_max,
            "reset_timeout": self.reset_timeout,
            "success_threshold": self.success_threshold,
            "trial_calls": self.trial_calls,
            "trial_lease": self.trial_lease,
            "failure_rate": self.failure_rate,
            "window": self.window,
            "min_calls": self.min_calls,
            "slow_call_duration": self.slow_call_duration,
            "slow_call_max": self.slow_call_max,
        }
