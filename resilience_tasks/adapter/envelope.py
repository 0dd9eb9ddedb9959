"""Screen what kombu's Redis transport pops off a queue before kombu parses it.

kombu's Redis channel turns each item it pops into a message with no error handling of its
own: ``loads(bytes_to_str(item))`` in ``Channel._brpop_read``, then ``Message(payload)`` (which
base64-decodes the body and reads ``properties['delivery_tag']``) and ``QoS.append`` (which
reads ``delivery_info['exchange']``/``['routing_key']``). An item that fails any of these
(``LPUSH queue hello``, a body that is not base64, no properties...) raises out of the event
loop: the worker exits and the item, already popped, is lost.

``screen`` checks an item the way those steps will read it. A deliverable item is returned
as is (the same bytes); anything else is replaced by a well-formed *quarantine envelope*
that carries the original text and the reason in its headers. That envelope goes through
kombu like any message (into the unacked index, so it survives a worker dying), and the
consumer step in ``adapter.intake`` dead-letters and acknowledges it. kombu offers no hook
between BRPOP and these steps, so the screen wraps the channel client's ``parse_response``
for ``BRPOP`` replies only (see ``hook_channel``).
"""

from __future__ import annotations

import binascii
import uuid
from collections.abc import Callable
from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

#: Header marking a quarantine envelope; its value is the reason the item was unreadable.
QUARANTINE = "x-resilience-unreadable"
#: Header holding the original item's text (undecodable bytes replaced).
ORIGINAL = "x-resilience-original"
#: Content type of a quarantine envelope: nothing in Celery will try to run it.
QUARANTINE_TYPE = "application/x-resilience-unreadable"

_OPTIONAL_TEXT = ("content-type", "content-encoding")


class Unreadable(Exception):
    """An item kombu could not turn into a message; the text says why."""


def check(payload: Any, decode_body: Callable[[Any, Any], Any]) -> None:
    """Raise ``Unreadable`` unless kombu can build, queue, ack and restore ``payload``."""
    if not isinstance(payload, dict):
        raise Unreadable(f"envelope is a {type(payload).__name__}, not an object")
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise Unreadable("envelope has no properties object")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise Unreadable(f"delivery_tag is {tag!r}, not a non-empty string")
    info = properties.get("delivery_info")
    if not isinstance(info, dict):
        raise Unreadable("properties have no delivery_info object")
    for field in ("exchange", "routing_key"):
        if not isinstance(info.get(field), str):
            raise Unreadable(f"delivery_info.{field} is {info.get(field)!r}, not a string")
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise Unreadable(f"headers are a {type(headers).__name__}, not an object")
    for field in _OPTIONAL_TEXT:
        if payload.get(field) is not None and not isinstance(payload[field], str):
            raise Unreadable(f"{field} is {payload[field]!r}, not a string")
    encoding = properties.get("body_encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise Unreadable(f"body_encoding is {encoding!r}, not a string")
    body = payload.get("body")
    if body:
        if not isinstance(body, str):
            raise Unreadable(f"body is a {type(body).__name__}, not a string")
        try:
            decode_body(body, encoding)
        except (binascii.Error, ValueError, TypeError, AttributeError, LookupError) as exc:
            raise Unreadable(f"body cannot be decoded as {encoding!r}: {exc}") from None


def quarantine(text: str, reason: str, queue: str, payload: Any = None) -> dict[str, Any]:
    """A well-formed envelope carrying ``text`` (the original item) and ``reason``.

    The original's headers are kept when they are an object, so its task id (if any) can
    still be read: the dead letter is recorded under it and the caller's result is failed.
    """
    original = payload.get("headers") if isinstance(payload, dict) else None
    headers = dict(original) if isinstance(original, dict) else {}
    headers.pop("compression", None)  # kombu would try to decompress the empty body
    headers.update({QUARANTINE: reason, ORIGINAL: text})
    return {
        "body": "",
        "content-type": QUARANTINE_TYPE,
        "content-encoding": "utf-8",
        "headers": headers,
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "body_encoding": None,
        },
    }


def screen(item: bytes | str, queue: str, decode_body: Callable[[Any, Any], Any]) -> bytes | str:
    """``item`` itself if kombu can deliver it, else a quarantine envelope (as JSON)."""
    try:
        text: str = bytes_to_str(item)
    except UnicodeDecodeError as exc:
        raw = item if isinstance(item, bytes) else str(item).encode()
        return _quarantined(raw.decode("utf-8", "replace"), f"not UTF-8: {exc}", queue)
    try:
        payload = loads(text)
    except Exception as exc:  # kombu's object hook can raise more than ValueError
        return _quarantined(text, f"not a JSON envelope: {type(exc).__name__}: {exc}", queue)
    try:
        check(payload, decode_body)
    except Unreadable as exc:
        return _quarantined(text, f"malformed envelope: {exc}", queue, payload)
    if "headers" in payload and payload["headers"] is None:
        # kombu reads null headers as {}, but cannot restore such an item to its queue
        # (``_do_restore_message`` sets ``headers['redelivered']``): it would be dropped.
        payload["headers"] = {}
        return str(dumps(payload))
    return item


def _quarantined(text: str, reason: str, queue: str, payload: Any = None) -> str:
    return str(dumps(quarantine(text, reason, queue, payload)))


def queue_of(dest: bytes | str, sep: str) -> str:
    """The queue a BRPOP reply came from (kombu appends ``sep`` and a priority to the list)."""
    name: str = bytes_to_str(dest)
    return name.rsplit(sep, 1)[0]


def hook_channel(channel: Any) -> bool:
    """Screen every BRPOP reply of ``channel`` (a kombu Redis channel); False if not Redis.

    Idempotent. Wraps only the instance's client, so other apps and connections are untouched.
    """
    from kombu.transport.redis import Channel as RedisChannel

    if not isinstance(channel, RedisChannel):
        return False
    client = channel.client
    if getattr(client, "_resilience_screened", False):
        return True
    parse_response = client.parse_response

    def screened(connection: Any, command_name: Any, **options: Any) -> Any:
        response = parse_response(connection, command_name, **options)
        if command_name == "BRPOP" and response:
            dest, item = response
            queue = queue_of(dest, channel.sep)
            return [dest, screen(item, queue, channel.decode_body)]
        return response

    client.parse_response = screened
    client._resilience_screened = True
    return True


def original_text(headers: dict[str, Any]) -> str | None:
    """The original item's text if ``headers`` are a quarantine envelope's."""
    value = headers.get(ORIGINAL)
    return value if isinstance(value, str) else None
