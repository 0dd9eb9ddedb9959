"""Property: whatever is pushed into a worker's queue is accounted for, and the worker lives.

Hypothesis generates batches of raw bytes, JSON that is no envelope, envelopes with broken
parts, and Celery task messages with broken headers, properties and bodies. Each batch is
LPUSHed straight into the Redis list kombu's transport reads, served by a real ``celery
worker`` (prefork, 2 processes). Every message must then either have run (the task notes its
id) or be in the dead-letter store, one record each; a message with a readable task id is
recorded under it and its result fails with ``DeadLetteredError``; the worker never exits or
reconnects, and a good task sent afterwards completes.

Bounded for CI: five derandomized examples of up to 120 messages, no example database.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis
from celery.result import AsyncResult
from celery.utils.time import maybe_iso8601
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from resilience_tasks import DeadLetteredError
from tests.adapter.conftest import PoisonWorker
from tests.adapter.messages import envelope, task_body, task_headers
from tests.conftest import wait_for

TASK = "poison_app.record"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

HEADER_FIELDS = [
    "task", "id", "timelimit", "eta", "expires", "retries", "shadow", "root_id", "parent_id",
    "argsrepr", "kwargsrepr", "ignore_result", "group", "group_index", "lang", "origin",
    "stamps", "stamped_headers", "compression", "replaced_task_nesting",
]  # fmt: skip
PROPERTY_FIELDS = [
    "delivery_tag", "delivery_info", "body_encoding", "priority", "correlation_id",
    "reply_to", "delivery_mode",
]  # fmt: skip
ENVELOPE_FIELDS = ["body", "headers", "properties", "content-type", "content-encoding"]
CONTENT_TYPES = [
    "application/json",
    "application/x-python-serialize",
    "application/x-yaml",
    "application/data",
    "text/plain",
]
#: Stands for "leave this field out".
MISSING = object()
field_values = st.one_of(json_values, st.just(MISSING))


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is MISSING:
        target.pop(key, None)
    else:
        target[key] = value


@st.composite
def task_messages(draw: st.DrawFn, queue: str) -> dict[str, Any]:
    """A Celery task message for a task the worker has, with some fields broken."""
    headers = task_headers(TASK, str(uuid.uuid4()))
    for key in draw(st.lists(st.sampled_from(HEADER_FIELDS), max_size=3, unique=True)):
        _set(headers, key, draw(field_values))
    if draw(st.booleans()):
        body = json.dumps(draw(json_values)).encode()
    else:
        body = task_body(
            args=draw(st.lists(json_values, max_size=3)),
            kwargs=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)),
        )
    content_type = draw(st.sampled_from(CONTENT_TYPES)) if draw(st.booleans()) else None
    item = envelope(body, queue, headers, content_type=content_type or "application/json")
    for key in draw(st.lists(st.sampled_from(PROPERTY_FIELDS), max_size=2, unique=True)):
        _set(item["properties"], key, draw(field_values))
    return item


@st.composite
def broken_envelopes(draw: st.DrawFn, queue: str) -> dict[str, Any]:
    """A good task message whose kombu envelope is broken in one to three places."""
    item = envelope(task_body(args=[1]), queue, task_headers(TASK, str(uuid.uuid4())))
    for key in draw(st.lists(st.sampled_from(ENVELOPE_FIELDS), min_size=1, max_size=3)):
        _set(item, key, draw(field_values))
    return item


def raw_items(queue: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=48),
        json_values.map(lambda value: json.dumps(value).encode()),
        broken_envelopes(queue).map(lambda item: json.dumps(item).encode()),
        # weighted: most of a batch looks like real task messages
        task_messages(queue).map(lambda item: json.dumps(item).encode()),
        task_messages(queue).map(lambda item: json.dumps(item).encode()),
        task_messages(queue).map(lambda item: json.dumps(item).encode()),
    )


def unique_ids(raw: bytes) -> bytes:
    """Make any task id a message carries unique, so no two messages share a record by chance;
    and keep ``eta``/``expires`` from being real dates (a future ETA waits in the worker, a past
    ``expires`` revokes the task: neither is a bad message)."""
    try:
        item = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(item, dict):
        return raw
    headers = item.get("headers")
    if isinstance(headers, dict):
        if isinstance(headers.get("id"), str):
            headers["id"] = f"{headers['id']}-{uuid.uuid4()}"
        for key in ("eta", "expires"):
            try:
                if maybe_iso8601(headers.get(key)) is not None:
                    headers[key] = "not-a-date"
            except Exception:
                pass
    body, properties = item.get("body"), item.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    if isinstance(body, str) and encoding == "base64":
        try:
            decoded = json.loads(base64.b64decode(body, validate=True))
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("id"), str):
            decoded["id"] = f"{decoded['id']}-{uuid.uuid4()}"
            item["body"] = base64.b64encode(json.dumps(decoded).encode()).decode()
    return json.dumps(item).encode()


def readable_task_id(raw: bytes) -> str | None:
    """The protocol-2 task id the worker should be able to read from ``raw``, if any."""
    try:
        item = json.loads(raw)
        headers = item["headers"]
        tag = item["properties"]["delivery_tag"]
        info = item["properties"]["delivery_info"]
    except (ValueError, TypeError, KeyError):
        return None
    if not (isinstance(headers, dict) and isinstance(tag, str) and tag):
        return None
    if not isinstance(info, dict):
        return None
    task_id = headers.get("id")
    return task_id if isinstance(task_id, str) and task_id and "task" in headers else None


def test_every_pushed_message_is_run_or_dead_lettered_once(
    poison_worker: PoisonWorker, redis_client: redis.Redis
) -> None:
    queue = poison_worker.queue

    @settings(
        max_examples=5,
        deadline=None,
        derandomize=True,
        database=None,
        # no shrinking: each step would wait out the settle timeout; the batch is printed
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(raw_items(queue), min_size=40, max_size=120))
    def pushed_batch_is_accounted_for(batch: list[bytes]) -> None:
        items = [unique_ids(raw) for raw in batch]
        records_before = poison_worker.dead_letters.count()
        ran_before = redis_client.llen(poison_worker.ran_key)
        redis_client.lpush(queue, *items)

        def settled() -> int:
            records = poison_worker.dead_letters.count() - records_before
            ran = redis_client.llen(poison_worker.ran_key) - ran_before
            return records + ran

        def done() -> bool:
            assert poison_worker.process.alive, poison_worker.process.tail(60)
            return settled() >= len(items)

        wait_for(done, timeout=120)
        # a good task sent after the batch completes: the consumer is still taking work
        good = poison_worker.module.record.apply_async(args=["after"], queue=queue)
        assert good.get(timeout=60) == good.id
        ran_ids = redis_client.lrange(poison_worker.ran_key, ran_before, -1)
        ran = [x.decode() if isinstance(x, bytes) else str(x) for x in ran_ids]
        ran.remove(good.id)
        assert len(ran) == len(set(ran)), "a message ran twice"
        assert settled() - 1 == len(items), (
            f"pushed {len(items)}, ran {len(ran)}, "
            f"dead-lettered {poison_worker.dead_letters.count() - records_before}"
        )
        for raw in items:
            task_id = readable_task_id(raw)
            if task_id is None or task_id in ran:
                continue
            entry = poison_worker.dead_letters.get(task_id)
            assert entry is not None, f"no record under {task_id!r} for {raw!r}"
            result = AsyncResult(task_id, app=poison_worker.module.app)
            assert result.state == "FAILURE", (task_id, result.state, entry.reason)
            assert isinstance(result.result, DeadLetteredError), result.result
        assert poison_worker.process.alive, poison_worker.process.tail()

    pushed_batch_is_accounted_for()
    log = poison_worker.process.output()
    assert "Unrecoverable error" not in log, poison_worker.process.tail(60)
    assert "Connection to broker lost" not in log, poison_worker.process.tail(60)
