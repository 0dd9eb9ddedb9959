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
    ParkingSpot,
    Pump,
    PumpSettings,
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
    assert store.started("now", "svc")
    assert store.depth() == 1
    assert store.get("now") is None
    assert store.get("later") is not None


def test_the_same_task_deferred_twice_is_stored_once(store: DeferredStore) -> None:
    store.add(message("t"), 30)
    store.add(message("t", reason="again"), 0)
    assert store.depth() == 1
    got = store.get("t")
    assert got is not None and got.reason == "again"


def test_a_claim_holds_until_it_expires(store: DeferredStore) -> None:
    store.add(message("held"), 0)
    store.add(message("lapses"), 0)
    assert [c.task_id for c in store.claim_due(limit=1, lease=600)] == ["held"]
    assert [c.task_id for c in store.claim_due(limit=1, lease=0.1)] == ["lapses"]
    time.sleep(0.3)  # longer than the short lease, whatever the load
    assert [c.task_id for c in store.claim_due()] == ["lapses"]


def test_a_task_deferred_again_while_claimed_keeps_its_message(store: DeferredStore) -> None:
    store.add(message("t"), 0)
    store.claim_due()
    store.add(message("t", reason="deferred again by a worker"), 5)  # before it is started
    store.started("t", "svc")
    got = store.get("t")
    assert got is not None and got.reason == "deferred again by a worker"


def test_defer_clears_the_delivery_counter(
    store: DeferredStore, redis_client: redis.Redis, prefix: str
) -> None:
    counter = KeySpace(prefix).deliveries("team", "t")
    redis_client.set(counter, 3)
    store.add(message("t"), 1)
    assert redis_client.get(counter) is None


def test_published_work_stays_leased_until_a_worker_starts_it(
    store: DeferredStore, dead: DeadLetterStore
) -> None:
    published: list[DeferredMessage] = []
    store.add(message("a"), 0)
    store.add(message("b"), 0)
    report = Pump(store, dead, published.append).drain()
    assert report.published == 2
    assert sorted(m.task_id for m in published) == ["a", "b"]
    assert store.depth() == 2  # published, not started yet
    assert store.started("a", "svc")
    assert store.depth() == 1
    assert not store.started("a", "svc")  # a duplicate start finds nothing


def test_a_published_message_lost_in_transit_is_published_again(
    store: DeferredStore, dead: DeadLetterStore
) -> None:
    published: list[DeferredMessage] = []
    pump = Pump(store, dead, published.append, settings=PumpSettings(publish_lease=0.1))
    store.add(message("lost"), 0)
    assert pump.pump_once().published == 1
    time.sleep(0.3)  # the lease lapses: no worker ever started it
    assert pump.pump_once().published == 1
    assert [m.task_id for m in published] == ["lost", "lost"]


def test_pump_keeps_work_it_could_not_publish(store: DeferredStore, dead: DeadLetterStore) -> None:
    def broker_down(_: DeferredMessage) -> None:
        raise ConnectionError("broker unreachable")

    store.add(message("a"), 0)
    report = Pump(store, dead, broker_down, settings=PumpSettings(claim_lease=0.1)).pump_once()
    assert report.failed == 1
    assert store.depth() == 1
    time.sleep(0.3)
    published: list[DeferredMessage] = []
    assert Pump(store, dead, published.append).pump_once().published == 1
    assert [m.task_id for m in published] == ["a"]
    assert dead.count() == 0  # the broker being away is never the message's fault


def test_a_publish_that_can_never_succeed_is_dead_lettered(
    store: DeferredStore, dead: DeadLetterStore
) -> None:
    marked: list[tuple[str, str]] = []

    def refuses(_: DeferredMessage) -> None:
        raise ValueError("no such exchange")

    pump = Pump(
        store,
        dead,
        refuses,
        settings=PumpSettings(claim_lease=0.05, max_publish_failures=3),
        mark_failed=lambda task_id, reason: marked.append((task_id, reason)),
    )
    store.add(message("bad"), 0)
    reports = []
    while dead.get("bad") is None and len(reports) < 50:
        reports.append(pump.pump_once())
        time.sleep(0.1)
    entry = dead.get("bad")
    assert entry is not None and "could not be published 3 times" in entry.reason
    assert sum(r.dead_lettered for r in reports) == 1
    assert [task_id for task_id, _ in marked] == ["bad"]
    assert store.depth() == 0


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


