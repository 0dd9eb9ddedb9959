"""Slow calls open the breaker: ``slow_call_max`` calls in a row that took at least
``slow_call_duration``, successes and failures alike, so a hanging dependency is cut off after a
few timeouts rather than after ``fail_max`` of them.

Most tests tell the breaker a call's duration (``record(..., duration=)``), so no classification
depends on the machine's load. The tests of the ways to call time real calls, and only ever ask
whether a call was slow: they sleep twice the threshold, which a loaded machine can only lengthen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from resilience_tasks import BreakerOpenError
from resilience_tasks.admission import Admitter, Deliveries
from resilience_tasks.breaker import FleetBreaker, Verdict
from resilience_tasks.state.keys import KeySpace
from tests.breaker.support import Recorder, make
from tests.breaker.test_async import run
from tests.breaker.test_fleet_breaker import CountingRedis
from tests.conftest import REDIS_URL

LIMIT = 1.0  # slow_call_duration where the test gives durations itself
SLOW = 60.0
FAST = 0.0
TIMED_LIMIT = 0.25  # slow_call_duration where real calls are timed ...
NAP = 2 * TIMED_LIMIT  # ... and how long a slow one sleeps


def told(breaker: FleetBreaker, duration: float, error: BaseException | None = None) -> Verdict:
    """Admit a call and tell the breaker it took ``duration`` seconds and ended with ``error``."""
    admission = breaker.admit()
    assert admission.allowed
    return breaker.record(admission, error, duration=duration)


def slow_count(client: redis.Redis, breaker: FleetBreaker) -> int:
    return int(client.hget(breaker.storage.key, "slow") or 0)


def test_slow_successes_in_a_row_open_the_breaker(redis_client: redis.Redis, prefix: str) -> None:
    recorder = Recorder()
    breaker = make(
        redis_client,
        prefix,
        listeners=(recorder,),
        fail_max=100,
        slow_call_duration=LIMIT,
        slow_call_max=3,
    )
    verdicts = [told(breaker, SLOW) for _ in range(3)]
    assert [v.counted for v in verdicts] == ["success"] * 3
    assert [v.slow_calls for v in verdicts] == [1, 2, 3]
    assert [v.opened for v in verdicts] == [False, False, True]
    assert verdicts[2].cause == "slow_calls" and verdicts[2].opened_by_slowness
    assert verdicts[2].retry_after == breaker.policy.reset_timeout
    assert breaker.current_state == "open"
    assert not breaker.admit().allowed
    # a success that opened the breaker: the transition, then the success (pybreaker's order)
    assert [e[0] for e in recorder.events][-2:] == ["state", "success"]
    assert recorder.states() == [("closed", "open")]


def test_the_threshold_itself_is_slow(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, slow_call_duration=LIMIT, slow_call_max=1)
    assert not told(breaker, LIMIT * 0.99).slow
    assert told(breaker, LIMIT).opened


def test_a_fast_success_ends_the_run(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, slow_call_duration=LIMIT, slow_call_max=3)
    told(breaker, SLOW)
    told(breaker, SLOW)
    fast = told(breaker, FAST)
    assert not fast.slow and fast.slow_calls == 0
    assert slow_count(redis_client, breaker) == 0
    told(breaker, SLOW)
    assert not told(breaker, SLOW).opened
    assert told(breaker, SLOW).opened


def test_a_fast_failure_leaves_the_run_alone(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=100, slow_call_duration=LIMIT, slow_call_max=3)
    told(breaker, SLOW)
    told(breaker, SLOW)
    failed = told(breaker, FAST, ConnectionError("refused"))
    assert failed.counted == "failure" and not failed.slow and failed.slow_calls == 2
    last = told(breaker, SLOW)
    assert last.opened and last.cause == "slow_calls"


def test_timeouts_open_it_long_before_fail_max(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=10, slow_call_duration=LIMIT, slow_call_max=2)
    first = told(breaker, SLOW, TimeoutError("read timed out"))
    assert first.counted == "failure" and first.slow and not first.opened
    second = told(breaker, SLOW, TimeoutError("read timed out"))
    assert second.opened and second.cause == "slow_calls" and second.failures == 2
    assert breaker.current_state == "open"
    assert breaker.fail_counter == 2  # opening keeps the counts, as pybreaker does


def test_slow_successes_and_slow_failures_make_one_run(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=10, slow_call_duration=LIMIT, slow_call_max=3)
    told(breaker, SLOW)
    told(breaker, SLOW, TimeoutError())
    last = told(breaker, SLOW)
    assert last.opened and last.slow_calls == 3
    assert breaker.fail_counter == 0  # the last slow call succeeded: failures were reset


def test_fail_max_is_named_when_both_limits_are_reached(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=2, slow_call_duration=LIMIT, slow_call_max=2)
    told(breaker, SLOW, TimeoutError())
    verdict = told(breaker, SLOW, TimeoutError())
    assert verdict.opened and verdict.cause == "failures" and not verdict.opened_by_slowness


def test_a_slow_trial_opens_the_breaker_again(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, slow_call_duration=LIMIT, reset_timeout=90)
    breaker.half_open()
    admission = breaker.admit()
    assert admission.trial
    verdict = breaker.record(admission, None, duration=SLOW)
    assert verdict.counted == "success" and verdict.opened and verdict.retry_after == 90
    assert verdict.trial_failed and admission.trial_failed and verdict.cause == "slow_trial"
    assert breaker.current_state == "open" and breaker.fail_counter == 0


def test_a_slow_failed_trial_is_a_failed_trial(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, slow_call_duration=LIMIT)
    breaker.half_open()
    verdict = told(breaker, SLOW, TimeoutError())
    assert verdict.trial_failed and verdict.cause == "failed_trial" and verdict.slow_calls == 1
    assert breaker.current_state == "open"


def test_opening_keeps_the_run_and_closing_forgets_it(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, slow_call_duration=LIMIT, slow_call_max=3)
    told(breaker, SLOW)
    told(breaker, SLOW)
    breaker.open()
    assert slow_count(redis_client, breaker) == 2
    breaker.half_open()
    told(breaker, FAST)  # a fast trial closes the breaker
    assert breaker.current_state == "closed" and slow_count(redis_client, breaker) == 0
    told(breaker, SLOW)
    breaker.close()
    assert slow_count(redis_client, breaker) == 0


def test_off_by_default(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=100)
    verdicts = [told(breaker, 3600.0) for _ in range(5)]
    verdicts += [told(breaker, 3600.0, TimeoutError()) for _ in range(5)]
    assert not any(v.slow or v.opened for v in verdicts)
    assert breaker.current_state == "closed" and slow_count(redis_client, breaker) == 0


@pytest.fixture
def counting() -> Iterator[CountingRedis]:
    client = cast(CountingRedis, CountingRedis.from_url(REDIS_URL))
    client.commands = []
    yield client
    client.close()


def test_a_fast_success_with_nothing_pending_writes_nothing(
    counting: CountingRedis, prefix: str
) -> None:
    breaker = make(counting, prefix, slow_call_duration=LIMIT, slow_call_max=5)
    told(breaker, FAST)  # loads the admission script
    told(breaker, SLOW)  # loads the success script
    told(breaker, FAST)  # ends the run of slow calls: a write
    counting.commands.clear()
    for _ in range(5):
        told(breaker, FAST)
    assert counting.commands == ["EVALSHA"] * 5  # the admissions only
    counting.commands.clear()
    told(breaker, SLOW)
    told(breaker, FAST)
    assert counting.commands == ["EVALSHA"] * 4  # a slow success, and the success that ends it


def test_an_admission_that_does_not_report_the_run_still_ends_it(
    redis_client: redis.Redis, prefix: str
) -> None:
    """A task's admission script keeps only the first five values of ``breaker_admit``: a fast
    success then writes whenever the policy watches slow calls, so the run still ends."""
    breaker = make(redis_client, prefix, slow_call_duration=LIMIT, slow_call_max=2)
    admitter = Admitter(breaker, Deliveries(KeySpace(prefix), "team"))

    def through_the_task_admission(duration: float) -> Verdict:
        admission = admitter.admit().admission
        return breaker.record(admission, None, duration=duration)

    through_the_task_admission(SLOW)
    through_the_task_admission(FAST)
    assert slow_count(redis_client, breaker) == 0
    through_the_task_admission(SLOW)
    assert through_the_task_admission(SLOW).opened


# -- the ways to call time the call ------------------------------------------------------------


def timed(client: redis.Redis, prefix: str, **policy: Any) -> FleetBreaker:
    return make(client, prefix, slow_call_duration=TIMED_LIMIT, slow_call_max=2, **policy)


def test_call_counts_a_slow_function(redis_client: redis.Redis, prefix: str) -> None:
    breaker = timed(redis_client, prefix, fail_max=10)

    @breaker
    def hanging() -> str:
        time.sleep(NAP)
        return "late"

    assert hanging() == "late"
    assert hanging() == "late"  # the call that opened it still returns its result
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpenError):
        hanging()


def test_call_opens_on_timeouts_with_the_trip_error(redis_client: redis.Redis, prefix: str) -> None:
    breaker = timed(redis_client, prefix, fail_max=10)

    def times_out() -> None:
        time.sleep(NAP)
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError):
        breaker.call(times_out)
    with pytest.raises(BreakerOpenError) as tripped:
        breaker.call(times_out)
    assert isinstance(tripped.value.__cause__, TimeoutError)
    assert breaker.fail_counter == 2 and breaker.current_state == "open"


def test_call_admitted_and_calling_are_timed(redis_client: redis.Redis, prefix: str) -> None:
    breaker = timed(redis_client, prefix)
    admission = breaker.admit()
    breaker.call_admitted(admission, time.sleep, NAP)
    assert admission.verdict is not None and admission.verdict.slow
    with breaker.calling():
        time.sleep(NAP)
    assert breaker.current_state == "open"


def test_call_async_counts_a_slow_coroutine(redis_client: redis.Redis, prefix: str) -> None:
    breaker = timed(redis_client, prefix, fail_max=10)

    async def hanging() -> str:
        await asyncio.sleep(NAP)
        return "late"

    async def times_out() -> None:
        await asyncio.sleep(NAP)
        raise TimeoutError("read timed out")

    async def main() -> None:
        assert await breaker.call_async(hanging) == "late"
        with pytest.raises(BreakerOpenError) as tripped:
            await breaker.call_async(times_out)
        assert isinstance(tripped.value.__cause__, TimeoutError)

    run(breaker, main)
    assert breaker.current_state == "open" and slow_count(redis_client, breaker) == 2


def test_a_generator_is_not_timed(redis_client: redis.Redis, prefix: str) -> None:
    """How long a generator runs is up to its consumer: it is never a slow call."""
    breaker = make(redis_client, prefix, slow_call_duration=TIMED_LIMIT, slow_call_max=1)

    def items() -> Iterator[int]:
        yield 1
        yield 2

    for _ in breaker.call(items):
        time.sleep(NAP)
    assert breaker.current_state == "closed" and slow_count(redis_client, breaker) == 0
