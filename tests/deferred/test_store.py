"""The deferred store, dead-letter store and pump against the real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from resilience_tasks.deferred import (
    DeadLetterStore,
    DeferredMessage,
    DeferredStore,
    MalformedMessageError,
    Pump,
)
from resilience_tasks.state.keys import KeySpace


def message(task_id: str = "t1", **fields: object) -> DeferredMessage:
    return DeferredMessage(
        task_id=task_id, task="app.fetch", args=[1, "a"], kwargs={"k": 2}, queue="svc", **fields
    )  # type: ignore[arg-type]


@pytest.fixture
def store(redis_client: redis.Redis, prefix: str) -> DeferredStore:
    return DeferredStore(redis_client, "team", KeySpace(prefix))


@pytest.fixture
def dead(redis_client: redis.Redis, prefix: str) -> DeadLetterStore:
    return DeadLetterStore(redis_client, "team", KeySpace(prefix))


def test_message_round_trips_through_json() -> None:
    original = message(options={"root_id": "r"}).deferred_again("breaker open", attempts=2)
    assert DeferredMessage.from_json(original.to_json()) == original
    assert original.defer_count == 1
    assert original.first_deferred_at > 0


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1,2]",
        b'{"task_id": "x"}',
        b'{"bogus": 1}',
        b'{"task_id": "x", "task": "t", "args": "no"}',
    ],
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        DeferredMessage.from_json(raw)


def test_only_due_work_is_claimed(store: DeferredStore) -> None:
    store.add(message("now"), 0)
    store.add(message("later"), 60)
    claimed = store.claim_due()
    assert [c.task_id for c in claimed] == ["now"]
    assert DeferredMessage.from_json(claimed[0].raw).args == [1, "a"]
    assert store.depth() == 2  # one claimed, one waiting
    store.ack("now")
    assert store.depth() == 1
    assert store.get("now") is None
    assert store.get("later") is not None


def test_the_same_task_deferred_twice_is_stored_once(store: DeferredStore) -> None:
    store.add(message("t"), 30)
    store.add(message("t", reason="again"), 0)
    assert store.depth() == 1
    got = store.get("t")
    assert got is not None and got.reason == "again"


def test_an_expired_claim_comes_back(store: DeferredStore) -> None:
    store.add(message("t"), 0)
    assert len(store.claim_due(lease=0.2)) == 1
    assert store.claim_due() == []  # still claimed
    time.sleep(0.25)
    assert [c.task_id for c in store.claim_due()] == ["t"]


def test_a_task_deferred_again_while_claimed_keeps_its_message(store: DeferredStore) -> None:
    store.add(message("t"), 0)
    store.claim_due()
    store.add(message("t", reason="deferred again by a worker"), 5)  # before the pump's ack
    store.ack("t")
    got = store.get("t")
    assert got is not None and got.reason == "deferred again by a worker"


def test_defer_clears_the_delivery_counter(
    store: DeferredStore, redis_client: redis.Redis, prefix: str
) -> None:
    counter = KeySpace(prefix).deliveries("team", "t")
    redis_client.set(counter, 3)
    store.add(message("t"), 1)
    assert redis_client.get(counter) is None


def test_pump_publishes_due_work_and_acks_it(store: DeferredStore, dead: DeadLetterStore) -> None:
    published: list[DeferredMessage] = []
    store.add(message("a"), 0)
    store.add(message("b"), 0)
    report = Pump(store, dead, published.append).drain()
    assert report.published == 2
    assert sorted(m.task_id for m in published) == ["a", "b"]
    assert store.depth() == 0


def test_pump_keeps_work_it_could_not_publish(store: DeferredStore, dead: DeadLetterStore) -> None:
    def broker_down(_: DeferredMessage) -> None:
        raise ConnectionError("broker unreachable")

    store.add(message("a"), 0)
    report = Pump(store, dead, broker_down, claim_lease=0.2).pump_once()
    assert report.failed == 1
    assert store.depth() == 1
    time.sleep(0.25)
    published: list[DeferredMessage] = []
    assert Pump(store, dead, published.append).pump_once().published == 1
    assert [m.task_id for m in published] == ["a"]


def test_pump_dead_letters_a_malformed_entry(
    store: DeferredStore, dead: DeadLetterStore, redis_client: redis.Redis
) -> None:
    redis_client.hset(store.messages_key, "bad", b"{not json")
    redis_client.zadd(store.due_key, {"bad": 0})
    report = Pump(store, dead, lambda m: None).pump_once()
    assert report.dead_lettered == 1
    entry = dead.get("bad")
    assert entry is not None
    assert "cannot decode" in entry.reason
    assert entry.message == "{not json"
    assert store.depth() == 0


def test_dead_letters_are_listed_newest_first(dead: DeadLetterStore) -> None:
    dead.add("one", "first reason", {"a": 1})
    dead.add("two", "second reason", {"b": 2})
    assert [d.task_id for d in dead.list()] == ["two", "one"]
    assert dead.count() == 2
    dead.remove("one")
    assert dead.count() == 1


def test_release_makes_waiting_work_due_now(store: DeferredStore) -> None:
    store.add(message("a"), 600)
    store.add(message("b"), 600)
    assert store.claim_due() == []
    assert store.release(["a"]) == 1
    assert [c.task_id for c in store.claim_due()] == ["a"]
    assert store.release() == 1
    assert [c.task_id for c in store.claim_due()] == ["b"]
