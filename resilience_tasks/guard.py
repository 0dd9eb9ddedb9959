"""Ask, run, tell: the resilience protocol around one task execution, free of Celery.

For each attempt the guard asks the fleet breaker for admission (one Redis round trip, which
also counts the message's deliveries on the first attempt), runs the body, and tells the breaker
how it went. Failed attempts are retried by tenacity while the waits fit the policy's
in-process budget; a longer wait, or a breaker that refuses, ends in ``Defer``: the Celery
adapter then moves the message to the deferred store and frees the worker slot. Waiting on the
breaker never uses up an attempt, and neither does a failed half-open trial: the trial is the
breaker's probe, so its work goes back to wait for the next one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from resilience_tasks.breaker import FleetBreaker
from resilience_tasks.errors import BreakerOpenError, DeadLetteredError, Defer
from resilience_tasks.policies import RetryPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class CallContext:
    """What the guard needs to know about one delivery of a task message.

    ``attempts_used`` and ``first_attempt_at`` carry the retry budget across deliveries (they
    travel in the message when it is deferred); ``delivery_key`` is the Redis key counting this
    message's redeliveries, given only when the broker marks the message redelivered (a worker
    died or lost it), so a healthy first delivery writes no counter at all.
    """

    task_id: str | None = None
    attempts_used: int = 0
    first_attempt_at: float | None = None
    delivery_key: str | None = None


@dataclass(frozen=True)
class GuardSettings:
    max_deliveries: int = 5
    delivery_ttl: int = 3600
    defer_jitter: float = 0.1


class _RetryBudget:
    """tenacity stop strategy: the policy's attempts and delay, plus the in-process budget."""

    def __init__(self, policy: RetryPolicy, context: CallContext) -> None:
        self.policy = policy
        self.context = context
        self.next_wait: float | None = None

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        used = self.context.attempts_used + state.attempt_number
        if used >= self.policy.max_attempts:
            return True
        wait = state.upcoming_sleep
        first = self.context.first_attempt_at
        if (
            self.policy.max_delay is not None
            and first is not None
            and (time.time() - first + wait > self.policy.max_delay)
        ):
            return True
        if (state.seconds_since_start or 0.0) + wait > self.policy.in_process_budget:
            self.next_wait = wait
            return True
        return False


class TaskGuard:
    """The protocol for one declared task: its breaker, its retry policy, its limits."""

    def __init__(
        self,
        breaker: FleetBreaker | None,
        retry: RetryPolicy,
        settings: GuardSettings,
        count_delivery: Callable[[str, int], int],
        not_retryable: tuple[type[BaseException], ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.breaker = breaker
        self.retry = retry
        self.settings = settings
        self._count_delivery = count_delivery
        self._not_retryable = (Defer, BreakerOpenError, DeadLetteredError, *not_retryable)
        self._sleep = sleep

    def run(self, context: CallContext, body: Callable[[], T]) -> T:
        """Run ``body`` under the protocol; raise ``Defer`` when the work must wait."""
        budget = _RetryBudget(self.retry, context)
        retrying = tenacity.Retrying(
            stop=budget,
            wait=self.retry.tenacity_wait(),
            retry=tenacity.retry_if_exception(self._retryable),
            sleep=self._sleep,
            reraise=True,
        )
        delivery_key = context.delivery_key
        if delivery_key is not None and self.breaker is None:
            self._check_deliveries(self._count_delivery(delivery_key, self.settings.delivery_ttl))
            delivery_key = None
        attempt_number = 0
        try:
            for attempt in retrying:
                attempt_number = attempt.retry_state.attempt_number
                with attempt:
                    result = self._attempt(body, delivery_key)
                    delivery_key = None
            return result
        except Defer as wait:  # the body asked to wait (e.g. an idempotency lease is held)
            used = context.attempts_used + attempt_number - 1
            raise Defer(wait.delay, wait.reason, used) from wait.__cause__
        except BreakerOpenError as refused:
            used = context.attempts_used + attempt_number - 1
            raise Defer(
                self._jittered(refused.retry_after), f"breaker {refused.state}", used
            ) from None
        except Exception as error:
            if budget.next_wait is None or not self._retryable(error):
                raise
            used = context.attempts_used + attempt_number
            reason = (
                f"retry {used + 1}/{self.retry.max_attempts} after {type(error).__name__}: {error}"
            )
            raise Defer(budget.next_wait, reason, used) from error

    def _attempt(self, body: Callable[[], T], delivery_key: str | None) -> T:
        if self.breaker is None:
            return body()
        admission = self.breaker.admit(delivery_key, self.settings.delivery_ttl)
        if delivery_key is not None:
            self._check_deliveries(admission.deliveries)
        if not admission.allowed:
            raise BreakerOpenError(self.breaker.resource, admission.retry_after, admission.state)
        try:
            return self.breaker.call_admitted(admission, body)
        except BaseException as error:
            if admission.trial and self.breaker.is_system_error(error):
                # The trial was the breaker's probe, not the work's choice: the work waits for
                # the next trial instead of failing, and the attempt is not charged.
                raise BreakerOpenError(
                    self.breaker.resource,
                    self.breaker.policy.reset_timeout,
                    "open after a failed trial",
                ) from error
            raise

    def _check_deliveries(self, redeliveries: int) -> None:
        deliveries = redeliveries + 1  # the first delivery is never counted
        if deliveries > self.settings.max_deliveries:
            raise DeadLetteredError(
                f"delivered {deliveries} times without finishing (max_deliveries="
                f"{self.settings.max_deliveries}): it keeps killing or losing its worker"
            )

    def _retryable(self, error: BaseException) -> bool:
        return isinstance(error, self.retry.retry_on) and not isinstance(error, self._not_retryable)

    def _jittered(self, delay: float) -> float:
        return delay + random.uniform(0, min(1.0, delay * self.settings.defer_jitter))
