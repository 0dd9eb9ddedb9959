"""What only a fleet breaker does: trial leases, failure rate, fleet-wide state, cost per call,
and the admission script's contract with other scripts (Cluster-safe keys, reusable function)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from resilience_tasks import BreakerOpenError
from resilience_tasks.breaker import Admission, FleetBreaker, scripts
from resilience_tasks.state.lua import CLOCK
from tests.breaker.support import Recorder, age, expire_leases, fail, make, ok
from tests.conftest import REDIS_URL


def trip(breaker: FleetBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises((ConnectionError, BreakerOpenError)):
            breaker.call(fail)


def test_refusal_says_when_a_trial_may_go(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=1, reset_timeout=30)
    trip(breaker, 1)
    with pytest.raises(BreakerOpenError) as refused:
        breaker.call(ok)
    assert 25 < refused.value.retry_after <= 30
    assert refused.value.state == "open"


def test_the_timeout_opens_the_way_to_exactly_the_permitted_trials(
    redis_client: redis.Redis, prefix: str
) -> None:
    recorder = Recorder()
    breaker = make(
        redis_client, prefix, listeners=(recorder,), fail_max=1, reset_timeout=600, trial_calls=2
    )
    trip(breaker, 1)
    age(breaker, redis_client, 601)
    admissions = [breaker.admit() for _ in range(5)]
    assert [a.trial for a in admissions] == [True, True, False, False, False]
    assert all(0 < a.retry_after <= 600 for a in admissions[2:])
    assert recorder.states() == [("closed", "open"), ("open", "half-open")]  # reported once


def test_an_abandoned_trial_lease_lapses(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix)
    breaker.half_open()
    assert breaker.admit().trial  # this trial's worker "dies" and never reports
    assert not breaker.admit().allowed
    expire_leases(breaker, redis_client)
    assert breaker.admit().trial


def test_a_late_report_of_a_lapsed_trial_changes_nothing(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix)
    breaker.half_open()
    stale = breaker.admit()
    expire_leases(breaker, redis_client)
    fresh = breaker.admit()
    verdict = breaker.record(stale, ConnectionError("late"))
    assert not verdict.trial_failed and verdict.transition is None
    assert breaker.current_state == "half-open"
    breaker.record(fresh, None)
    assert breaker.current_state == "closed"


def test_record_tells_the_caller_of_a_failed_trial(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, reset_timeout=90)
    breaker.half_open()
    admission = breaker.admit()
    with pytest.raises(ConnectionError):  # call_admitted never turns it into CircuitBreakerError
        breaker.call_admitted(admission, fail)
    assert admission.trial_failed
    assert admission.verdict is not None and admission.verdict.opened
    assert admission.verdict.retry_after == 90
    assert breaker.fail_counter == 1
    ordinary = make(redis_client, prefix + "-b", fail_max=3)
    closed = ordinary.admit()
    assert not ordinary.record(closed, ConnectionError()).trial_failed
    assert not closed.trial_failed


def test_failure_rate_trips_when_failures_never_run_consecutively(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=5, failure_rate=0.6, min_calls=10, window=60)
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
    first = make(redis_client, prefix)
    second = make(redis_client, prefix)
    first.open()
    assert second.current_state == "open"
    with pytest.raises(BreakerOpenError):
        second.call(ok)
    second.half_open()
    assert first.admit().trial
    first.reset()
    assert second.current_state == "closed"
    assert second.call(ok) == "ok"


def test_opening_by_hand_keeps_the_count_and_closing_forgets_it(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix)
    trip(breaker, 2)
    breaker.open()
    assert breaker.fail_counter == 2 and breaker._state_storage.opened_at is not None
    breaker.close()
    assert breaker.fail_counter == 0


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
    breaker = make(client, prefix, fail_max=1)
    trip(breaker, 1)
    assert breaker.current_state == "open"
    assert breaker._state_storage.opened_at is not None
    breaker.fail_max = 3
    assert breaker.fail_max == 3


def test_the_admission_function_composes_with_other_scripts(
    redis_client: redis.Redis, prefix: str
) -> None:
    """Another module's script can prepend CLOCK and call ``breaker_admit`` itself."""
    breaker = make(redis_client, prefix, reset_timeout=100)
    composed = redis_client.register_script(
        CLOCK
        + scripts.ADMIT_FUNCTION
        + """
local decision, state, failures, wait, transition = breaker_admit(
  KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {decision, state, failures, wait, transition}
"""
    )
    keys = breaker._storage.keys_all[:3]
    assert composed(keys, [100, 1, 60, 0, "a"])[:2] == [1, b"closed"]
    breaker.open()
    decision, state, _, wait, _ = composed(keys, [100, 1, 60, 0, "b"])
    assert (decision, state) == (0, b"open") and 90 < float(wait) <= 100
    breaker.reset_timeout = 5  # the hash's override beats the ARGV default
    age(breaker, redis_client, 6)
    assert composed(keys, [100, 1, 60, 0, "c"]) == [2, b"half-open", 0, b"0", b"open>half-open"]


def unreachable(client: redis.Redis) -> None:
    """Point the real client at a port where nothing listens (the state store went away)."""
    client.connection_pool.connection_kwargs["port"] = 1  # privileged, never a Redis here
    client.connection_pool.reset()


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_a_lost_state_store_after_the_call_leaves_its_outcome_standing(
    prefix: str, outcome: str
) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    breaker = make(client, prefix)
    trip(breaker, 1)  # a failure pending: the outcome needs a write

    def call_then_lose_redis() -> str:
        unreachable(client)
        if outcome == "failure":
            raise ValueError("the dependency's own error")
        return "ok"

    if outcome == "success":
        assert breaker.call(call_then_lose_redis) == "ok"
    else:
        with pytest.raises(ValueError):
            breaker.call(call_then_lose_redis)
    admission = Admission(True, False, "closed", 1, 0.0, 0, "t")
    with pytest.raises(redis.ConnectionError):  # record() itself tells its caller
        breaker.record(admission, None)
