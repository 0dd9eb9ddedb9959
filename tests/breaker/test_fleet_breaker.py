"""The fleet breaker against the real Redis: states, thresholds, listeners, cost per call."""

from __future__ import annotations

import time
from typing import Any

import pybreaker
import pytest
import redis
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from resilience_tasks import BreakerOpenError, BreakerPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL


class Recorder(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def state_change(self, cb: Any, old: Any, new: Any) -> None:
        self.events.append(("state", old.name if old else "", new.name))

    def failure(self, cb: Any, exc: BaseException) -> None:
        self.events.append(("failure", type(exc).__name__))

    def success(self, cb: Any) -> None:
        self.events.append(("success",))


def make(
    client: redis.Redis, prefix: str, listeners: tuple[Any, ...] = (), **policy: Any
) -> FleetBreaker:
    storage = RedisFleetStorage(client, "dep", KeySpace(prefix))
    return FleetBreaker(
        "dep",
        BreakerPolicy(**policy),
        storage,
        listeners=listeners,
        not_failures=(Retry, Ignore, SoftTimeLimitExceeded),
    )


def fail() -> None:
    raise ConnectionError("dependency down")


def ok() -> str:
    return "ok"


def trip(breaker: FleetBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises((ConnectionError, BreakerOpenError)):
            breaker.call(fail)


def test_opens_after_fail_max_consecutive_failures(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=3, reset_timeout=30)
    trip(breaker, 2)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 2
    trip(breaker, 1)
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpenError) as refused:
        breaker.call(ok)
    assert 29 < refused.value.retry_after <= 30
    assert isinstance(refused.value, pybreaker.CircuitBreakerError)


def test_a_success_resets_the_consecutive_count(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=3)
    trip(breaker, 2)
    assert breaker.call(ok) == "ok"
    assert breaker.fail_counter == 0
    trip(breaker, 2)
    assert breaker.current_state == "closed"


@pytest.mark.parametrize(
    "error", [KeyError("business"), Retry(), Ignore(), SoftTimeLimitExceeded()]
)
def test_excluded_and_control_exceptions_never_count(
    redis_client: redis.Redis, prefix: str, error: BaseException
) -> None:
    breaker = make(redis_client, prefix, fail_max=1, exclude=(KeyError,))

    def raise_it() -> None:
        raise error

    for _ in range(3):
        with pytest.raises(type(error)):
            breaker.call(raise_it)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0


def test_half_open_trial_success_closes(redis_client: redis.Redis, prefix: str) -> None:
    recorder = Recorder()
    breaker = make(redis_client, prefix, listeners=(recorder,), fail_max=1, reset_timeout=0.3)
    trip(breaker, 1)
    time.sleep(0.35)
    assert breaker.call(ok) == "ok"
    assert breaker.current_state == "closed"
    states = [event[1:] for event in recorder.events if event[0] == "state"]
    assert states == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


def test_half_open_trial_failure_reopens_for_another_timeout(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=1, reset_timeout=0.3)
    trip(breaker, 1)
    time.sleep(0.35)
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpenError):
        breaker.call(ok)


def test_half_open_admits_exactly_the_permitted_trials(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=1, reset_timeout=0.2, trial_calls=2)
    trip(breaker, 1)
    time.sleep(0.25)
    admissions = [breaker.admit() for _ in range(5)]
    assert [a.trial for a in admissions] == [True, True, False, False, False]
    assert all(0 < a.retry_after <= 0.2 for a in admissions[2:])


def test_success_threshold_needs_that_many_good_trials(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=1, reset_timeout=0.2, success_threshold=2)
    trip(breaker, 1)
    time.sleep(0.25)
    breaker.call(ok)
    assert breaker.current_state == "half-open"
    breaker.call(ok)
    assert breaker.current_state == "closed"


def test_an_abandoned_trial_lease_expires(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=1, reset_timeout=0.2, trial_lease=0.3)
    trip(breaker, 1)
    time.sleep(0.25)
    assert breaker.admit().trial  # this trial's worker "dies" and never reports
    assert not breaker.admit().allowed
    time.sleep(0.35)
    assert breaker.admit().trial


def test_failure_rate_trips_when_failures_never_run_consecutively(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=5, failure_rate=0.6, min_calls=10, window=10)
    calls = 0
    while breaker.current_state == "closed" and calls < 30:
        breaker.call(ok)  # ok, fail, fail, ok, fail, fail ...: 66% failures, never 5 in a row
        trip(breaker, 2)
        calls += 3
    assert breaker.current_state == "open"
    assert calls == 12  # the 11th call, a failure, found 7 of 11 failed: over 60%


def test_failure_rate_waits_for_min_calls(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=50, failure_rate=0.5, min_calls=20)
    for _ in range(4):
        trip(breaker, 2)
        breaker.call(ok)
    assert breaker.current_state == "closed"


def test_manual_open_close_half_open_are_fleet_wide(redis_client: redis.Redis, prefix: str) -> None:
    first = make(redis_client, prefix, reset_timeout=60)
    second = make(redis_client, prefix, reset_timeout=60)
    first.open()
    assert second.current_state == "open"
    with pytest.raises(BreakerOpenError):
        second.call(ok)
    second.half_open()
    assert first.admit().trial
    first.reset()
    assert second.current_state == "closed"
    assert second.call(ok) == "ok"


class CountingRedis(redis.Redis):
    """The real client, counting the commands it sends (one command = one round trip here)."""

    commands: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


def test_a_closed_breaker_costs_one_round_trip_per_call(prefix: str) -> None:
    client = CountingRedis.from_url(REDIS_URL)
    client.commands = []
    breaker = make(client, prefix, fail_max=5)
    breaker.call(ok)  # loads the script
    client.commands.clear()
    for _ in range(10):
        breaker.call(ok)
    assert client.commands == ["EVALSHA"] * 10


def test_works_with_a_decoding_client(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    breaker = make(client, prefix, fail_max=1, reset_timeout=0.2)
    trip(breaker, 1)
    assert breaker.current_state == "open"
    assert breaker._state_storage.opened_at is not None
