"""The guard without Celery: retries, deferral decisions and delivery counting on real Redis."""

from __future__ import annotations

import pytest
import redis

from resilience_tasks import (
    BreakerPolicy,
    DeadLetteredError,
    Defer,
    RetryPolicy,
    StateUnavailableError,
)
from resilience_tasks.admission import Admitter, Deliveries
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.gate import Call
from resilience_tasks.guard import CallContext, GuardSettings, TaskGuard
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL


def guard(
    client: redis.Redis,
    prefix: str,
    retry: RetryPolicy,
    fail_max: int = 10,
    settings: GuardSettings | None = None,
) -> TaskGuard:
    fleet = FleetBreaker(
        "dep",
        BreakerPolicy(fail_max=fail_max, reset_timeout=5),
        RedisFleetStorage(client, "dep", KeySpace(prefix)),
    )
    admitter = Admitter(fleet, Deliveries(KeySpace(prefix), "team", max_deliveries=2))
    return TaskGuard(admitter, retry, settings or GuardSettings(), sleep=lambda _: None)


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
    assert waiting.value.park_on == "dep"
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
    redelivery = CallContext(task_id="t", redelivered=True)
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
    redelivery = CallContext(task_id="t", redelivered=True)
    assert protected.run(redelivery, flaky) == "ok"
    assert int(redis_client.get(KeySpace(prefix).deliveries("team", "t")) or 0) == 1


def test_failed_trials_are_free_only_up_to_a_bound(redis_client: redis.Redis, prefix: str) -> None:
    """Work whose own trials keep failing is charged, so it cannot hold the breaker open."""
    protected = guard(redis_client, prefix, RetryPolicy.none(), settings=GuardSettings())
    protected.breaker.half_open()

    def down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(Defer) as waiting:  # the first failed trial waits for the next one
        protected.run(CallContext(), down)
    assert (waiting.value.attempts, waiting.value.failed_trials) == (0, 1)
    assert waiting.value.park_on == "dep"
    protected.breaker.half_open()
    with pytest.raises(ConnectionError):  # the second is charged: RetryPolicy.none() ends it
        protected.run(CallContext(failed_trials=1), down)


def test_wrong_arguments_neither_trip_nor_retry(redis_client: redis.Redis, prefix: str) -> None:
    protected = guard(redis_client, prefix, RetryPolicy.fixed(max_attempts=5, wait=0.0), 2)
    calls: list[str] = []

    def fetch(url: str) -> str:
        calls.append(url)
        return url

    for _ in range(5):
        with pytest.raises(TypeError):
            protected.run(CallContext(), fetch)  # no argument: the caller's bug
    assert calls == []
    assert protected.breaker.current_state == "closed"
    assert protected.run(CallContext(call=Call(("u",), {})), fetch) == "u"


def test_a_type_error_inside_the_body_is_an_ordinary_failure(
    redis_client: redis.Redis, prefix: str
) -> None:
    protected = guard(redis_client, prefix, RetryPolicy.fixed(max_attempts=3, wait=0.0), 2)
    calls: list[int] = []

    def body() -> None:
        calls.append(1)
        raise TypeError("the client library's own bug")

    with pytest.raises(Defer):  # two failures opened the breaker; the third attempt waits
        protected.run(CallContext(), body)
    assert len(calls) == 2


def test_an_unreachable_state_store_is_not_a_failure(prefix: str) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    protected = guard(dead, prefix, RetryPolicy(), settings=GuardSettings(state_wait=0.3))
    calls: list[int] = []
    with pytest.raises(StateUnavailableError):
        protected.run(CallContext(), lambda: calls.append(1))
    assert calls == []  # nothing ran, nothing was charged: the message goes back


def test_a_call_that_ran_keeps_its_result_when_its_outcome_cannot_be_recorded(
    prefix: str,
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    protected = guard(client, prefix, RetryPolicy.none(), fail_max=1)
    pool = client.connection_pool

    def body_during_which_the_state_store_goes_away() -> str:
        pool.connection_kwargs["port"] = 1  # every new connection now fails
        pool.disconnect()
        return "done"

    try:
        assert protected.run(CallContext(), body_during_which_the_state_store_goes_away) == "done"

        def failing_body_during_an_outage() -> None:
            raise TimeoutError("the dependency failed too")

        pool.connection_kwargs["port"] = 6379
        pool.disconnect()
        protected.breaker.close()

        def fails_and_takes_the_store_away() -> None:
            pool.connection_kwargs["port"] = 1
            pool.disconnect()
            failing_body_during_an_outage()

        with pytest.raises(TimeoutError):  # the call's own error, not the state store's
            protected.run(CallContext(), fails_and_takes_the_store_away)
    finally:
        pool.connection_kwargs["port"] = 6379
        pool.disconnect()
