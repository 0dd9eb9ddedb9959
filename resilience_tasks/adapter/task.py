"""The Celery task base class: the only place where the protocol meets Celery's execution.

``__call__`` runs inside Celery's trace, where ``Ignore`` is honoured: the guard runs the body;
when it says ``Defer``, the whole message goes to the deferred store and the task raises
``Ignore``, so the message is acknowledged and the worker slot is free. The task id is kept,
so the caller's ``AsyncResult`` resolves when the work finally runs. Work that cannot run
(redelivered too often, waited too long) goes to the dead-letter store and its result is
marked failed with ``DeadLetteredError``, never left pending forever.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore, Reject
from kombu.exceptions import OperationalError

from resilience_tasks.deferred import DeadLetterStore, DeferredMessage, DeferredStore
from resilience_tasks.errors import (
    STATE_ERRORS,
    DeadLetteredError,
    Defer,
    Degrade,
    StateUnavailableError,
)
from resilience_tasks.fallback import scope
from resilience_tasks.fallback.provenance import ProvenanceStore
from resilience_tasks.gate import Call
from resilience_tasks.guard import CallContext, TaskGuard

logger = logging.getLogger(__name__)

#: Name of the message header that carries our bookkeeping across deliveries.
HEADER = "resilience"
#: Result state of work waiting in the deferred store.
DEFERRED = "DEFERRED"
#: Suffix of the queue degraded work moves to (``chat`` -> ``chat.degraded``).
DEGRADED_SUFFIX = ".degraded"


def degraded_queue(queue: str) -> str:
    """The degraded queue of ``queue``."""
    return queue if queue.endswith(DEGRADED_SUFFIX) else queue + DEGRADED_SUFFIX


def normal_queue(queue: str | None) -> str | None:
    """The queue whose degraded queue is ``queue`` (``queue`` itself if it is not one)."""
    if queue is None or not queue.endswith(DEGRADED_SUFFIX):
        return queue
    return queue[: -len(DEGRADED_SUFFIX)]


@dataclass(frozen=True)
class TaskRuntime:
    """Everything a resilient task needs at run time, built once when it is declared."""

    team: str
    resource: str
    guard: TaskGuard
    deferred: DeferredStore
    dead_letters: DeadLetterStore
    max_defer_age: float
    interactive: bool = False
    queue: str = ""
    provenance: ProvenanceStore | None = None


class ResilientTask(Task):  # type: ignore[misc]
    """Base class of every task declared with ``manager.task``."""

    abstract = True
    #: Builds the task's runtime from the manager's declarations, once (set per task).
    freeze: Callable[[], TaskRuntime]
    _frozen: TaskRuntime | None = None

    @property
    def runtime(self) -> TaskRuntime:
        """What the task runs with, frozen on first use (the app's finalization, a worker's
        start-up check or a direct call, whichever comes first)."""
        frozen = self._frozen
        if frozen is None:
            frozen = self._frozen = self.freeze()
        return frozen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        runtime = self.runtime
        request = self.request
        if request.called_directly or request.id is None:
            return self._call_directly(args, kwargs)
        book = _bookkeeping(request)
        context = CallContext(
            task_id=request.id,
            attempts_used=_int(book.get("attempts")),
            first_attempt_at=_float(book.get("first_attempt_at")) or time.time(),
            failed_trials=_int(book.get("failed_trials")),
            redelivered=_redelivered(request),
            call=Call(args, kwargs, bool(book.get("interactive", runtime.interactive))),
        )
        if _int(book.get("defer_count")):  # published by the pump: its entry is done
            self._state_write(runtime.deferred.started, request.id, runtime.resource)
        degraded = book.get("degraded") is True  # a header of any other shape: not degraded
        try:
            with scope.opened(degraded=degraded, in_task=True) as opened:
                result = runtime.guard.run(context, self.run)
            if opened.served:
                self._served(opened.served)
            return result
        except Defer as wait:
            message = self._message(args, kwargs, book, context).deferred_again(
                wait.reason, wait.attempts, wait.failed_trials
            )
            if isinstance(wait, Degrade) and not degraded:
                self._state_write(self._move_degraded, message)
            else:
                if degraded:  # it comes back to its normal queue: the normal providers first
                    message = replace(message, queue=normal_queue(message.queue), degraded=False)
                self._state_write(self._defer, message, wait)
        except DeadLetteredError as dead:
            self._state_write(
                self._dead_letter, self._message(args, kwargs, book, context), str(dead)
            )
        except StateUnavailableError as unavailable:  # only the guard's own state calls
            self._give_back(unavailable)
        raise Ignore()

    def _state_write(self, write: Callable[..., object], *args: Any) -> None:
        try:
            write(*args)
        except STATE_ERRORS as unavailable:
            self._give_back(unavailable)

    def _give_back(self, unavailable: BaseException) -> NoReturn:
        """The state store is away: the message goes back to the broker, untouched, to run
        when it is back; nothing is charged and nothing is marked failed."""
        logger.warning(
            "%s[%s] goes back to the broker: %s", self.name, self.request.id, unavailable
        )
        raise Reject(unavailable, requeue=True)

    def _call_directly(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A plain function call (no message): nothing to defer, so the caller gets the reason:
        the error behind the wait (``BreakerOpenError``, the provider's 429, the last failure),
        or the ``Defer`` itself (a rate limit, a budget)."""
        try:
            context = CallContext(call=Call(args, kwargs, self.runtime.interactive))
            with scope.opened():
                return self.runtime.guard.run(context, self.run)
        except Defer as wait:
            if wait.__cause__ is not None:
                raise wait.__cause__ from None
            raise

    def _message(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        book: dict[str, Any],
        context: CallContext,
    ) -> DeferredMessage:
        request = self.request
        delivery = request.delivery_info or {}
        return DeferredMessage(
            task_id=request.id,
            task=self.name,
            args=list(args),
            kwargs=dict(kwargs),
            queue=delivery.get("routing_key") or None,
            options=_workflow_options(request),
            resource=self.runtime.resource,
            attempts=context.attempts_used,
            failed_trials=context.failed_trials,
            first_attempt_at=context.first_attempt_at or 0.0,
            defer_count=_int(book.get("defer_count")),
            first_deferred_at=_float(book.get("first_deferred_at")),
            interactive=context.call.interactive,
            degraded=book.get("degraded") is True,
        )

    def _defer(self, message: DeferredMessage, wait: Defer) -> None:
        runtime = self.runtime
        if message.age() > runtime.max_defer_age:
            self._dead_letter(
                message,
                f"waited {message.age():.1f}s in the deferred store, over max_defer_age="
                f"{runtime.max_defer_age:g}s; last reason: {message.reason}",
            )
            return
        if wait.park_on is not None:
            runtime.deferred.park(message, wait.park_on, runtime.max_defer_age - message.age())
            due = None
        else:
            due = runtime.deferred.add(message, wait.delay)
        if self._stores_results():
            self.backend.store_result(
                message.task_id,
                {"reason": message.reason, "due": due, "defer_count": message.defer_count},
                DEFERRED,
                request=self.request,
            )
        self._event("task-deferred", reason=message.reason, due=due, resource=runtime.resource)
        logger.info(
            "deferred %s[%s] for %s: %s",
            self.name,
            message.task_id,
            f"{wait.delay:.2f}s" if due is not None else f"{wait.park_on}'s breaker",
            message.reason,
        )

    def _move_degraded(self, message: DeferredMessage) -> None:
        """No normal provider can serve: the work moves, same task id and bookkeeping, to the
        degraded queue, where degraded workers serve it with degraded providers. If the broker
        will not take it now, the deferred store publishes it there as soon as it can."""
        runtime = self.runtime
        queue = degraded_queue(message.queue or runtime.queue or runtime.resource)
        moved = replace(message, queue=queue, degraded=True)
        try:
            publish(self.app, moved)
        except PUBLISH_TRANSIENT_ERRORS as unavailable:
            logger.warning("%s[%s]: broker unavailable (%s)", self.name, moved.task_id, unavailable)
            runtime.deferred.add(moved, 0.0)
        self._event("task-degraded", reason=message.reason, queue=queue, resource=runtime.resource)
        logger.info("degraded %s[%s] to %s: %s", self.name, moved.task_id, queue, message.reason)

    def _served(self, records: list[scope.Served]) -> None:
        """Tell what served this task's chain calls: a task event (Flower shows its fields)
        and a record kept beside its result (``manager.served(task_id)``)."""
        last = records[-1]
        self._event(
            "task-served",
            provider=last.provider,
            protocol=last.protocol,
            degraded=last.degraded,
            stale=last.stale,
            cost=round(sum(record.cost for record in records), 6),
            attempts=sum(record.attempts for record in records),
            chain=last.chain,
            steps=last.steps,
        )
        store = self.runtime.provenance
        if store is not None and self.request.id:
            try:
                store.save(self.request.id, records)
            except STATE_ERRORS as unavailable:  # an observation: the result stands
                logger.warning("could not keep provenance of %s: %s", self.request.id, unavailable)

    def _dead_letter(self, message: DeferredMessage, reason: str) -> None:
        self.runtime.dead_letters.add(message.task_id, reason, message.to_json())
        if self._stores_results() or self.store_errors_even_if_ignored:
            self.backend.mark_as_failure(
                message.task_id, DeadLetteredError(reason), request=self.request
            )
        self._event("task-dead-lettered", reason=reason, resource=self.runtime.resource)
        logger.error("dead-lettered %s[%s]: %s", self.name, message.task_id, reason)

    def _stores_results(self) -> bool:
        return not (self.ignore_result or getattr(self.request, "ignore_result", False))

    def _event(self, kind: str, **fields: Any) -> None:
        """A task event of ours, sent only where the worker sends task events (``-E`` or
        ``worker_send_task_events``), as Celery's own are: publishing one costs a broker
        round trip."""
        if self.request.hostname and self.send_events and events_enabled(self.app):
            try:
                self.send_event(kind, **fields)
            except Exception:  # an event is an observation; it must not change the outcome
                logger.debug("could not send %s", kind, exc_info=True)


