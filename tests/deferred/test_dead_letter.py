"""The dead-letter store on the real Redis: records, reading, replay access and retention."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from resilience_tasks.deferred import DeadLetterStore
from resilience_tasks.deferred.dead_letter import DEFAULT_MAX_AGE, DEFAULT_MAX_ENTRIES
from resilience_tasks.errors import ConfigurationError
from resilience_tasks.state.keys import KeySpace


def store(client: redis.Redis, prefix: str, **limits: object) -> DeadLetterStore:
    return DeadLetterStore(client, "team", KeySpace(prefix), **limits)  # type: ignore[arg-type]


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_defaults_are_a_week_and_ten_thousand(redis_client: redis.Redis, prefix: str) -> None:
    dead = store(redis_client, prefix)
    assert (dead.max_age, dead.max_entries) == (DEFAULT_MAX_AGE, DEFAULT_MAX_ENTRIES)
    assert (DEFAULT_MAX_AGE, DEFAULT_MAX_ENTRIES) == (7 * 86_400, 10_000)


def test_an_entry_keeps_its_reason_message_and_server_time(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead = store(redis_client, prefix)
    before = server_time(redis_client)
    added = dead.add("t1", "too old", {"headers": {"id": "t1"}, "body": "x"})
    entry = dead.get("t1")
    assert entry == added
    assert entry.reason == "too old" and entry.message["body"] == "x"
    assert before - 0.01 <= entry.at <= server_time(redis_client) + 0.01
    assert dead.add("raw", "bytes", b"\xffhello").message == "\ufffdhello"
    assert dead.get("missing") is None


def test_list_is_newest_first_and_oldest_is_oldest_first(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead = store(redis_client, prefix)
    for i in range(5):
        dead.add(f"t{i}", f"reason {i}", {"n": i})
        # distinct scores even on a fast server: the index is ordered by time, then by id
        redis_client.zincrby(dead.index_key, -10 + i, f"t{i}")
    assert [e.task_id for e in dead.list()] == ["t4", "t3", "t2", "t1", "t0"]
    assert [e.task_id for e in dead.oldest(limit=2)] == ["t0", "t1"]
    assert dead.count() == 5
    dead.remove("t2")
    assert dead.count() == 4 and dead.get("t2") is None


def test_the_same_id_replaces_its_record(redis_client: redis.Redis, prefix: str) -> None:
    dead = store(redis_client, prefix)
    dead.add("t1", "first", {})
    dead.add("t1", "second", {})
    assert dead.count() == 1
    entry = dead.get("t1")
    assert entry is not None and entry.reason == "second"


def test_count_is_capped_on_add_oldest_first(redis_client: redis.Redis, prefix: str) -> None:
    dead = store(redis_client, prefix, max_entries=5)
    for i in range(8):
        dead.add(f"t{i}", "r", {"n": i})
        redis_client.zincrby(dead.index_key, -100 + i, f"t{i}")  # keep insertion order
    assert dead.count() == 5
    assert redis_client.hlen(dead.entries_key) == 5
    kept = {e.task_id for e in dead.list()}
    # each add trims before the test reorders, so the newest five are kept
    assert kept == {"t3", "t4", "t5", "t6", "t7"}


def test_entries_older_than_max_age_go_on_the_next_add(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead = store(redis_client, prefix, max_age=3600)
    dead.add("old", "r", {})
    dead.add("recent", "r", {})
    # "old" was recorded two hours ago by the server's clock
    redis_client.zadd(dead.index_key, {"old": server_time(redis_client) - 7200})
    dead.add("new", "r", {})
    assert dead.get("old") is None
    assert redis_client.hexists(dead.entries_key, "old") == 0
    assert {e.task_id for e in dead.list()} == {"recent", "new"}


def test_trim_applies_the_limits_without_adding(redis_client: redis.Redis, prefix: str) -> None:
    unbounded = store(redis_client, prefix, max_age=None, max_entries=None)
    for i in range(20):
        unbounded.add(f"t{i}", "r", {})
    assert unbounded.count() == 20
    assert store(redis_client, prefix, max_entries=7).trim() == 13
    assert unbounded.count() == 7


def test_take_hands_an_entry_to_exactly_one_replayer(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead = store(redis_client, prefix)
    dead.add("t1", "r", {"n": 1})
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(dead.take("t1"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [entry for entry in got if entry is not None]
    assert len(winners) == 1
    assert winners[0].message == {"n": 1}  # type: ignore[attr-defined]
    assert dead.count() == 0 and redis_client.hlen(dead.entries_key) == 0
    assert dead.take("t1") is None


def test_records_written_before_the_index_held_the_time_are_read(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead = store(redis_client, prefix)
    legacy = {"task_id": "t1", "reason": "r", "at": 123.5, "message": {}}
    redis_client.hset(dead.entries_key, "t1", json.dumps(legacy))
    entry = dead.get("t1")
    assert entry is not None and entry.at == 123.5


def test_all_keys_share_the_keyspace_hash_tag(redis_client: redis.Redis, prefix: str) -> None:
    dead = store(redis_client, prefix)
    tag = KeySpace(prefix).dead_letters("team").split("}")[0] + "}"
    assert dead.entries_key.startswith(tag) and dead.index_key.startswith(tag)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"max_age": 0}, "max_age"),
        ({"max_age": -1.0}, "max_age"),
        ({"max_entries": 0}, "max_entries"),
        ({"max_entries": 2.5}, "max_entries"),
        ({"max_entries": True}, "max_entries"),
    ],
)
def test_bad_limits_are_named(
    redis_client: redis.Redis, prefix: str, limits: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"DeadLetterStore.{field}"):
        store(redis_client, prefix, **limits)
