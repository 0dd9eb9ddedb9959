"""A circuit breaker shared by every worker of a fleet, with pybreaker's contract.

``FleetBreaker`` is a ``pybreaker.CircuitBreaker`` (so code, type hints and listeners written for
pybreaker keep working) whose every state-touching method is replaced: pybreaker's state
machine keeps its state in one process and moves it with separate reads and writes, which a
fleet cannot share. Here every transition is one atomic Lua script, the half-open state hands
out trial leases so the whole fleet sends exactly ``trial_calls`` trials, an optional
failure-rate window trips the breaker on flaky dependencies, an optional slow-call threshold
trips it on one that hangs (every way to call below times the call), and a closed breaker costs
one round trip per call (a fast success costs nothing more unless failures or slow calls were
pending). What is inherited is bookkeeping only: listeners, exclusions, the name.

Where a behaviour is not fleet-specific it is pybreaker's: ``call``, ``calling()``, generators,
decorators, listeners (called one at a time under the breaker's lock, as pybreaker does;
unlike pybreaker the guarded call itself is not under that lock, which would serialise every
call of a threaded worker), a failed trial counted in ``fail_counter``, the tripping call
raising ``CircuitBreakerError`` (``throw_new_error_on_trip``, default True), and the
``fail_max`` / ``reset_timeout`` / ``success_threshold`` setters, which act on the whole fleet.
``call_async`` is native asyncio (``redis.asyncio``), replacing pybreaker's Tornado path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
import types
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

import pybreaker
from pybreaker import CBStateType

from resilience_tasks.breaker.core import BreakerCore
from resilience_tasks.breaker.outcomes import NEVER_FAILURES, Kind
from resilience_tasks.breaker.records import Admission
from resilience_tasks.caller_errors import raised_at_call_boundary, raised_in_block
from resilience_tasks.errors import BreakerOpenError
from resilience_tasks.policies import _validate as check

T = TypeVar("T")

__all__ = ["NEVER_FAILURES", "FleetBreaker"]


def _calling_block() -> None:
    """Stands for the block of ``with breaker.calling():`` in ``before_call`` listeners."""


class FleetBreaker(BreakerCore):
    """The breaker of one resource; every process that builds one on the same Redis shares it.

    Constructed as ``FleetBreaker(resource, policy, storage, listeners, not_failures, *,
    exclude, throw_new_error_on_trip, name)``; see ``BreakerCore``.
    """

    # -- fleet-wide settings -----------------------------------------------------------------

    @property
    def fail_max(self) -> int:
        """Consecutive failures that open the breaker: the fleet's override, else the policy's."""
        value = self._storage.override("fail_max")
        return self.policy.fail_max if value is None else int(float(value))

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        check.positive_int("FleetBreaker", "fail_max", number)
        self._storage.set_override("fail_max", number)

    @property
    def reset_timeout(self) -> float:
        """Seconds open before a trial: the fleet's override, else the policy's."""
        value = self._storage.override("reset_timeout")
        return self.policy.reset_timeout if value is None else float(value)

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        check.positive_seconds("FleetBreaker", "reset_timeout", timeout)
        self._storage.set_override("reset_timeout", float(timeout))

    @property
    def success_threshold(self) -> int:
        """Successful trials that close the breaker: the fleet's override, else the policy's."""
        value = self._storage.override("success_threshold")
        return self.policy.success_threshold if value is None else int(float(value))

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        check.positive_int("FleetBreaker", "success_threshold", threshold)
        self._storage.set_override("success_threshold", threshold)

    def clear_overrides(self) -> None:
        """Forget the fleet's overrides: the declared policy holds again, for every process."""
        self._storage.clear_overrides()

    # -- pybreaker's ways to call ------------------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` if the breaker admits it; raise ``BreakerOpenError`` if it does not.

        A generator returned by ``func`` is tracked: its outcome is recorded when it ends. It
        is not timed (how long it runs is up to its consumer), so it is never a slow call.
        """
        admission = self._admitted()
        self._before_call(func, *args, **kwargs)
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            kind = "ignored" if raised_at_call_boundary(error, func) else self._kind(error)
            verdict = self._record(admission, error, kind, quiet=True, duration=_since(started))
            tripped = self._trip_error(verdict)
            if tripped is not None:
                raise tripped from error
            raise
        if isinstance(result, types.GeneratorType):
            return self._tracked(admission, result)  # type: ignore[return-value]
        self._record(admission, None, "success", quiet=True, duration=_since(started))
        return result

    def call_admitted(
        self, admission: Admission, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Call ``func`` under an admission already granted, and record how it ended.

        Always re-raises the original error (never ``CircuitBreakerError``): the caller decides
        what a failure means; ``admission.verdict`` says how the breaker took it.
        """
        self._before_call(func, *args, **kwargs)
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            kind = "ignored" if raised_at_call_boundary(error, func) else self._kind(error)
            self._record(admission, error, kind, quiet=True, duration=_since(started))
            raise
        self._record(admission, None, "success", quiet=True, duration=_since(started))
        return result

    def _tracked(
        self, admission: Admission, generator: Generator[Any, Any, T]
    ) -> Generator[Any, Any, T]:
        try:
            result = yield from generator
        except BaseException as error:
            tripped = self._trip_error(
                self._record(admission, error, self._kind(error), quiet=True)
            )
            if tripped is not None:
                raise tripped from error
            raise
        self._record(admission, None, "success", settle=True, quiet=True)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """``with breaker.calling(): ...`` guards the block as ``call`` guards a function."""
        admission = self._admitted()
        self._before_call(_calling_block)
        started = time.monotonic()
        try:
            yield
        except BaseException as error:
            if raised_in_block(error, _CALLING_CODE):
                kind: Kind = "ignored"
            else:
                kind = self._kind(error)
            verdict = self._record(admission, error, kind, quiet=True, duration=_since(started))
            tripped = self._trip_error(verdict)
            if tripped is not None:
                raise tripped from error
            raise
        self._record(admission, None, "success", quiet=True, duration=_since(started))

    async def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``await breaker.call_async(coro_func, ...)``: ``call`` for asyncio, on ``redis.asyncio``.

        The same scripts and keys as ``call``; no call blocks the event loop (listeners, which
        are user code, run on it). ``func`` may return any awaitable.
        """
        store = self._storage.asyncio_storage()
        admission = await store.admit(self.policy, uuid.uuid4().hex)
        if admission.transition:
            self._notify(*admission.transition)
        if not admission.allowed:
            raise BreakerOpenError(self.resource, admission.retry_after, admission.state)
        self._before_call(func, *args, **kwargs)
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as error:
            kind = "ignored" if raised_at_call_boundary(error, func) else self._kind(error)
            verdict = await self._record_async(store, admission, error, kind, _since(started))
            tripped = self._trip_error(verdict)
            if tripped is not None:
                raise tripped from error
            raise
        await self._record_async(store, admission, None, "success", _since(started))
        return result

    def __call__(self, *call_args: Any, **call_kwargs: bool) -> Callable[..., Any]:
        """Decorate a function: coroutine functions (or ``__pybreaker_call_async=True``) go
        through ``call_async``, the others through ``call``."""
        as_async = call_kwargs.pop("__pybreaker_call_async", False)

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if as_async or inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                    return await self.call_async(func, *args, **kwargs)

                return guarded_async

            @functools.wraps(func)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                return self.call(func, *args, **kwargs)

            return guarded

        return decorate(*call_args) if call_args else decorate

    def asyncio_client(self) -> Any:
        """The ``redis.asyncio`` client ``call_async`` uses on the running event loop."""
        return self._storage.asyncio_storage().client

    async def aclose(self) -> None:
        """Close the connections ``call_async`` opened on the running event loop (call it before
        the loop ends; a client given as ``async_client`` is left to its owner)."""
        await self._storage.aclose()

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> CBStateType:
        """The state as Redis has it now; reading it never writes, and never notifies: the
        process whose script made a transition is the one that reports it."""
        current = self.current_state
        if current != self._state.name:
            self._state = self._create_new_state(current, prev_state=self._state, notify=False)
        return self._state

    @state.setter
    def state(self, state_name: str) -> None:
        """Move the whole fleet's breaker to ``state_name``."""
        self._notify(*self._storage.force(state_name))

    def open(self) -> bool:
        """Open the breaker by hand, fleet-wide, for ``reset_timeout`` seconds.

        Returns ``throw_new_error_on_trip``, as pybreaker's ``open()`` does."""
        self._notify(*self._storage.force(pybreaker.STATE_OPEN))
        return bool(self._throw_new_error_on_trip)

    def half_open(self) -> None:
        """Put the breaker in half-open by hand: the next ``trial_calls`` calls are trials."""
        self._notify(*self._storage.force(pybreaker.STATE_HALF_OPEN))

    def close(self) -> None:
        """Close the breaker by hand and forget its failures."""
        self._notify(*self._storage.force(pybreaker.STATE_CLOSED))

    reset = close


def _since(started: float) -> float:
    """Seconds since ``started`` (a ``time.monotonic()`` reading): a guarded call's duration."""
    return time.monotonic() - started


_CALLING_CODE = FleetBreaker.calling.__wrapped__.__code__  # type: ignore[attr-defined]
