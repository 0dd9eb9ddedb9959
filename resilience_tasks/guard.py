"""Ask, run, tell: the resilience protocol around one task execution, free of Celery.

For each attempt the guard asks the fleet breaker for admission (one Redis round trip, which
also counts a redelivered message's deliveries and reads what the gates watch), then the gates
(budget, provider cool-down, rate limit: at most one more round trip), runs the body, and tells
the breaker and the quota records how it went. Failed attempts are retried by tenacity while
the waits fit the policy's in-process budget; a longer wait, a refusal, or a provider's 429
ends in ``Defer``: the Celery adapter then moves the message to the deferred store and frees the
worker slot. Waiting never uses up an attempt, and neither does a failed half-open trial (the
trial is the breaker's probe, so its work goes back to wait for the next one).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from resilience_tasks.breaker import Admission, FleetBreaker
from resilience_tasks.errors import BreakerOpenError, DeadLetteredError, Defer
from resilience_tasks.gate import Call, Gate
from resilience_tasks.policies import RetryPolicy
from resilience_tasks.quota.report import QuotaReporter, collecting

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
    call: Call = field(default_factory=Call)


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
    """The protocol for one declared task: its breaker, gates, retry policy and reporter."""

    def __init__(
        self,
        breaker: Callable[[], FleetBreaker],
        retry: RetryPolicy,
        settings: GuardSettings,
        gates: Sequence[Gate] = (),
        reporter: QuotaReporter | None = None,
        not_retryable: tuple[type[BaseException], ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._breaker = breaker
        self.retry = retry
        self.settings = settings
        self.gates = tuple(gates)
        self.reporter = reporter
        self._not_retryable = (Defer, BreakerOpenError, DeadLetteredError, *not_retryable)
        self._sleep = sleep

    @property
    def breaker(self) -> FleetBreaker:
        """The resource's breaker, looked up per call: a later declaration of its policy holds."""
        return self._breaker()

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
        attempt_number = 0
        try:
            for attempt in retrying:
                attempt_number = attempt.retry_state.attempt_number
                with attempt:
                    counted, delivery_key = delivery_key, None  # count a delivery once
                    result = self._attempt(context.call, body, counted)
            return result
        except Defer as wait:  # a gate, the provider or the body asked to wait (or degrade)
            used = context.attempts_used + attempt_number - 1
            raise type(wait)(wait.delay, wait.reason, used) from wait.__cause__
        except BreakerOpenError as refused:
            used = context.attempts_used + attempt_number - 1
            raise Defer(
                self._jittered(refused.retry_after), f"breaker {refused.state}", used
            ) from refused
        except Exception as error:
            if budget.next_wait is None or not self._retryable(error):
                raise
            used = context.attempts_used + attempt_number
            reason = (
                f"retry {used + 1}/{self.retry.max_attempts} after {type(error).__name__}: {error}"
            )
            raise Defer(budget.next_wait, reason, used) from error

    def _attempt(self, call: Call, body: Callable[[], T], delivery_key: str | None) -> T:
        breaker = self.breaker
        watch = tuple(key for gate in self.gates for key in gate.watch(call))
        admission = breaker.admit(delivery_key, self.settings.delivery_ttl, watch)
        if delivery_key is not None:
            self._check_deliveries(admission.deliveries)
        if not admission.allowed:
            raise BreakerOpenError(breaker.resource, admission.retry_after, admission.state)
        watched = dict(zip(watch, admission.watched, strict=True))
        try:
            for gate in self.gates:
                gate.check(call, watched)
        except BaseException:
            breaker.release(admission)
            raise
        with collecting() as report:
            try:
                return breaker.call_admitted(admission, body)
            except BaseException as error:
                outcome = self._outcome(breaker, admission, error)
                if outcome is error:
                    raise
                raise outcome from error
            finally:
                if report and self.reporter is not None:
                    self.reporter.record(report)

    def _outcome(
        self, breaker: FleetBreaker, admission: Admission, error: BaseException
    ) -> BaseException:
        """What a failed call turns into: a wait (429, failed trial) or the error itself."""
        if self.reporter is not None and self.reporter.is_rate_limit(error):
            return self.reporter.defer_for(error)
        if admission.trial and breaker.is_system_error(error):
            # The trial was the breaker's probe, not the work's choice: the work waits for the
            # next trial instead of failing, and the attempt is not charged.
            return BreakerOpenError(
                breaker.resource, breaker.policy.reset_timeout, "open after a failed trial"
            )
        return error

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
