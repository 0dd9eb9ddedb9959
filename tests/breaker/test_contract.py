"""pybreaker's contract, run against the fleet breaker on the real Redis.

As pybreaker runs one test mixin against every storage, every behaviour here runs through
every way of calling the breaker: ``call``, the decorator, ``with calling()``, a generator, and
``await call_async`` (on ``redis.asyncio``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest
import redis
from celery.exceptions import Retry

from resilience_tasks import BreakerOpenError, BreakerPolicy
from resilience_tasks.breaker import FleetBreaker
from tests.breaker.support import Recorder, age, fail, make, ok


def via_call(breaker: FleetBreaker, func: Callable[[], Any]) -> Any:
    return breaker.call(func)


def via_decorator(breaker: FleetBreaker, func: Callable[[], Any]) -> Any:
    return breaker(func)()


def via_calling(breaker: FleetBreaker, func: Callable[[], Any]) -> Any:
    with breaker.calling():
        return func()


def via_generator(breaker: FleetBreaker, func: Callable[[], Any]) -> Any:
    def produce() -> Any:
        yield func()

    (value,) = breaker.call(produce)  # runs the generator to its end
    return value


def via_call_async(breaker: FleetBreaker, func: Callable[[], Any]) -> Any:
    async def coro() -> Any:
        return func()

    async def run() -> Any:
        try:
            return await breaker.call_async(coro)
        finally:
            await breaker.aclose()

    return asyncio.run(run())


WAYS = {
    "call": via_call,
    "decorator": via_decorator,
    "calling": via_calling,
    "generator": via_generator,
    "call_async": via_call_async,
}


@pytest.fixture(params=list(WAYS))
def way(request: pytest.FixtureRequest) -> Callable[[FleetBreaker, Callable[[], Any]], Any]:
    return WAYS[request.param]  # type: ignore[return-value]


Way = Callable[[FleetBreaker, Callable[[], Any]], Any]


def test_the_tripping_call_raises_circuit_breaker_error(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, fail_max=3)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            way(breaker, fail)
    assert breaker.fail_counter == 2
    with pytest.raises(pybreaker.CircuitBreakerError) as tripped:
        way(breaker, fail)
    assert isinstance(tripped.value.__cause__, ConnectionError)  # the traceback keeps it
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"
    calls: list[int] = []
    with pytest.raises(BreakerOpenError):
        way(breaker, lambda: calls.append(1))
    assert calls == []


def test_throw_new_error_on_trip_false_reraises_the_original(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, throw_new_error_on_trip=False, fail_max=2)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            way(breaker, fail)
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpenError):
        way(breaker, ok)


def test_a_success_resets_the_consecutive_count(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, fail_max=3)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            way(breaker, fail)
    assert way(breaker, ok) == "ok"
    assert breaker.fail_counter == 0
    assert breaker.current_state == "closed"


def test_a_failed_trial_counts_and_reopens(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, fail_max=2, reset_timeout=600)
    breaker.half_open()
    assert breaker.fail_counter == 0
    with pytest.raises(BreakerOpenError):
        way(breaker, fail)
    assert breaker.fail_counter == 1
    assert breaker.current_state == "open"
    # after a trip and a timeout, as pybreaker's test_failed_call_after_timeout
    breaker.close()
    for _ in range(2):
        with pytest.raises((ConnectionError, BreakerOpenError)):
            way(breaker, fail)
    age(breaker, redis_client, 601)
    with pytest.raises(BreakerOpenError) as reopened:
        way(breaker, fail)
    assert isinstance(reopened.value.__cause__, ConnectionError)
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"


def test_successful_trials_close_it(redis_client: redis.Redis, prefix: str, way: Way) -> None:
    breaker = make(redis_client, prefix, success_threshold=2, trial_calls=2)
    breaker.half_open()
    assert way(breaker, ok) == "ok"
    assert (breaker.current_state, breaker.success_counter) == ("half-open", 1)
    assert way(breaker, ok) == "ok"
    assert (breaker.current_state, breaker.success_counter, breaker.fail_counter) == (
        "closed",
        0,
        0,
    )


def test_user_exclusions_count_as_successes(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, fail_max=2, exclude=(LookupError,))
    assert breaker.excluded_exceptions == (LookupError,)
    with pytest.raises(ConnectionError):
        way(breaker, fail)

    def business() -> None:
        raise KeyError("no such account")

    with pytest.raises(KeyError):
        way(breaker, business)
    assert breaker.fail_counter == 0


def test_built_in_never_failures_are_ignored_and_kept_apart(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, fail_max=1)
    assert breaker.excluded_exceptions == ()
    assert Retry in breaker.never_failures

    def control() -> None:
        raise Retry()

    breaker.half_open()
    with pytest.raises(Retry):
        way(breaker, control)
    assert breaker.current_state == "half-open"  # neither a failed nor a successful trial
    assert breaker.admit().trial  # and its lease was handed back


def test_an_error_raised_inside_the_function_counts(
    redis_client: redis.Redis, prefix: str, way: Way
) -> None:
    breaker = make(redis_client, prefix, fail_max=5)

    def broken_client() -> None:
        raise TypeError("the client library tripped on the reply")

    def body() -> None:
        broken_client()

    with pytest.raises(TypeError):
        way(breaker, body)
    assert breaker.fail_counter == 1


def test_listeners_see_pybreaker_events(redis_client: redis.Redis, prefix: str, way: Way) -> None:
    recorder = Recorder()
    breaker = make(redis_client, prefix, listeners=(recorder,), fail_max=1)
    way(breaker, ok)
    with pytest.raises(BreakerOpenError):
        way(breaker, fail)
    assert recorder.events == [
        ("before",),
        ("success",),
        ("before",),
        ("failure", "ConnectionError"),
        ("state", "closed", "open"),
    ]


# -- caller errors: each way has its own shape of "wrong arguments" ----------------------------


def needs_one(x: int) -> int:
    return x


def needs_one_gen(x: int) -> Any:
    yield x


async def needs_one_async(x: int) -> int:
    return x


def wrong_async(breaker: FleetBreaker) -> None:
    async def run() -> None:
        try:
            await breaker.call_async(needs_one_async)
        finally:
            await breaker.aclose()

    asyncio.run(run())


def wrong_in_block(breaker: FleetBreaker) -> None:
    with breaker.calling():
        needs_one()  # type: ignore[call-arg]


CALLER_BUGS: dict[str, Callable[[FleetBreaker], Any]] = {
    "call": lambda b: b.call(needs_one),
    "decorator": lambda b: b(needs_one)(),
    "calling": wrong_in_block,
    "generator": lambda b: b.call(needs_one_gen),
    "call_async": lambda b: wrong_async(b),
    "call_admitted": lambda b: b.call_admitted(b.admit(), needs_one),
}


@pytest.mark.parametrize("bug", list(CALLER_BUGS))
def test_caller_errors_neither_trip_nor_count(
    redis_client: redis.Redis, prefix: str, bug: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=1)
    for _ in range(3):
        with pytest.raises(TypeError, match="argument"):
            CALLER_BUGS[bug](breaker)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0
    breaker.half_open()
    with pytest.raises(TypeError):
        CALLER_BUGS[bug](breaker)
    assert breaker.current_state == "half-open"
    assert breaker.admit().trial  # the trial's lease was handed back


# -- behaviours that do not depend on the way of calling ---------------------------------------


def test_defaults_are_pybreakers(redis_client: redis.Redis, prefix: str) -> None:
    default = pybreaker.CircuitBreaker()
    breaker = make(redis_client, prefix)
    assert BreakerPolicy().reset_timeout == default.reset_timeout == 60
    assert (breaker.fail_max, breaker.reset_timeout, breaker.success_threshold) == (5, 60, 1)
    assert breaker.open() is True  # throw_new_error_on_trip, pybreaker's default
    assert breaker.excluded_exceptions == () == default.excluded_exceptions
    assert breaker.listeners == ()
    assert breaker.name == "dep"


def test_generators_are_tracked_until_they_end(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix)

    @breaker
    def good(value: bool) -> Any:
        yield value

    @breaker
    def bad(value: bool) -> Any:
        sent = yield value
        raise NotImplementedError(sent)

    g, b = good(True), bad(True)
    next(b)
    with pytest.raises(NotImplementedError):
        b.send(True)
    assert breaker.fail_counter == 1
    assert next(g)
    with pytest.raises(StopIteration):
        next(g)
    assert breaker.fail_counter == 0
    closed_early = good(True)
    next(closed_early)
    closed_early.close()  # abandoned: nobody's verdict
    assert breaker.fail_counter == 0


def test_listener_calls_are_serialised(redis_client: redis.Redis, prefix: str) -> None:
    recorder = Recorder(pause=0.001)
    breaker = make(redis_client, prefix, listeners=(recorder,))

    def work() -> None:
        for _ in range(15):
            breaker.call(ok)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(recorder.events) == 4 * 15 * 2
    assert recorder.overlaps == 0


def test_listeners_can_be_added_and_removed(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix)
    first, second = Recorder(), Recorder()
    breaker.add_listeners(first, second)
    breaker.remove_listener(first)
    breaker.call(ok)
    assert (first.events, second.events) == ([], [("before",), ("success",)])


def test_setters_act_on_the_whole_fleet(redis_client: redis.Redis, prefix: str) -> None:
    here = make(redis_client, prefix)
    there = make(redis_client, prefix)  # another process: its own objects, the same Redis
    here.fail_max = 2
    here.success_threshold = 3
    assert (there.fail_max, there.success_threshold) == (2, 3)
    for _ in range(2):
        with pytest.raises((ConnectionError, BreakerOpenError)):
            there.call(fail)
    assert there.current_state == "open"
    here.reset_timeout = 1000
    assert there.reset_timeout == 1000
    with pytest.raises(BreakerOpenError) as refused:
        there.call(ok)
    assert 900 < refused.value.retry_after <= 1000
    age(there, redis_client, 120)  # past the policy's 60 s, not the fleet's 1000 s
    assert not there.admit().allowed
    there.clear_overrides()
    assert (here.fail_max, here.reset_timeout, here.success_threshold) == (5, 60, 1)
    assert here.admit().trial


def test_setters_validate(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix)
    with pytest.raises(ValueError, match="fail_max"):
        breaker.fail_max = 0
    with pytest.raises(ValueError, match="reset_timeout"):
        breaker.reset_timeout = -1
