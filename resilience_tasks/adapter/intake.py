"""The consumer step that turns every message into a task or a dead letter, never a crash.

Celery's ``Consumer.create_task_handler`` builds the function the event loop calls for each
task message (``on_task_received``). It handles some bad messages itself, but raises on many
others: headers with ``task`` as a list (unhashable), no ``id`` (``KeyError`` inside
``on_unknown_task`` or ``Request``), a body that is not ``[args, kwargs, embed]``,
``timelimit: "x"``... An exception there leaves the event loop: the worker exits or reconnects
for ever, and the message, still unacknowledged, comes back to do it again.

This step wraps that function, per message:

1. ``refusal`` checks what Celery is about to read (cheap dict lookups; the body is decoded
   once and kombu caches it for Celery) and names what is wrong;
2. otherwise Celery's own handler runs, and anything it raises that is not a broker
   connection error is caught;

either way the message is dead-lettered (``poison.Intake``), then acknowledged, and the
consumer goes on. If the dead-letter store cannot be written, the message is left
unacknowledged: the broker delivers it again after the visibility timeout.

On the Redis transport the step also screens raw queue items (``envelope.hook_channel``) on
each (re)start of the task consumer, because kombu raises on unparseable items before any
Celery code runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps
from celery.utils.time import maybe_iso8601

from resilience_tasks.adapter import envelope
from resilience_tasks.adapter.poison import Intake

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Any]


def _bad_time(headers: dict[str, Any], field: str) -> str | None:
    """``eta``/``expires`` travel as ISO 8601 text; Celery fails on anything else but None."""
    value = headers.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        return f"header {field!r} is {value!r}, not an ISO 8601 date"
    try:
        maybe_iso8601(value)
    except Exception as exc:
        return f"header {field!r} is {value!r}: {type(exc).__name__}: {exc}"
    return None


def _bad_timelimit(value: Any) -> str | None:
    if value is None:
        return None
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(
            item is None or (isinstance(item, int | float) and not isinstance(item, bool))
            for item in value
        )
    ):
        return None
    return f"header 'timelimit' is {value!r}, not [soft, hard] seconds"


def _bad_body(payload: Any) -> str | None:
    """Celery's protocol 2 body is ``[args, kwargs, embed]``; a dict is the hybrid form."""
    if isinstance(payload, dict):
        if "args" in payload and not isinstance(payload["args"], list | tuple):
            return f"body 'args' is a {type(payload['args']).__name__}, not a list"
        if not isinstance(payload.get("kwargs", {}), dict):
            return f"body 'kwargs' is a {type(payload['kwargs']).__name__}, not an object"
        return None
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        shape = (
            f"{len(payload)} items"
            if isinstance(payload, list | tuple)
            else "a " + type(payload).__name__
        )
        return f"body is {shape}, not [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return f"body args are a {type(args).__name__}, not a list"
    if not isinstance(kwargs, dict):
        return f"body kwargs are a {type(kwargs).__name__}, not an object"
    if embed is not None and not isinstance(embed, dict):
        return f"body embed is a {type(embed).__name__}, not an object"
    return None


def refusal(message: Any, known: Callable[[str], bool]) -> str | None:
    """Why ``message`` cannot become a task on this worker, or None if Celery may try.

    ``known(name)`` says whether the worker has a task of that name.
    """
    headers = message.headers
    if not isinstance(headers, dict):
        return f"headers are a {type(headers).__name__}, not an object"
    unreadable = headers.get(envelope.QUARANTINE)
    if unreadable is not None:
        return f"unreadable queue item: {unreadable}"
    try:
        payload = message.decode()
    except Exception as exc:
        return f"cannot decode message ({message.content_type}): {type(exc).__name__}: {exc}"
    if "task" in headers:  # protocol 2
        fields = headers
    elif isinstance(payload, dict) and "task" in payload:  # protocol 1: all in the body
        fields = payload
    else:
        return "message of unknown format: no task name in its headers or body"
    name, task_id = fields.get("task"), fields.get("id")
    if not isinstance(name, str) or not name:
        return f"task name is {name!r}, not a string"
    if not isinstance(task_id, str) or not task_id:
        return f"task id is {task_id!r}, not a non-empty string"
    if not known(name):
        return f"unknown task {name!r}"
    for check in (
        _bad_timelimit(fields.get("timelimit")),
        _bad_time(fields, "eta"),
        _bad_time(fields, "expires"),
        _bad_body(payload) if fields is headers else None,
    ):
        if check is not None:
            return check
    return None


def guard_handler(handle: Handler, consumer: Any, recorder: Intake) -> Handler:
    """``handle`` (Celery's ``on_task_received``) that dead-letters what it cannot take."""
    strategies = consumer.strategies
    connection_errors = tuple(consumer.connection_errors or ())

    def known(name: str) -> bool:
        return name in strategies

    def on_task_received(message: Any) -> Any:
        try:
            reason = refusal(message, known)
            if reason is None:
                return handle(message)
        except connection_errors:
            raise
        except Exception as exc:
            reason = f"cannot turn the message into a task: {type(exc).__name__}: {exc}"
        settle(message, reason, recorder)
        return None

    return on_task_received


def settle(message: Any, reason: str, recorder: Intake) -> None:
    """Dead-letter ``message``, then acknowledge it; leave it unacknowledged if not recorded."""
    try:
        recorder.dead_letter(message, reason)
    except Exception:
        logger.exception("could not dead-letter a message (%s); it will be delivered again", reason)
        return
    if not message.acknowledged:
        message.ack()


def add_consumer_step(app: Celery, recorder: Intake) -> None:
    """Install the intake step into ``app``'s worker consumers."""

    class DeadLetterIntake(bootsteps.StartStopStep):  # type: ignore[misc]
        """Wraps the task handler and the decode-error handler; screens Redis queue items."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, consumer: Any, **kwargs: Any) -> None:
            super().__init__(consumer, **kwargs)
            create = consumer.create_task_handler
            on_decode_error = consumer.on_decode_error

            def create_task_handler(*args: Any, **kw: Any) -> Handler:
                return guard_handler(create(*args, **kw), consumer, recorder)

            def on_decode_failure(message: Any, exc: BaseException) -> None:
                reason = f"cannot decode message ({message.content_type}): {exc}"
                try:
                    recorder.dead_letter(message, reason)
                except Exception:
                    logger.exception("could not dead-letter an undecodable message")
                    return
                on_decode_error(message, exc)

            consumer.create_task_handler = create_task_handler
            consumer.on_decode_error = on_decode_failure

        def start(self, consumer: Any) -> None:
            task_consumer = getattr(consumer, "task_consumer", None)
            channel = getattr(task_consumer, "channel", None)
            if channel is not None:
                envelope.hook_channel(channel)

    app.steps["consumer"].add(DeadLetterIntake)
