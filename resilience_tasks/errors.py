"""Every exception resilience-tasks raises, in one place.

Real errors end in ``Error`` and share one base; control-flow signals are small bare
exceptions that never reach a user unless something is misused::

    ResilienceError
    ├── ConfigurationError (also ValueError)   a policy or task option is invalid; names the field
    ├── StateUnavailableError (also ConnectionError)   the Redis that holds our state is unreachable
    ├── BreakerOpenError (also pybreaker.CircuitBreakerError)   the breaker refused a call
    ├── RateLimitedError   the provider refused the call for quota (HTTP 429): wait, not failure
    ├── MalformedMessageError   a stored message cannot be decoded; it is dead-lettered
    ├── OutsideTaskError (also RuntimeError)   report_usage/report_quota outside a task's body
    ├── DeadLetteredError   the work was moved to the dead-letter store; the reason says why
    ├── ProvidersExhaustedError (fallback.chain)   no provider or protocol of a chain could serve
    ├── MCPToolError (providers.mcp_tools)   an MCP tool answered an error
    └── EmptyCompletionError (providers.openai_chat)   a chat completion held no text

    Defer   (control)   "do not run this now; put it in the deferred store until ``delay`` passes"
    └── Degrade         "do not run this here: move to the degraded queue" (no provider, budget)

``DeadLetteredError`` is what a caller's ``AsyncResult.get()`` raises for dead-lettered work,
so it must stay importable by module path and constructible from a single message string.
"""

from __future__ import annotations

from collections.abc import Mapping

from pybreaker import CircuitBreakerError
from redis import exceptions as redis_errors


class ResilienceError(Exception):
    """Base class of every error raised by resilience-tasks."""


class ConfigurationError(ResilienceError, ValueError):
    """A policy, a task option or a manager setting is invalid.

    Raised at declaration time, so a mistake surfaces when the module is imported rather than
    when the first task runs. The message always names the offending field or keyword.
    """


class StateUnavailableError(ResilienceError, ConnectionError):
    """The Redis server holding breaker state and the deferred store cannot be reached.

    Never the dependency's fault and never charged as an attempt: a task that meets it goes
    back to the broker and runs when the state store is back.
    """


#: What redis-py raises when the state store cannot serve a command for now (down, restarting,
#: loading its data, failing over). Only the library's own state calls are read this way: a task
#: body whose dependency is a Redis raises the same types as ordinary failures.
STATE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
)


class BreakerOpenError(ResilienceError, CircuitBreakerError):
    """The fleet-wide breaker refused a call; ``retry_after`` says when it may admit a trial.

    Subclasses pybreaker's ``CircuitBreakerError`` so code written for pybreaker keeps working.
    """

    def __init__(self, resource: str, retry_after: float, state: str = "open") -> None:
        self.resource = resource
        self.retry_after = retry_after
        self.state = state
        super().__init__(f"circuit for {resource!r} is {state}; retry after {retry_after:.2f}s")


class RateLimitedError(ResilienceError):
    """The provider refused the call for quota (HTTP 429); ``retry_after`` is in seconds.

    Raise it from a task (or let the resource's ``rate_limit_errors`` map a client's own
    exception to it): the work waits that long in the deferred store, without counting as a
    breaker failure or using an attempt.
    """

    def __init__(
        self,
        message: str = "rate limited by the provider",
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class MalformedMessageError(ResilienceError):
    """A stored message could not be decoded; it goes to the dead-letter store."""


class OutsideTaskError(ResilienceError, RuntimeError):
    """``report_usage`` or ``report_quota`` was called outside the body of a resilient task,
    where there is no call to report on."""


class DeadLetteredError(ResilienceError):
    """The work was moved to the dead-letter store instead of running; the message says why."""


class Defer(Exception):
    """Control signal: put the current work in the deferred store for ``delay`` seconds.

    ``attempts`` is how many attempts of the work's retry budget have been used so far; waiting
    on a breaker never consumes one. ``park_on`` names a resource whose breaker refused the
    work: such work waits until that breaker can admit it (the pump releases it at the pace of
    the breaker's trials, then all at once when it closes), ``delay`` being only an estimate.
    ``failed_trials`` counts the half-open trials this work has failed so far: a few are free,
    then they are charged as attempts (so work that always fails cannot hold a breaker open).
    """

    def __init__(
        self,
        delay: float,
        reason: str,
        attempts: int = 0,
        *,
        park_on: str | None = None,
        failed_trials: int = 0,
    ) -> None:
        self.delay = max(0.0, delay)
        self.reason = reason
        self.attempts = attempts
        self.park_on = park_on
        self.failed_trials = failed_trials
        super().__init__(f"deferred for {self.delay:.2f}s: {reason}")


class Degrade(Defer):
    """Control signal: this work should take the resource's degraded path; ``reason`` says why.

    A task that raises it (or whose chain or budget does) moves, under the same task id and with
    its bookkeeping, to its queue's degraded queue (``<queue>.degraded``), served by degraded
    workers; work already there waits ``delay`` seconds in the deferred store instead.
    """