#: Whether this worker was started with task events on (``-E``); set at its start-up.
_WORKER_EVENTS = False


def note_worker_events(enabled: bool) -> None:
    global _WORKER_EVENTS
    _WORKER_EVENTS = bool(enabled)


def events_enabled(app: Any) -> bool:
    return _WORKER_EVENTS or bool(app.conf.worker_send_task_events)


def _int(value: Any) -> int:
    """A bookkeeping count from a header; anything that is not one counts as 0."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _redelivered(request: Any) -> bool:
    """Whether the broker delivers this message again (its worker died or lost it)."""
    headers = getattr(request, "headers", None) or {}
    return bool((request.delivery_info or {}).get("redelivered") or headers.get("redelivered"))


def _bookkeeping(request: Any) -> dict[str, Any]:
    headers = getattr(request, "headers", None) or {}
    book = headers.get(HEADER) if isinstance(headers, dict) else None
    if book is None:
        book = getattr(request, HEADER, None)
    return book if isinstance(book, dict) else {}


def _workflow_options(request: Any) -> dict[str, Any]:
    """The options that tie a task to its caller's workflow, as ``send_task`` keywords."""
    delivery = request.delivery_info or {}
    options = {
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "link": request.callbacks,
        "link_error": request.errbacks,
        "chain": request.chain,
        "group_id": request.group,
        "group_index": request.group_index,
        "chord": request.chord,
        "priority": delivery.get("priority"),
    }
    return {key: value for key, value in options.items() if value is not None}


def publish_headers(message: DeferredMessage) -> dict[str, Any]:
    """The headers a deferred message is published again with."""
    return {
        HEADER: {
            "attempts": message.attempts,
            "failed_trials": message.failed_trials,
            "first_attempt_at": message.first_attempt_at,
            "defer_count": message.defer_count,
            "first_deferred_at": message.first_deferred_at,
            "interactive": message.interactive,
            "degraded": message.degraded,
        }
    }


#: What a publish raises when the broker is away for now (the pump tries again later).
PUBLISH_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    OperationalError,
    *STATE_ERRORS,
)


def mark_dead_lettered(app: Any, task_id: str, reason: str) -> None:
    """Tell the caller of ``task_id`` that its work was dead-lettered: ``get()`` raises."""
    app.backend.mark_as_failure(task_id, DeadLetteredError(reason))


def publish(app: Any, message: DeferredMessage) -> None:
    """Publish a deferred message again, under its own task id, on its own queue."""
    app.send_task(
        message.task,
        args=message.args,
        kwargs=message.kwargs,
        task_id=message.task_id,
        queue=message.queue,
        headers=publish_headers(message),
        add_to_parent=False,
        **message.options,
    )
