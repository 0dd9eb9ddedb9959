"""One round trip before each attempt: the breaker, the delivery count, the gates' values."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks import BreakerPolicy, DeadLetteredError
from resilience_tasks.admission import Admitter, Deliveries
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.keys import KeySpace


def admitter(client: redis.Redis, prefix: str, max_deliveries: int = 5) -> Admitter:
    keys = KeySpace(prefix)
    breaker = FleetBreaker(
        "dep", BreakerPolicy(reset_timeout=100), RedisFleetStorage(client, "dep", keys)
    )
    return Admitter(breaker, Deliveries(keys, "team", max_deliveries=max_deliveries, ttl=60))


def test_deliveries_and_watched_keys_ride_along(redis_client: redis.Redis, prefix: str) -> None:
    admit = admitter(redis_client, prefix)
    watched = KeySpace(prefix).cooldown("dep")
    redis_client.set(watched, "42")
    counter = KeySpace(prefix).deliveries("team", "task-1")
    first = admit.admit("task-1", (watched,))
    assert redis_client.get(counter) == b"1"
    second = admit.admit("task-1", (watched,))
    assert redis_client.get(counter) == b"2"
    assert first.admission.allowed and second.watched == {watched: b"42"}
    assert admit.admit(None, (watched,)).watched == {watched: b"42"}
    assert redis_client.get(counter) == b"2"  # a first delivery is never counted


def test_a_message_delivered_too_often_is_dead_lettered_and_frees_its_trial(
    redis_client: redis.Redis, prefix: str
) -> None:
    admit = admitter(redis_client, prefix, max_deliveries=2)
    admit.breaker.half_open()
    assert admit.admit("t").admission.trial  # second delivery: within the limit
    admit.breaker.half_open()
    with pytest.raises(DeadLetteredError, match="delivered 3 times"):
        admit.admit("t")
    assert admit.breaker.admit().trial  # the refused delivery handed its trial lease back
