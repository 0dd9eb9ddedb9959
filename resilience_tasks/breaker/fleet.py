"""A circuit breaker shared by every worker of a fleet, built on pybreaker.

It keeps pybreaker's API (``call``, ``calling``, ``state``, ``current_state``, ``exclude``,
listeners, ``open()``/``close()``/``half_open()``) and replaces what a fleet cannot share
safely: every transition is one atomic Lua script, the half-open state hands out trial leases so
the whole fleet sends exactly ``trial_calls`` trials, an optional failure-rate window trips the
breaker on flaky dependencies, and a closed breaker costs one round trip per call (the success
of a call costs nothing unless failures were pending). There is no per-process lock:
pybreaker's ``RLock`` would serialise every call of a threaded worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pybreaker
from pybreaker import CBStateType

from resilience_tasks.breaker.storage import Admission, RedisFleetStorage
from resilience_tasks.errors import BreakerOpenError, Defer, RateLimitedError
from resilience_tasks.policies import BreakerPolicy

T = TypeVar("T")

#: Exceptions that are never the dependency's fault, whatever the policy says.
NEVER_FAILURES: tuple[type[BaseException], ...] = (Defer, BreakerOpenError, RateLimitedError)


class FleetBreaker(pybreaker.CircuitBreaker):
    """The breaker of one resource; every process that builds one on the same Redis shares it."""

    def __init__(
        self,
        resource: str,
        policy: BreakerPolicy,
        storage: RedisFleetStorage,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
        not_failures: Iterable[type[BaseException]] = (),
    ) -> None:
        super().__init__(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout,
            success_threshold=policy.success_threshold,
            exclude=[*NEVER_FAILURES, *not_failures, *policy.exclude],
            listeners=list(listeners),
            state_storage=storage,
            name=resource,
        )
        self.resource = resource
        self.policy = policy
        self._storage = storage
        self._ready = True

    # -- ask, then tell ------------------------------------------------------------------------

    def admit(
        self,
        delivery_key: str | None = None,
        delivery_ttl: int = 0,
        watch: tuple[str, ...] = (),
    ) -> Admission:
        """Ask whether a call may go to the dependency now (one round trip).

        ``delivery_key`` lets the caller count a message's deliveries, and ``watch`` names keys
        whose values the other admission checks need, in the same round trip.
        """
        admission = self._storage.admit(
            self.policy, uuid.uuid4().hex, delivery_key, delivery_ttl, watch
        )
        if admission.transition:
            self._notify(*admission.transition)
        return admission

    def release(self, admission: Admission) -> None:
        """Hand back an admission whose call did not go out (another check refused it)."""
        if admission.trial:
            self._storage.release_trial(admission.token)

    def record(self, admission: Admission, error: BaseException | None) -> None:
        """Tell the breaker how an admitted call ended; ``error`` is None on success."""
        if error is not None and self.is_system_error(error):
            for failure_listener in self.listeners:
                failure_listener.failure(self, error)
            self._notify(*self._storage.record_failure(self.policy, self._trial_token(admission)))
            return
        if admission.trial or admission.failures:
            self._notify(*self._storage.record_success(self.policy, self._trial_token(admission)))
        for listener in self.listeners:
            listener.success(self)

    @staticmethod
    def _trial_token(admission: Admission) -> str:
        return admission.token if admission.trial else ""

    # -- pybreaker's API -----------------------------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` if the breaker admits it; raise ``BreakerOpenError`` if it does not."""
        admission = self.admit()
        if not admission.allowed:
            raise BreakerOpenError(self.resource, admission.retry_after, admission.state)
        return self.call_admitted(admission, func, *args, **kwargs)

    def call_admitted(
        self, admission: Admission, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Call ``func`` under an admission already granted, and record how it ended."""
        for listener in self.listeners:
            listener.before_call(self, func, *args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self.record(admission, exc)
            raise
        self.record(admission, None)
        return result

    @property
    def current_state(self) -> str:
        """The state name as Redis has it now (``closed`` while the breaker is being built,
        so declaring a task never touches Redis)."""
        if not getattr(self, "_ready", False):
            return str(pybreaker.STATE_CLOSED)
        return str(self._storage.state)

    @property
    def state(self) -> CBStateType:
        """The state as Redis has it now; reading it never writes (unlike pybreaker's)."""
        current = self.current_state
        if current != self._state.name:
            self._state = self._create_new_state(current, prev_state=self._state, notify=False)
        return self._state

    @state.setter
    def state(self, state_name: str) -> None:
        """Move the whole fleet's breaker to ``state_name``."""
        self._notify(*self._storage.force(state_name))

    def open(self) -> bool:
        """Open the breaker by hand, fleet-wide, for ``reset_timeout`` seconds."""
        self._notify(*self._storage.force(pybreaker.STATE_OPEN))
        return True

    def half_open(self) -> None:
        """Put the breaker in half-open by hand: the next ``trial_calls`` calls are trials."""
        self._notify(*self._storage.force(pybreaker.STATE_HALF_OPEN))

    def close(self) -> None:
        """Close the breaker by hand and forget its failures."""
        self._notify(*self._storage.force(pybreaker.STATE_CLOSED))

    reset = close

    def _notify(self, old: str, new: str) -> None:
        if old == new and new == self._state.name:
            return
        previous = self._state
        self._state = self._create_new_state(new, prev_state=previous, notify=False)
        if old != new:
            for listener in self.listeners:
                listener.state_change(self, previous, self._state)
