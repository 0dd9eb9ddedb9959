"""Ask, run, tell: the resilience protocol around one task execution, free of Celery.

For each attempt the guard asks for admission (``admission``: one Redis round trip for the
breaker, a redelivered message's delivery count and what the gates watch), then the gates
(budget, provider cool-down, rate limit: at most one more round trip), calls the task's
function, and tells the breaker and the quota records how it went.

Retries are tenacity's: the policy's attempts and ``max_delay`` are tenacity stop strategies,
and so is the in-process budget; when only the latter stops the loop, the wait is too long to
spend holding a worker slot and the work leaves through ``Defer`` with its attempts counted.

What is never charged as an attempt:
- waiting (a refusal, a rate limit, a provider's 429);
- the first ``free_trials`` half-open trials the work fails: the trial is the breaker's probe,
  so its work waits for the next one. After that its trials are charged like any failure, so
  work that always fails ends by its retry policy instead of holding the breaker open forever;
- a state-store outage: admission and gates are retried briefly, then ``StateUnavailableError``
  sends the message back to the broker. After the call ran, a failed write of its outcome is
  logged and the call's own result stands.

Errors that are the caller's bug (see ``caller_errors``) neither count for the breaker nor retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from resilience_tasks.admission import Admitter
from resilience_tasks.breaker import Admission
from resilience_tasks.caller_errors import raised_at_call_boundary
from resilience_tasks.errors import (
    STATE_ERRORS,
    BreakerOpenError,
    DeadLetteredError,
    Defer,
    StateUnavailableError,
)
from resilience_tasks.fallback import scope
from resilience_tasks.gate import Call, Gate
from resilience_tasks.policies import RetryPolicy
from resilience_tasks.quota.report import QuotaReporter, collecting

if TYPE_CHECKING:
    from resilience_tasks.fallback.concurrency import FleetConcurrencyLimit, Lease
    from resilience_tasks.fallback.retry_budget import FleetRetryBudget

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallContext:
    """What the guard needs to know about one delivery of a task message.

    ``attempts_used``, ``first_attempt_at`` and ``failed_trials`` carry the retry budget across
    deliveries (they travel in the message when it is deferred); ``redelivered`` says the broker
    delivers this message again (a worker died or lost it): only then is the delivery counted,
    so a healthy first delivery writes no counter.
    """

    task_id: str | None = None
    attempts_used: int = 0
    first_attempt_at: float | None = None
    failed_trials: int = 0
    redelivered: bool = False
    call: Call = field(default_factory=Call)


@dataclass(frozen=True)
class GuardSettings:
    """``free_trials``: failed half-open trials a piece of work may run before they are charged
    as attempts. ``state_wait``: seconds to keep retrying the state store before giving the
    message back to the broker."""

    defer_jitter: float = 0.1
    free_trials: int = 1
    state_wait: float = 5.0


@dataclass
class _Run:
    """What one run of the guard learns as its attempts go: per run, never shared."""

    context: CallContext
    failed_trials: int
    redelivered: str | None  # the task id, until its delivery has been counted once
    caller_error: BaseException | None = None
    deposited: bool = False


class TaskGuard:
    """The protocol for one declared task: its breaker, gates, retry policy and reporter."""

    def __init__(
        self,
        admitter: Admitter,
        retry: RetryPolicy,
        settings: GuardSettings,
        gates: Sequence[Gate] = (),
        reporter: QuotaReporter | None = None,
        not_retryable: tuple[type[BaseException], ...] = (),
        sleep: Callable[[float], None] = time.sleep,
        concurrency: FleetConcurrencyLimit | None = None,
        retry_budget: FleetRetryBudget | None = None,
    ) -> None:
        self.admitter = admitter
        self.breaker = admitter.breaker
        self.retry = retry
        self.settings = settings
        self.gates = tuple(gates)
        self.reporter = reporter
        self._not_retryable = (
            Defer,
            BreakerOpenError,
            DeadLetteredError,
            StateUnavailableError,
            *not_retryable,
        )
        self._sleep = sleep
        self.concurrency = concurrency
        # Only work that may retry pays the budget's bookkeeping (a deposit per call).
        self.retry_budget = retry_budget if retry.max_attempts > 1 else None

    # -- the retry loop ------------------------------------------------------------------------

    def run(self, context: CallContext, func: Callable[..., T]) -> T:
        """Call ``func`` with the context's arguments under the protocol.

        Raises ``Defer`` when the work must wait, ``StateUnavailableError`` when the state
        store cannot be reached, ``DeadLetteredError`` when the message keeps failing its
        workers, or the call's own error when the retry policy gives up.
        """
        redelivered = context.task_id if context.redelivered else None
        run = _Run(context, context.failed_trials, redelivered)
        started = time.monotonic()
        try:  # most calls succeed at once: the first attempt needs no retry machinery
            return self._attempt(run, func)
        except BaseException as error:
            first: BaseException | None = error

        def attempt(run: _Run, func: Callable[..., T]) -> T:
            nonlocal first
            if first is not None:  # tenacity's attempt 1 is the one that just failed
                error, first = first, None
                raise error
            return self._attempt(run, func)

        def from_the_first_attempt(state: tenacity.RetryCallState) -> None:
            state.start_time = started  # the in-process budget counts from attempt 1

        out_of_attempts = self._out_of_attempts(context)
        retrying = tenacity.Retrying(
            before=from_the_first_attempt,
            stop=out_of_attempts | tenacity.stop_before_delay(self.retry.in_process_budget),
            wait=self.retry.tenacity_wait(),
            retry=lambda state: self._should_retry(state, run, out_of_attempts),
            retry_error_callback=lambda state: self._leave_worker(state, run, out_of_attempts),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            result: T = retrying(attempt, run, func)
            return result
        except _WaitOutside as wait:  # the next retry is too far away to wait for here
            raise Defer(
                wait.delay, wait.reason, wait.attempts, failed_trials=run.failed_trials
            ) from wait.__cause__
        except Defer as wait:  # a gate, the provider or the body asked to wait
            used = context.attempts_used + _attempt_number(retrying) - 1
            raise type(wait)(
                wait.delay,
                wait.reason,
                used,
                park_on=wait.park_on,
                failed_trials=run.failed_trials,
            ) from wait.__cause__
        except BreakerOpenError as refused:
            used = context.attempts_used + _attempt_number(retrying) - 1
            raise Defer(
                self._jittered(refused.retry_after),
                f"breaker {refused.state}",
                used,
                park_on=refused.resource,
                failed_trials=run.failed_trials,
            ) from refused

    def _out_of_attempts(self, context: CallContext) -> tenacity.stop.stop_base:
        """The policy's own limits, as tenacity stops, for what is left of them."""
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(
            max(1, self.retry.max_attempts - context.attempts_used)
        )
        if self.retry.max_delay is not None:
            first = context.first_attempt_at or time.time()
            left = self.retry.max_delay - (time.time() - first)
            stop = stop | tenacity.stop_before_delay(max(0.0, left))
        return stop

    def _leave_worker(
        self, state: tenacity.RetryCallState, run: _Run, out_of_attempts: tenacity.stop.stop_base
    ) -> Any:
        """tenacity gave up: with no attempts left, the last error stands; otherwise only the
        in-process budget ran out, and the work waits in the deferred store instead."""
        assert state.outcome is not None  # tenacity calls this after a failed attempt
        if out_of_attempts(state):
            return state.outcome.result()  # raises the last error
        error = state.outcome.exception()
        used = run.context.attempts_used + state.attempt_number
        reason = f"retry {used + 1}/{self.retry.max_attempts} after {type(error).__name__}: {error}"
        raise _WaitOutside(state.upcoming_sleep, reason, used) from error

    def retryable(self, error: BaseException) -> bool:
        """Whether the retry policy retries ``error`` (control signals never are)."""
        return isinstance(error, self.retry.retry_on) and not isinstance(error, self._not_retryable)

    def _should_retry(
        self, state: tenacity.RetryCallState, run: _Run, out_of_attempts: tenacity.stop.stop_base
    ) -> bool:
        """Whether to try again: a retryable error, attempts left, and the fleet's retry budget
        asked last (only for a retry that would really be made)."""
        assert state.outcome is not None  # tenacity asks after an attempt
        error = state.outcome.exception()
        if error is None or error is run.caller_error or not self.retryable(error):
            return False
        if out_of_attempts(state):  # the run ends here: the last error stands
            return False
        return self._budget_allows(error)

    def _budget_allows(self, error: BaseException) -> bool:
        """The fleet retry budget's say on one more attempt: a refused retry is not made, and
        the last error stands (a chain then falls through to its next protocol)."""
        budget = self.retry_budget
        if budget is None:
            return True
        try:
            allowed = budget.withdraw()
        except STATE_ERRORS as exc:  # no budget to consult: the policy alone decides
            logger.warning("%s: retry budget unavailable (%s)", self, exc)
            return True
        if not allowed:
            scope.note(f"{self.breaker.resource}: retry refused by the fleet retry budget")
            logger.info(
                "%s: retry after %s refused by the fleet retry budget",
                self,
                type(error).__name__,
            )
        return allowed

    # -- one attempt: ask, run, tell -----------------------------------------------------------

    def _attempt(self, run: _Run, func: Callable[..., T]) -> T:
        call = run.context.call
        admission, lease = self._ask(run, call)
        started = time.monotonic()
        with collecting() as report:
            try:
                result = func(*call.args, **call.kwargs)
                duration = time.monotonic() - started
            except BaseException as error:
                duration = time.monotonic() - started
                outcome = self._failed(run, admission, func, error, duration)
                self._release(lease, error, outcome)
                if outcome is error:
                    raise
                raise outcome from error
            finally:
                if report and self.reporter is not None:
                    self._quietly("record usage", self.reporter.record, report)
        self._quietly("record a success", self._record, admission, None, duration)
        self._release(lease, None, None)
        return result

    def _record(self, admission: Admission, error: BaseException | None, duration: float) -> None:
        self.breaker.record(admission, error, duration=duration)

    def _release(
        self, lease: Lease | None, error: BaseException | None, outcome: BaseException | None
    ) -> None:
        """Give the concurrency slot back, telling the limit how the call went: a success
        raises it, a dependency failure or a 429 lowers it, anything else leaves it."""
        if lease is None or self.concurrency is None:
            return
        if error is None:
            verdict = "success"
        elif error is not outcome and outcome is not None and isinstance(outcome, Defer):
            verdict = "drop"  # a 429 (or a free failed trial): the dependency pushed back
        elif self.breaker.is_system_error(error):
            verdict = "drop"
        else:
            verdict = "ignore"
        self._quietly("release a concurrency slot", self.concurrency.release, lease, verdict)

    def _ask(self, run: _Run, call: Call) -> tuple[Admission, Lease | None]:
        """Admission and gates; the state store gets ``state_wait`` seconds to answer."""
        try:  # one round trip when the store answers: no retry machinery
            return self._admit_and_check(run, call)
        except STATE_ERRORS:
            pass
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(STATE_ERRORS),
            stop=tenacity.stop_after_delay(self.settings.state_wait),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2.0) + tenacity.wait_random(0, 0.1),
            sleep=self._sleep,
            retry_error_callback=_state_unavailable,
        ):
            with attempt:
                return self._admit_and_check(run, call)
        raise AssertionError("unreachable: tenacity either returned or raised")

    def _admit_and_check(self, run: _Run, call: Call) -> tuple[Admission, Lease | None]:
        watch = tuple(key for gate in self.gates for key in gate.watch(call))
        # The run's first call counts in the retry budget, in the same round trip; retries
        # withdraw from it.
        deposit = self.retry_budget if not run.deposited else None
        clearance = self.admitter.admit(run.redelivered, watch, deposit)
        run.deposited = True
        run.redelivered = None  # a redelivery is counted once, however many attempts
        admission = clearance.admission
        if not admission.allowed:
            raise BreakerOpenError(self.breaker.resource, admission.retry_after, admission.state)
        try:
            for gate in self.gates:
                gate.check(call, clearance.watched)
            lease = self._take_slot()
        except BaseException:
            self._quietly("release a trial", self.breaker.release, admission)
            raise
        return admission, lease

    def _take_slot(self) -> Lease | None:
        """A slot under the resource's fleet concurrency limit, or ``Defer``: a call over the
        limit frees its worker instead of queueing behind a slow dependency (the bulkhead)."""
        limit = self.concurrency
        if limit is None:
            return None
        lease = limit.acquire()
        patience = limit.policy.max_wait_in_worker
        while lease is None and patience > 0:  # a slot may free up in a moment
            pause = min(_SLOT_POLL, patience)
            self._sleep(pause)
            patience -= pause
            lease = limit.acquire()
        if lease is None:
            policy = limit.policy
            raise Defer(
                self._jittered(policy.retry_after),
                f"{self.breaker.resource}: at its fleet concurrency limit "
                f"({limit.current_limit():.1f} calls in flight)",
            )
        return lease

    def _failed(
        self,
        run: _Run,
        admission: Admission,
        func: Callable[..., Any],
        error: BaseException,
        duration: float,
    ) -> BaseException:
        """Tell the breaker of a failed call; return what it turns into: a wait (a 429, a free
        failed trial) or the error itself."""
        breaker = self.breaker
        if raised_at_call_boundary(error, func):
            run.caller_error = error  # the caller's bug: no failure, no retry
            self._quietly("release a trial", breaker.release, admission)
            return error
        if self.reporter is not None and self.reporter.is_rate_limit(error):
            self._quietly("release a trial", breaker.release, admission)
            return self.reporter.defer_for(error)
        self._quietly("record a failure", self._record, admission, error, duration)
        verdict = admission.verdict
        failed_trial = (
            verdict.trial_failed
            if verdict is not None
            else admission.trial and breaker.is_system_error(error)  # not recorded: an outage
        )
        if failed_trial:
            run.failed_trials += 1
            if run.failed_trials <= self.settings.free_trials:
                reopens_in = verdict.retry_after if verdict else breaker.policy.reset_timeout
                return BreakerOpenError(breaker.resource, reopens_in, "open after a failed trial")
        return error

    def _quietly(self, what: str, write: Callable[..., object], *args: Any) -> None:
        """A write after the call: if the state store is away, the call's outcome stands."""
        try:
            write(*args)
        except STATE_ERRORS as exc:
            logger.warning("%s: could not %s (state store unavailable: %s)", self, what, exc)

    def _jittered(self, delay: float) -> float:
        return delay + random.uniform(0, min(1.0, delay * self.settings.defer_jitter))

    def __repr__(self) -> str:
        return f"TaskGuard({self.breaker.resource!r})"


#: Seconds between two tries for a concurrency slot while a call waits for one in the worker.
_SLOT_POLL = 0.02


class _WaitOutside(Defer):
    """The in-process budget ran out with attempts left; ``attempts`` is already counted."""


def _attempt_number(retrying: tenacity.Retrying) -> int:
    return int(retrying.statistics.get("attempt_number", 1))


def _state_unavailable(state: tenacity.RetryCallState) -> Any:
    assert state.outcome is not None
    error = state.outcome.exception()
    raise StateUnavailableError(f"the resilience state store is unavailable: {error}") from error