def test_an_entry_in_no_set_is_brought_back(
    store: DeferredStore, redis_client: redis.Redis
) -> None:
    store.add(message("placed"), 600)
    redis_client.hset(store.messages_key, "orphan", message("orphan").to_json())
    assert store.reconcile(["svc"]) == 1
    assert [c.task_id for c in store.claim_due()] == ["orphan"]


# -- parked work comes back at the pace of its breaker ------------------------------------------


def breaker_is(redis_client: redis.Redis, prefix: str, state: str, opened_ago: float) -> None:
    """Set the breaker's shared state as its scripts write it (hash fields, server clock)."""
    seconds, micros = redis_client.time()
    redis_client.hset(
        KeySpace(prefix).breaker("dep"),
        mapping={"state": state, "opened_at": seconds + micros / 1e6 - opened_ago},
    )


def parked_ids(store: DeferredStore, spot: ParkingSpot) -> list[str]:
    return [c.task_id for c in store.claim_parked([spot], lease=600)]


def test_parked_work_waits_while_the_breaker_is_open(
    store: DeferredStore, redis_client: redis.Redis, prefix: str
) -> None:
    spot = store.parking_spot("dep", reset_timeout=60, trial_calls=1)
    for i in range(5):
        store.park(message(f"p{i}"), "dep", expires_in=600)
    breaker_is(redis_client, prefix, "open", opened_ago=0)
    assert parked_ids(store, spot) == []
    assert store.depth(["dep"]) == 5


def test_a_trials_worth_comes_back_once_a_trial_may_run(
    store: DeferredStore, redis_client: redis.Redis, prefix: str
) -> None:
    spot = store.parking_spot("dep", reset_timeout=60, trial_calls=1)
    for i in range(5):
        store.park(message(f"p{i}"), "dep", expires_in=600)
    breaker_is(redis_client, prefix, "open", opened_ago=61)
    assert parked_ids(store, spot) == ["p0"]  # first parked, first out
    assert parked_ids(store, spot) == []  # one trial per reset_timeout, however often it pumps
    breaker_is(redis_client, prefix, "closed", opened_ago=0)
    assert parked_ids(store, spot) == ["p1", "p2", "p3", "p4"]


def test_a_failed_trial_goes_to_the_back_of_the_line(
    store: DeferredStore, redis_client: redis.Redis, prefix: str
) -> None:
    spot = store.parking_spot("dep", reset_timeout=60, trial_calls=1)
    for i in range(3):
        store.park(message(f"p{i}"), "dep", expires_in=600)
    breaker_is(redis_client, prefix, "open", opened_ago=61)
    assert parked_ids(store, spot) == ["p0"]
    store.started("p0", "dep")
    store.park(message("p0"), "dep", expires_in=600)  # its trial failed
    redis_client.delete(spot.marker_key)  # the next reset_timeout has passed
    assert parked_ids(store, spot) == ["p1"]


def test_parked_work_that_expires_is_released_to_be_dead_lettered(
    store: DeferredStore, redis_client: redis.Redis, prefix: str
) -> None:
    spot = store.parking_spot("dep", reset_timeout=60, trial_calls=1)
    store.park(message("old"), "dep", expires_in=0)
    store.park(message("young"), "dep", expires_in=600)
    breaker_is(redis_client, prefix, "open", opened_ago=0)
    assert parked_ids(store, spot) == ["old"]


def test_release_makes_parked_work_due_now(store: DeferredStore) -> None:
    store.park(message("p"), "dep", expires_in=600)
    assert store.release(resources=["dep"]) == 1
    assert [c.task_id for c in store.claim_due()] == ["p"]
    assert store.depth(["dep"]) == 1  # claimed


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
