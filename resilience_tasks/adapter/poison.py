"""Messages a worker cannot run end in the dead-letter store with a reason, never dropped.

``install`` puts two things into a Celery app:

* the consumer step of ``adapter.intake``, which checks every message before Celery turns it
  into a request, dead-letters what it cannot run, and catches whatever Celery raises while
  doing so; on Redis it also screens raw queue items kombu cannot parse (``adapter.envelope``);
* receivers for ``task_unknown`` and ``task_rejected``, a fallback for messages Celery itself
  refuses past those checks (it has already rejected them when the signal is sent).

``Intake.dead_letter`` is the one way a message is recorded: under its task id when the
message carries a readable one (and the caller's ``AsyncResult.get()`` then raises
``DeadLetteredError`` with the reason), else under a generated id, so no record replaces
another.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
import weakref
from typing import Any

from celery import Celery, signals

from resilience_tasks.adapter.envelope import ORIGINAL, QUARANTINE
from resilience_tasks.adapter.task import mark_dead_lettered
from resilience_tasks.deferred import DeadLetterStore

logger = logging.getLogger(__name__)

#: Body text kept in a record; a larger body is cut (the record says so).
MAX_BODY_TEXT = 64 * 1024

#: Set on a kombu message once it is recorded, so a second path never records it again.
_RECORDED = "_resilience_dead_lettered"


def _text(raw: Any) -> str:
    if isinstance(raw, bytes | bytearray | memoryview):
        text = bytes(raw).decode("utf-8", errors="replace")
    else:
        text = raw if isinstance(raw, str) else repr(raw)
    if len(text) > MAX_BODY_TEXT:
        return text[:MAX_BODY_TEXT] + f"... [{len(text) - MAX_BODY_TEXT} more characters]"
    return text


def message_record(message: Any, body: Any = None) -> dict[str, Any]:
    """What we keep of a raw kombu message: headers, body text, content type, delivery info.

    For an item the Redis transport could not parse (a quarantine envelope), the body is the
    original item's text.
    """
    headers = getattr(message, "headers", None)
    headers = dict(headers) if isinstance(headers, dict) else {}
    original = headers.pop(ORIGINAL, None)
    headers.pop(QUARANTINE, None)
    if original is not None:
        raw, content_type, encoding = original, None, None
    else:
        raw = body if body is not None else getattr(message, "body", b"")
        content_type = getattr(message, "content_type", None)
        encoding = getattr(message, "content_encoding", None)
    info = getattr(message, "delivery_info", None)
    return {
        "source": "intake",
        "headers": headers,
        "content_type": content_type,
        "content_encoding": encoding,
        "delivery_info": dict(info) if isinstance(info, dict) else {},
        "body": _text(raw),
    }


def readable_id(message: Any) -> str | None:
    """The message's task id if it has one we can use as a key (a non-empty string)."""
    headers = getattr(message, "headers", None)
    if isinstance(headers, dict):
        value = headers.get("id")
        if isinstance(value, str) and value:
            return value
        # protocol 1: the id is in the body (already decoded by the checks)
        if "task" not in headers and ORIGINAL not in headers:
            payload = getattr(message, "_decoded_cache", None)
            value = payload.get("id") if isinstance(payload, dict) else None
            if isinstance(value, str) and value:
                return value
    return None


class Intake:
    """Records refused messages of one app in one dead-letter store."""

    def __init__(self, app: Celery, dead_letters: DeadLetterStore) -> None:
        self.app = app
        self.dead_letters = dead_letters

    def dead_letter(self, message: Any, reason: str) -> str | None:
        """Record ``message`` with ``reason`` (once) and fail its result; returns the record's id.

        Raises what the store raises (e.g. Redis unreachable): the caller then leaves the
        message unacknowledged, so the broker delivers it again.
        """
        if getattr(message, _RECORDED, None):
            return None
        task_id = readable_id(message)
        key = task_id or f"unreadable-{uuid.uuid4()}"
        self.dead_letters.add(key, reason, message_record(message))
        with contextlib.suppress(AttributeError):  # a message class without a __dict__
            setattr(message, _RECORDED, key)
        logger.error("dead-lettered message %s: %s", key, reason)
        if task_id is not None:
            self.fail_result(task_id, reason)
        return key

    def fail_result(self, task_id: str, reason: str) -> None:
        """Mark ``task_id`` failed with ``DeadLetteredError`` so the caller's ``get()`` ends."""
        try:
            mark_dead_lettered(self.app, task_id, reason)
        except Exception:  # no backend, or it is down: the record is kept all the same
            logger.warning("could not store the failure of %s", task_id, exc_info=True)


_INSTALLED: weakref.WeakSet[Celery] = weakref.WeakSet()


def install(app: Celery, dead_letters: DeadLetterStore) -> None:
    """Record every message ``app``'s workers cannot run in ``dead_letters``.

    Once per app: with several managers on one app, the first one's store receives them.
    """
    from resilience_tasks.adapter import intake

    if app in _INSTALLED:
        return
    _INSTALLED.add(app)
    recorder = Intake(app, dead_letters)
    intake.add_consumer_step(app, recorder)

    def on_unknown(sender: Any, message: Any, exc: BaseException, name: Any, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            _record_quietly(recorder, message, f"unknown task {name!r}: {exc}")

    def on_rejected(sender: Any, message: Any, exc: BaseException | None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            reason = f"rejected message: {exc}" if exc else "message of unknown format"
            _record_quietly(recorder, message, reason)

    signals.task_unknown.connect(on_unknown, weak=False)
    signals.task_rejected.connect(on_rejected, weak=False)


def _record_quietly(recorder: Intake, message: Any, reason: str) -> None:
    # Celery has already rejected the message when it sends these signals: a failure to
    # record can only be logged.
    try:
        recorder.dead_letter(message, reason)
    except Exception:
        logger.exception("could not dead-letter a message Celery refused: %s", reason)
