"""The core of the fleet breaker: what counts, asking and telling, and reporting transitions.

``FleetBreaker`` (``breaker/fleet.py``) adds pybreaker's ways to call, its settings and its
manual state changes on top. The split keeps the one place that talks to the scripts and to
the listeners apart from the many ways a call can be made.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pybreaker
import redis

from resilience_tasks.breaker import outcomes
from resilience_tasks.breaker.async_storage import AsyncFleetStorage
from resilience_tasks.breaker.outcomes import NEVER_FAILURES, Kind
from resilience_tasks.breaker.records import IGNORED, Admission, Verdict
from resilience_tasks.breaker.storage import RedisFleetStorage
from resilience_tasks.errors import BreakerOpenError
from resilience_tasks.policies import BreakerPolicy

logger = logging.getLogger(__name__)


class BreakerCore(pybreaker.CircuitBreaker):
    """A fleet breaker's state machine on Redis: what counts, asking, telling, transitions.

    ``exclude`` adds to ``policy.exclude``: both are the user's exclusions and make up
    ``excluded_exceptions``. ``not_failures`` (the Celery adapter passes its control exceptions)
    and ``NEVER_FAILURES`` are kept apart, in ``never_failures``: they are ignored, not
    counted as successes.
    """

    def __init__(
        self,
        resource: str,
        policy: BreakerPolicy,
        storage: RedisFleetStorage,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
        not_failures: Iterable[type[BaseException]] = (),
        *,
        exclude: Iterable[outcomes.Exclusion] = (),
        throw_new_error_on_trip: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout,
            success_threshold=policy.success_threshold,
            exclude=[*policy.exclude, *exclude],
            listeners=list(listeners),
            state_storage=storage,
            name=name or resource,
            throw_new_error_on_trip=throw_new_error_on_trip,
        )
        self.resource = resource
        self.policy = policy
        self._storage = storage
        self._never_failures = (*NEVER_FAILURES, *not_failures)
        self._ready = True

    @property
    def storage(self) -> RedisFleetStorage:
        """The breaker's shared state in Redis."""
        return self._storage

    # -- what counts -------------------------------------------------------------------------

    @property
    def never_failures(self) -> tuple[type[BaseException], ...]:
        """Built-in exceptions that are nobody's verdict on the dependency (never counted)."""
        return self._never_failures

    def is_system_error(self, exception: BaseException) -> bool:
        """Whether ``exception`` counts as the dependency failing (pybreaker's question)."""
        return self._kind(exception) == "failure"

    def _kind(self, error: BaseException) -> Kind:
        if isinstance(error, self._never_failures):
            return "ignored"
        if outcomes.excluded(error, self._excluded_exceptions):
            return "success"
        return "failure"

    # -- ask, then tell ----------------------------------------------------------------------

    def admit(self) -> Admission:
        """Ask whether a call may go to the dependency now (one round trip)."""
        return self.accept(self._storage.admit(self.policy, uuid.uuid4().hex))

    def admission_request(self) -> tuple[list[str], list[Any], str]:
        """KEYS, ARGV and token of this breaker's admission, for a script that composes it with
        more work in the same round trip (``scripts.ADMIT_FUNCTION``); hand its answer to
        ``accept``."""
        token = uuid.uuid4().hex
        keys, args = self._storage.admit_request(self.policy, token)
        return list(keys), list(args), token

    def accept(self, admission: Admission) -> Admission:
        """Take note of an admission made by a script: tell listeners of its transition."""
        if admission.transition:
            self._notify(*admission.transition)
        return admission

    def release(self, admission: Admission) -> None:
        """Hand back an admission whose call did not go out (another check refused it)."""
        admission.verdict = IGNORED
        if admission.trial:
            self._storage.release_trial(admission.token)

    def record(
        self, admission: Admission, error: BaseException | None, *, duration: float | None = None
    ) -> Verdict:
        """Tell the breaker how an admitted call ended; ``error`` is None on success.

        ``duration`` is how long the call took, in seconds (``time.monotonic()`` around it):
        with the policy's ``slow_call_duration`` set, a call at least that long is slow, and
        ``slow_call_max`` slow calls in a row open the breaker. Without it the call is not
        timed, and never slow.

        The verdict is also left in ``admission.verdict``: ``trial_failed`` tells a failed
        half-open trial (which reopened the breaker) from an ordinary failure.
        """
        kind: Kind = "success" if error is None else self._kind(error)
        return self._record(admission, error, kind, duration=duration)

    def _record(
        self,
        admission: Admission,
        error: BaseException | None,
        kind: Kind,
        settle: bool = False,
        quiet: bool = False,
        duration: float | None = None,
    ) -> Verdict:
        """``settle`` makes a success reset the count even if none was pending at admission
        (a generator's admission can be long outdated when it ends). ``quiet`` (the call
        paths) logs a state store that cannot be reached instead of raising: the call has
        happened, and its own outcome stands, as with pybreaker's Redis storage."""
        try:
            verdict = self._verdict(admission, kind, settle, self.policy.is_slow(duration))
        except redis.RedisError as exc:
            if not quiet:
                raise
            logger.warning("breaker %r: outcome not recorded: %s", self.resource, exc)
            return IGNORED
        return verdict if verdict is IGNORED else self._told(admission, verdict, error)

    def _verdict(self, admission: Admission, kind: Kind, settle: bool, slow: bool) -> Verdict:
        if kind == "ignored":
            self.release(admission)
            return IGNORED
        token = admission.token if admission.trial else ""
        if kind == "failure":
            return self._storage.record_failure(self.policy, token, slow)
        if slow or settle or self._pending(admission):
            return self._storage.record_success(self.policy, token, slow)
        return Verdict("success")

    def _pending(self, admission: Admission) -> bool:
        """Whether a fast success has anything to write: a trial to settle, or a run of
        failures or slow calls to end. Most successes have none and cost no round trip."""
        if admission.trial or admission.failures:
            return True
        if admission.slow is None:  # the admitting script did not say
            return self.policy.slow_call_duration is not None
        return admission.slow > 0

    async def _record_async(
        self,
        store: AsyncFleetStorage,
        admission: Admission,
        error: BaseException | None,
        kind: Kind,
        duration: float | None = None,
    ) -> Verdict:
        """``_record`` on ``redis.asyncio``, always quiet (only the call paths use it)."""
        token = admission.token if admission.trial else ""
        slow = self.policy.is_slow(duration)
        try:
            if kind == "ignored":
                admission.verdict = IGNORED
                if admission.trial:
                    await store.release_trial(admission.token)
                return IGNORED
            if kind == "failure":
                verdict = await store.record_failure(self.policy, token, slow)
            elif slow or self._pending(admission):
                verdict = await store.record_success(self.policy, token, slow)
            else:
                verdict = Verdict("success")
        except redis.RedisError as exc:
            logger.warning("breaker %r: outcome not recorded: %s", self.resource, exc)
            return IGNORED
        return self._told(admission, verdict, error)

    def _told(self, admission: Admission, verdict: Verdict, error: BaseException | None) -> Verdict:
        """Keep the verdict and tell the listeners, in pybreaker's order."""
        admission.verdict = verdict
        with self._lock:
            if verdict.counted == "failure" and error is not None:
                for listener in self._listeners:
                    listener.failure(self, error)
                if verdict.transition:
                    self._notify(*verdict.transition)
            else:
                if verdict.transition:
                    self._notify(*verdict.transition)
                for listener in self._listeners:
                    listener.success(self)
        return verdict

    def _before_call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            for listener in self._listeners:
                listener.before_call(self, func, *args, **kwargs)

    def _admitted(self) -> Admission:
        admission = self.admit()
        if not admission.allowed:
            raise BreakerOpenError(self.resource, admission.retry_after, admission.state)
        return admission

    def _trip_error(self, verdict: Verdict) -> BreakerOpenError | None:
        """pybreaker's ``CircuitBreakerError`` for the call that opened the breaker, if wanted."""
        if verdict.opened and self._throw_new_error_on_trip:
            return BreakerOpenError(self.resource, verdict.retry_after, "open")
        return None

    def _notify(self, old: str, new: str) -> None:
        with self._lock:
            if old == new and new == self._state.name:
                return
            previous = self._state
            self._state = self._create_new_state(new, prev_state=previous, notify=False)
            if old != new:
                for listener in self._listeners:
                    listener.state_change(self, previous, self._state)

    @property
    def current_state(self) -> str:
        """The state name as Redis has it now (``closed`` while the breaker is being built,
        so declaring a task never touches Redis)."""
        if not getattr(self, "_ready", False):
            return str(pybreaker.STATE_CLOSED)
        return str(self._storage.state)
