"""Each bad message shape found in review, pushed into a real Redis queue served by a real
``celery worker`` (prefork): it ends in the dead-letter store with its reason, the caller's
``get()`` raises ``DeadLetteredError`` where the message carries a task id, and the worker
keeps consuming."""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from resilience_tasks import DeadLetteredError
from tests.adapter.conftest import PoisonWorker
from tests.adapter.messages import envelope, push, task_body, task_envelope
from tests.conftest import wait_for

TASK = "poison_app.record"


def still_serving(worker: PoisonWorker) -> None:
    """The worker process is alive and a good task sent now completes."""
    assert worker.process.alive, worker.process.tail()
    result = worker.module.record.apply_async(args=[1], queue=worker.queue)
    assert result.get(timeout=60) == result.id
    assert worker.process.alive, worker.process.tail()
    log = worker.process.output()
    assert "Unrecoverable error" not in log, worker.process.tail(60)
    assert "Connection to broker lost" not in log, worker.process.tail(60)


def dead_lettered(worker: PoisonWorker, task_id: str) -> Any:
    wait_for(lambda: worker.dead_letters.get(task_id) is not None, timeout=60)
    return worker.dead_letters.get(task_id)


def caller_sees(worker: PoisonWorker, task_id: str, reason: str) -> None:
    with pytest.raises(DeadLetteredError, match=reason):
        AsyncResult(task_id, app=worker.module.app).get(timeout=60)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (b"hello MARK", "not a JSON envelope"),
        (b"\xff\xfe\x00garbage MARK", "not a JSON envelope"),
        (b'[42, "MARK"]', "envelope is a list"),
        (b'{"body": "MARK"}', "no properties object"),
        (b'{"__type__": "datetime", "__value__": "MARK"}', "not a JSON envelope"),
    ],
)
def test_raw_garbage_is_dead_lettered_and_the_worker_goes_on(
    poison_worker: PoisonWorker, redis_client: redis.Redis, item: bytes, reason: str
) -> None:
    marker = uuid.uuid4().hex
    push(redis_client, poison_worker.queue, item.replace(b"MARK", marker.encode()))
    wait_for(lambda: bool(poison_worker.records_containing(marker)), timeout=60)
    [entry] = poison_worker.records_containing(marker)
    assert reason in entry.reason
    assert entry.task_id.startswith("unreadable-")
    assert marker in entry.message["body"]
    still_serving(poison_worker)


def test_an_envelope_whose_body_is_not_base64_is_dead_lettered(
    poison_worker: PoisonWorker, redis_client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    item = task_envelope(poison_worker.queue, TASK, task_id)
    item["body"] = "!!! not base64 x"
    push(redis_client, poison_worker.queue, item)
    entry = dead_lettered(poison_worker, task_id)  # the headers could still be read
    assert "body cannot be decoded" in entry.reason
    assert entry.message["body"].startswith('{"body": "!!! not base64 x"')
    caller_sees(poison_worker, task_id, "body cannot be decoded")
    still_serving(poison_worker)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (json.dumps([[1]]).encode(), {}, "body is 1 items"),
        (json.dumps([[1], {}, {}, "extra"]).encode(), {}, "body is 4 items"),
        (json.dumps("just text").encode(), {}, "body is a str"),
        (json.dumps([5, {}, {}]).encode(), {}, "args are a int"),
        (json.dumps([[], [], {}]).encode(), {}, "kwargs are a list"),
        (task_body(), {"timelimit": "x"}, "timelimit"),
        (task_body(), {"timelimit": [1, 2, 3]}, "timelimit"),
        (task_body(), {"eta": "not a date"}, "'eta'"),
        (task_body(), {"expires": ["x"]}, "'expires'"),
        (task_body(), {"eta": 0}, "not an ISO 8601 date"),
        (task_body(), {"task": "no.such.task"}, "unknown task 'no.such.task'"),
    ],
)
def test_a_task_message_with_a_broken_field_is_dead_lettered_and_its_caller_told(
    poison_worker: PoisonWorker,
    redis_client: redis.Redis,
    body: bytes,
    headers: dict[str, Any],
    reason: str,
) -> None:
    task_id = str(uuid.uuid4())
    item = task_envelope(poison_worker.queue, TASK, task_id, body=body)
    item["headers"].update(headers)
    push(redis_client, poison_worker.queue, item)
    entry = dead_lettered(poison_worker, task_id)
    assert reason in entry.reason
    assert entry.message["headers"]["id"] == task_id
    assert entry.message["delivery_info"]["routing_key"] == poison_worker.queue
    caller_sees(poison_worker, task_id, reason)
    assert redis_client.lrange(poison_worker.ran_key, 0, -1).count(task_id.encode()) == 0
    still_serving(poison_worker)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"task": [TASK]}, "task name is ['poison_app.record']"),
        ({"task": {"a": 1}}, "task name is"),
        ({"task": TASK, "id": None}, "task id is None"),
        ({"task": TASK, "id": 7}, "task id is 7"),
    ],
)
def test_a_message_without_a_usable_task_or_id_is_dead_lettered_under_a_new_id(
    poison_worker: PoisonWorker, redis_client: redis.Redis, headers: dict[str, Any], reason: str
) -> None:
    marker = uuid.uuid4().hex
    item = envelope(task_body(args=[marker]), poison_worker.queue, headers)
    push(redis_client, poison_worker.queue, item)
    wait_for(lambda: bool(poison_worker.records_containing(marker)), timeout=60)
    [entry] = poison_worker.records_containing(marker)
    assert reason in entry.reason
    assert entry.task_id.startswith("unreadable-")
    still_serving(poison_worker)


