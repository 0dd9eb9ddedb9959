"""The checks behind the intake step, on their own: what kombu's Redis transport can deliver,
and why a message cannot become a task. The worker tests push the same shapes for real."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any, cast

import pytest
import redis
from kombu.connection import Connection
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from resilience_tasks.adapter import envelope
from resilience_tasks.adapter.intake import refusal
from tests.adapter.messages import envelope as make_envelope
from tests.adapter.messages import task_body, task_headers
from tests.conftest import REDIS_URL


def decode_body(body: Any, encoding: Any) -> Any:
    """What kombu's virtual channel does with a body (only base64 is a known codec)."""
    if encoding and encoding.lower() != "utf-8":
        if encoding != "base64":
            raise LookupError(encoding)
        return base64.b64decode(body)
    return body


def good() -> dict[str, Any]:
    return make_envelope(task_body(args=[1]), "q", task_headers("t.x", str(uuid.uuid4())))


def test_a_deliverable_item_is_returned_as_the_same_object() -> None:
    item = json.dumps(good()).encode()
    assert envelope.screen(item, "q", decode_body) is item


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e.pop("properties"), "no properties object"),
        (lambda e: e["properties"].pop("delivery_tag"), "delivery_tag is None"),
        (lambda e: e["properties"].update(delivery_tag=[1]), "delivery_tag is [1]"),
        (lambda e: e["properties"].update(delivery_info=None), "no delivery_info"),
        (lambda e: e["properties"]["delivery_info"].pop("exchange"), "delivery_info.exchange"),
        (lambda e: e.update(headers=["a"]), "headers are a list"),
        (lambda e: e.update(body="abcde"), "body cannot be decoded"),  # bad padding
        (lambda e: e.update(body=5), "body is a int"),
        (lambda e: e["properties"].update(body_encoding="rot13"), "body cannot be decoded"),
        (lambda e: e.update({"content-type": 3}), "content-type is 3"),
    ],
)
def test_an_undeliverable_envelope_is_quarantined_with_its_headers(
    change: Any, reason: str
) -> None:
    item = good()
    change(item)
    raw = json.dumps(item)
    out = json.loads(envelope.screen(raw.encode(), "q", decode_body))
    assert reason in out["headers"][envelope.QUARANTINE]
    assert out["headers"][envelope.ORIGINAL] == raw
    assert out["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q"}
    envelope.check(out, decode_body)  # the quarantine envelope itself is deliverable
    if isinstance(item.get("headers"), dict):
        assert out["headers"]["id"] == item["headers"]["id"]


def test_null_headers_become_empty_so_the_item_can_be_restored() -> None:
    item = good()
    item["headers"] = None
    out = json.loads(envelope.screen(json.dumps(item).encode(), "q", decode_body))
    assert out == {**item, "headers": {}}


def test_a_quarantine_envelope_is_restored_to_its_queue(redis_client: redis.Redis) -> None:
    """What kombu does with an unacknowledged item when a worker stops before acking it."""
    queue = f"quarantine-{uuid.uuid4().hex[:8]}"
    out = json.loads(envelope.screen(b"hello", queue, decode_body))
    with Connection(REDIS_URL) as connection:  # type: ignore[no-untyped-call]
        channel = connection.default_channel
        try:
            with redis_client.pipeline() as pipe:
                channel._do_restore_message(out, "", queue, pipe)
                pipe.execute()
            restored = cast(bytes | None, redis_client.rpop(queue))
        finally:
            redis_client.delete(queue)
    assert restored is not None
    assert json.loads(restored)["headers"][envelope.ORIGINAL] == "hello"


@pytest.mark.parametrize("raw", [b"", b"hello", b"\xff\xfe", b"[1, 2]", b"null", b"{"])
def test_raw_garbage_is_quarantined(raw: bytes) -> None:
    out = json.loads(envelope.screen(raw, "q", decode_body))
    assert out["content-type"] == envelope.QUARANTINE_TYPE
    assert envelope.QUARANTINE in out["headers"]


def message(
    headers: Any, body: bytes = task_body(), content_type: str = "application/json"
) -> Message:
    built: Message = Message(  # type: ignore[no-untyped-call]
        body=body,
        content_type=content_type,
        content_encoding="utf-8",
        headers=headers,
        accept=prepare_accept_content(["json"]),  # type: ignore[no-untyped-call]
    )
    return built


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"task": "t.x", "id": "1"}, task_body(), None),
        ({"task": ["t.x"], "id": "1"}, task_body(), "task name is ['t.x']"),
        ({"task": "t.x"}, task_body(), "task id is None"),
        ({"task": "t.y", "id": "1"}, task_body(), "unknown task 't.y'"),
        ({"task": "t.x", "id": "1", "timelimit": "x"}, task_body(), "timelimit"),
        ({"task": "t.x", "id": "1"}, b"[[1]]", "body is 1 items"),
        ({"task": "t.x", "id": "1"}, b"[[1], {}, {}, 4]", "body is 4 items"),
        ({"task": "t.x", "id": "1"}, b"nope", "cannot decode"),
        ({}, b'{"task": "t.x", "id": "1", "args": [], "kwargs": {}}', None),
        ({}, b'{"id": "1"}', "unknown format"),
    ],
)
def test_refusal_names_what_is_wrong(headers: Any, body: bytes, reason: str | None) -> None:
    found = refusal(message(headers, body), lambda name: name == "t.x")
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_a_content_type_the_worker_does_not_accept_is_refused() -> None:
    found = refusal(
        message({"task": "t.x", "id": "1"}, b"\x80\x04", "application/x-python-serialize"),
        lambda name: True,
    )
    assert found is not None and "pickle" in found
