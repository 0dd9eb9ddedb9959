from __future__ import annotations

import pytest
import redis

from resilience_tasks import Defer
from resilience_tasks.idempotency import IdempotencyStore
from resilience_tasks.state.keys import KeySpace


@pytest.fixture
def once(redis_client: redis.Redis, prefix: str) -> IdempotencyStore:
    return IdempotencyStore(redis_client, "team", KeySpace(prefix))


def test_the_side_effect_runs_once_and_its_result_is_replayed(once: IdempotencyStore) -> None:
    sent: list[str] = []

    def send() -> dict[str, str]:
        sent.append("mail")
        return {"message_id": "m-1"}

    assert once.run_once("order-7", send) == {"message_id": "m-1"}
    assert once.run_once("order-7", send) == {"message_id": "m-1"}
    assert sent == ["mail"]


def test_a_failed_run_releases_the_key(once: IdempotencyStore) -> None:
    def broken() -> None:
        raise ConnectionError("smtp down")

    with pytest.raises(ConnectionError):
        once.run_once("order-8", broken)
    assert once.run_once("order-8", lambda: "sent") == "sent"


def test_a_duplicate_during_a_run_is_deferred(once: IdempotencyStore) -> None:
    def inner() -> str:
        with pytest.raises(Defer) as waiting:
            once.run_once("order-9", lambda: "twice", lease=30)
        assert 0 < waiting.value.delay <= 30
        return "first"

    assert once.run_once("order-9", inner, lease=30) == "first"
