"""The guard without Celery: retries, deferral decisions and delivery counting on real Redis."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks import BreakerPolicy, DeadLetteredError, Defer, RetryPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.guard import CallContext, GuardSettings, TaskGuard
from resilience_tasks.state.keys import KeySpace


def guard(client: redis.Redis, prefix: str, retry: RetryPolicy, fail_max: int = 10) -> TaskGuard:
    fleet = FleetBreaker(
        "dep",
        BreakerPolicy(fail_max=fail_max, reset_timeout=5),
        RedisFleetStorage(client, "dep", KeySpace(prefix)),
    )
    return TaskGuard(lambda: fleet, retry, GuardSettings(max_deliveries=2), sleep=lambda _: None)


def test_retries_within_the_budget_then_succeeds(redis_client: redis.Redis, prefix: str) -> None:
    calls: list[int] = []

    def body() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError
        return "done"

    retry = RetryPolicy.fixed(max_attempts=3, wait=0.01)
    assert guard(redis_client, prefix, retry).run(CallContext(), body) == "done"
    assert len(calls) == 3


def test_a_wait_beyond_the_budget_defers_with_the_attempts_used(
    redis_client: redis.Redis, prefix: str
) -> None:
    retry = RetryPolicy.fixed(max_attempts=5, wait=10.0, jitter=0.0, in_process_budget=1.0)

    def body() -> None:
        raise TimeoutError("slow")

    with pytest.raises(Defer) as waiting:
        guard(redis_client, prefix, retry).run(CallContext(attempts_used=2), body)
    assert waiting.value.attempts == 3
    assert waiting.value.delay == 10.0
    assert "retry 4/5" in waiting.value.reason


def test_the_last_attempt_raises_the_error(redis_client: redis.Redis, prefix: str) -> None:
    retry = RetryPolicy.fixed(max_attempts=3, wait=10.0, in_process_budget=0.0)

    def body() -> None:
        raise TimeoutError("still slow")

    with pytest.raises(TimeoutError):
        guard(redis_client, prefix, retry).run(CallContext(attempts_used=2), body)


def test_an_open_breaker_defers_without_charging_an_attempt(
    redis_client: redis.Redis, prefix: str
) -> None:
    protected = guard(redis_client, prefix, RetryPolicy.fixed(max_attempts=5, wait=0.0), 2)

    def body() -> None:
        raise ConnectionError("down")

    with pytest.raises(Defer) as waiting:  # two failures trip it; the third attempt is refused
        protected.run(CallContext(attempts_used=1), body)
    assert waiting.value.reason == "breaker open"
    assert waiting.value.attempts == 3
    assert 4.9 < waiting.value.delay <= 5.5


def test_a_body_that_defers_itself_keeps_its_attempts(
    redis_client: redis.Redis, prefix: str
) -> None:
    def body() -> None:
        raise Defer(3.0, "not ready yet")

    with pytest.raises(Defer) as waiting:
        guard(redis_client, prefix, RetryPolicy()).run(CallContext(attempts_used=1), body)
    assert (waiting.value.delay, waiting.value.attempts) == (3.0, 1)


def test_too_many_deliveries_dead_letter(redis_client: redis.Redis, prefix: str) -> None:
    protected = guard(redis_client, prefix, RetryPolicy())  # max 2 deliveries
    redelivery = CallContext(task_id="t", delivery_key=f"{prefix}:deliveries:t")
    assert protected.run(CallContext(task_id="t"), lambda: 1) == 1  # first delivery: no count
    assert protected.run(redelivery, lambda: 2) == 2
    with pytest.raises(DeadLetteredError, match="delivered 3 times"):
        protected.run(redelivery, lambda: 3)


def test_a_redelivery_is_counted_once_however_many_attempts(
    redis_client: redis.Redis, prefix: str
) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError
        return "ok"

    protected = guard(redis_client, prefix, RetryPolicy.fixed(max_attempts=3, wait=0.0))
    redelivery = CallContext(task_id="t", delivery_key=f"{prefix}:deliveries:t")
    assert protected.run(redelivery, flaky) == "ok"
    assert int(redis_client.get(f"{prefix}:deliveries:t") or 0) == 1