def test_headers_with_a_task_and_no_id_do_not_stop_the_consumer(
    poison_worker: PoisonWorker, redis_client: redis.Redis
) -> None:
    marker = uuid.uuid4().hex
    push(
        redis_client,
        poison_worker.queue,
        envelope(task_body(args=[marker]), poison_worker.queue, {"task": TASK}),
    )
    wait_for(lambda: bool(poison_worker.records_containing(marker)), timeout=60)
    [entry] = poison_worker.records_containing(marker)
    assert "task id is None" in entry.reason
    still_serving(poison_worker)


def test_thirty_messages_without_headers_make_thirty_records(
    poison_worker: PoisonWorker, redis_client: redis.Redis
) -> None:
    marker = uuid.uuid4().hex
    for i in range(30):
        item = envelope(task_body(args=[marker, i]), poison_worker.queue, headers=None)
        del item["headers"]
        push(redis_client, poison_worker.queue, item)
    wait_for(lambda: len(poison_worker.records_containing(marker)) == 30, timeout=90)
    entries = poison_worker.records_containing(marker)
    assert len({entry.task_id for entry in entries}) == 30
    assert all("unknown format" in entry.reason for entry in entries)
    still_serving(poison_worker)


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "reason"),
    [
        (pickle.dumps(([1], {}, {})), "application/x-python-serialize", "binary", "pickle"),
        (b'[[1], {}, {"callbacks": nul', "application/json", "utf-8", "cannot decode"),
        (b"\xff\xfe not utf-8", "application/json", "utf-8", "cannot decode"),
    ],
)
def test_undecodable_bodies_fail_the_callers_get(
    poison_worker: PoisonWorker,
    redis_client: redis.Redis,
    body: bytes,
    content_type: str,
    encoding: str,
    reason: str,
) -> None:
    task_id = str(uuid.uuid4())
    item = envelope(
        body,
        poison_worker.queue,
        {"task": TASK, "id": task_id},
        content_type=content_type,
        content_encoding=encoding,
    )
    push(redis_client, poison_worker.queue, item)
    entry = dead_lettered(poison_worker, task_id)
    assert reason in entry.reason
    assert entry.message["content_type"] == content_type
    caller_sees(poison_worker, task_id, reason)
    still_serving(poison_worker)


def test_a_message_sent_by_celery_for_an_unknown_task_fails_the_callers_get(
    poison_worker: PoisonWorker,
) -> None:
    result = poison_worker.module.app.send_task("no.such.task", queue=poison_worker.queue)
    caller_sees(poison_worker, result.id, "unknown task 'no.such.task'")
    assert dead_lettered(poison_worker, result.id) is not None
