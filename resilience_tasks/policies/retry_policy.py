"""Retry policies: when to try a failed call again and how long to wait, built on tenacity.

A policy describes the whole retry budget of a piece of work. The part of it that fits in
``in_process_budget`` seconds of waiting runs inside the worker (tenacity sleeps between
attempts); a longer wait frees the worker slot: the work goes to the deferred store and comes
back when the wait is over, with its attempt count carried along.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import tenacity
from tenacity.wait import wait_base

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.policies import _validate as check

Backoff = Literal["fixed", "linear", "exponential"]
_BACKOFFS = ("fixed", "linear", "exponential")

#: What transient failures of network services usually raise, from the standard library.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a call gets, the waits between them, and which errors are retried.

    ``initial`` is the first wait; ``maximum`` caps every wait; ``jitter`` adds up to that many
    seconds at random so a fleet does not retry in lockstep. ``max_delay`` (optional) bounds
    the time from the first attempt after which no new attempt starts. Only exceptions that are
    instances of ``retry_on`` are retried; resilience-tasks' and Celery's own control
    exceptions never are.
    """

    max_attempts: int = 3
    backoff: Backoff = "exponential"
    initial: float = 0.5
    maximum: float = 10.0
    increment: float = 0.5
    jitter: float = 0.25
    max_delay: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    in_process_budget: float = 5.0

    def __post_init__(self) -> None:
        owner = "RetryPolicy"
        check.positive_int(owner, "max_attempts", self.max_attempts)
        if self.backoff not in _BACKOFFS:
            raise ConfigurationError(
                f"RetryPolicy.backoff must be one of {', '.join(_BACKOFFS)}, got {self.backoff!r}"
            )
        check.positive_seconds(owner, "initial", self.initial, allow_zero=True)
        check.positive_seconds(owner, "maximum", self.maximum, allow_zero=True)
        if self.maximum < self.initial:
            raise ConfigurationError(
                f"RetryPolicy.maximum ({self.maximum}) must be >= initial ({self.initial})"
            )
        check.positive_seconds(owner, "increment", self.increment, allow_zero=True)
        check.positive_seconds(owner, "jitter", self.jitter, allow_zero=True)
        if self.max_delay is not None:
            check.positive_seconds(owner, "max_delay", self.max_delay)
        check.exception_types(owner, "retry_on", self.retry_on)
        check.positive_seconds(owner, "in_process_budget", self.in_process_budget, allow_zero=True)

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def exponential(
        cls, max_attempts: int = 3, initial: float = 0.5, maximum: float = 10.0, **options: Any
    ) -> RetryPolicy:
        """Waits of ``initial * 2**(n-1)`` seconds, capped at ``maximum``, plus jitter."""
        return cls(
            max_attempts=max_attempts,
            backoff="exponential",
            initial=initial,
            maximum=maximum,
            **options,
        )

    @classmethod
    def fixed(cls, max_attempts: int = 3, wait: float = 1.0, **options: Any) -> RetryPolicy:
        """The same wait between every attempt, plus jitter."""
        return cls(
            max_attempts=max_attempts,
            backoff="fixed",
            initial=wait,
            maximum=max(wait, options.pop("maximum", wait)),
            **options,
        )

    @classmethod
    def linear(
        cls,
        max_attempts: int = 3,
        initial: float = 0.5,
        increment: float = 0.5,
        maximum: float = 10.0,
        **options: Any,
    ) -> RetryPolicy:
        """Waits growing by ``increment`` seconds per attempt, capped at ``maximum``."""
        return cls(
            max_attempts=max_attempts,
            backoff="linear",
            initial=initial,
            increment=increment,
            maximum=maximum,
            **options,
        )

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(max_attempts=1)

    # -- presets for common dependencies -------------------------------------------------------

    @classmethod
    def llm_api(cls, **overrides: Any) -> RetryPolicy:
        """LLM APIs: slow, overloaded in bursts; long waits leave the worker via the store."""
        return cls._preset(
            dict(
                max_attempts=5,
                backoff="exponential",
                initial=1.0,
                maximum=60.0,
                jitter=1.0,
                max_delay=600.0,
            ),
            overrides,
        )

    @classmethod
    def http_api(cls, **overrides: Any) -> RetryPolicy:
        """Ordinary HTTP APIs: a few quick retries."""
        return cls._preset(
            dict(
                max_attempts=4,
                backoff="exponential",
                initial=0.5,
                maximum=15.0,
                jitter=0.5,
                max_delay=120.0,
            ),
            overrides,
        )

    @classmethod
    def database(cls, **overrides: Any) -> RetryPolicy:
        """Databases: dropped connections come back fast; only transient errors are retried."""
        return cls._preset(
            dict(
                max_attempts=5,
                backoff="linear",
                initial=0.2,
                increment=0.5,
                maximum=5.0,
                jitter=0.2,
                retry_on=TRANSIENT_ERRORS,
            ),
            overrides,
        )

    @classmethod
    def tool_server(cls, **overrides: Any) -> RetryPolicy:
        """Tool (MCP) servers: restarts take seconds; retry at a steady pace."""
        return cls._preset(
            dict(
                max_attempts=4,
                backoff="fixed",
                initial=2.0,
                maximum=2.0,
                jitter=0.5,
                max_delay=60.0,
            ),
            overrides,
        )

    @classmethod
    def _preset(cls, base: dict[str, Any], overrides: dict[str, Any]) -> RetryPolicy:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigurationError(f"RetryPolicy has no field(s): {', '.join(sorted(unknown))}")
        return cls(**{**base, **overrides})

    # -- tenacity ------------------------------------------------------------------------------

    def tenacity_wait(self) -> wait_base:
        """The tenacity wait strategy this policy describes."""
        jitter = tenacity.wait_random(0, self.jitter) if self.jitter else tenacity.wait_none()
        if self.backoff == "fixed":
            return tenacity.wait_fixed(self.initial) + jitter
        if self.backoff == "linear":
            return (
                tenacity.wait_incrementing(
                    start=self.initial, increment=self.increment, max=self.maximum
                )
                + jitter
            )
        return tenacity.wait_exponential(multiplier=self.initial, max=self.maximum) + jitter

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed."""
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self.tenacity_wait()(state))
