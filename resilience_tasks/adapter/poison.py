"""Messages a worker cannot run end in the dead-letter store with a reason, never dropped.

Celery acknowledges and discards three kinds of bad message with only a log line: a message
that cannot be decoded (bad JSON, or a pickle message when only JSON is accepted), a message
for a task the worker does not know, and a message of unknown format. The first never reaches
a signal, so a consumer bootstep wraps the consumer's decode-error handler; the others arrive
through the ``task_unknown`` and ``task_rejected`` signals (used only to record, as signals
cannot change a message's fate).
"""

from __future__ import annotations

import weakref
from typing import Any

from celery import Celery, bootsteps, signals

from resilience_tasks.deferred import DeadLetterStore


def message_record(message: Any, body: Any = None) -> dict[str, Any]:
    """What we keep of a raw kombu message: its headers and its body as text."""
    raw = body if body is not None else getattr(message, "body", b"")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return {
        "headers": dict(getattr(message, "headers", None) or {}),
        "content_type": getattr(message, "content_type", None),
        "delivery_info": dict(getattr(message, "delivery_info", None) or {}),
        "body": raw if isinstance(raw, str) else repr(raw),
    }


def message_id(message: Any) -> str:
    headers = getattr(message, "headers", None) or {}
    properties = getattr(message, "properties", None) or {}
    return str(headers.get("id") or properties.get("correlation_id") or id(message))


_INSTALLED: weakref.WeakSet[Celery] = weakref.WeakSet()


def install(app: Celery, dead_letters: DeadLetterStore) -> None:
    """Record every message ``app``'s workers throw away in ``dead_letters``.

    Once per app: with several managers on one app, the first one's store receives them.
    """
    if app in _INSTALLED:
        return
    _INSTALLED.add(app)

    class DeadLetterUndecodable(bootsteps.StartStopStep):  # type: ignore[misc]
        """Wraps ``Consumer.on_decode_error``: store the message, then let Celery ack it."""

        def __init__(self, consumer: Any, **kwargs: Any) -> None:
            super().__init__(consumer, **kwargs)
            original = consumer.on_decode_error

            def on_decode_error(message: Any, exc: BaseException) -> None:
                reason = f"cannot decode message ({message.content_type}): {exc}"
                dead_letters.add(message_id(message), reason, message_record(message))
                original(message, exc)

            consumer.on_decode_error = on_decode_error

    app.steps["consumer"].add(DeadLetterUndecodable)

    def on_unknown(
        sender: Any, message: Any, exc: BaseException, name: str, id: str, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is app:
            dead_letters.add(id, f"unknown task {name!r}: {exc}", message_record(message))

    def on_rejected(sender: Any, message: Any, exc: BaseException | None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            reason = f"rejected message: {exc}" if exc else "message of unknown format"
            dead_letters.add(message_id(message), reason, message_record(message))

    signals.task_unknown.connect(on_unknown, weak=False)
    signals.task_rejected.connect(on_rejected, weak=False)
