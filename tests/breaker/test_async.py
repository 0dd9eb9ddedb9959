"""``await breaker.call_async(...)`` on ``redis.asyncio``: the same scripts and keys as ``call``,
no blocking call on the event loop, and the fleet's trial limit holds for concurrent tasks.
Plain pytest: each test drives its own loop with ``asyncio.run``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from resilience_tasks import BreakerOpenError, BreakerPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.keys import KeySpace
from tests.breaker.support import make
from tests.breaker.test_fleet_breaker import CountingRedis
from tests.conftest import REDIS_URL

CONTENDERS = 12


def run(breaker: FleetBreaker, main: Any) -> Any:
    """``asyncio.run(main())``, closing the connections the breaker opened on that loop."""

    async def scoped() -> Any:
        try:
            return await main()
        finally:
            await breaker.aclose()

    return asyncio.run(scoped())


async def until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_exactly_one_of_many_concurrent_trials_goes_through(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, trial_calls=1)
    breaker.half_open()
    entered: list[int] = []

    async def main() -> list[Any]:
        release = asyncio.Event()

        async def trial() -> str:
            entered.append(1)
            await release.wait()  # the trial stays in flight while the others ask
            return "ok"

        tasks = [asyncio.create_task(breaker.call_async(trial)) for _ in range(CONTENDERS)]
        await until(lambda: sum(task.done() for task in tasks) == CONTENDERS - 1)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(breaker, main)
    assert entered == [1]
    assert results.count("ok") == 1
    refused = [r for r in results if isinstance(r, BreakerOpenError)]
    assert len(refused) == CONTENDERS - 1
    assert all(r.state == "half-open" for r in refused)
    assert breaker.current_state == "closed"


def test_the_event_loop_never_waits_on_the_sync_client(prefix: str) -> None:
    client = CountingRedis.from_url(REDIS_URL)
    client.commands = []
    breaker = make(client, prefix, fail_max=2)

    async def fail() -> None:
        raise ConnectionError("down")

    async def ok() -> str:
        return "ok"

    async def main() -> None:
        assert await breaker.call_async(ok) == "ok"
        with pytest.raises(ConnectionError):
            await breaker.call_async(fail)
        with pytest.raises(BreakerOpenError):
            await breaker.call_async(fail)  # trips
        with pytest.raises(BreakerOpenError):
            await breaker.call_async(ok)  # refused

    run(breaker, main)
    assert client.commands == []  # every round trip went through redis.asyncio
    assert breaker.current_state == "open"  # the same keys: the sync side sees it
    assert breaker.fail_counter == 2


def test_sync_and_async_callers_share_one_breaker(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix, fail_max=2)
    breaker.open()

    async def ok() -> str:
        return "ok"

    async def main() -> None:
        with pytest.raises(BreakerOpenError):
            await breaker.call_async(ok)

    run(breaker, main)
    breaker.half_open()
    assert run(breaker, lambda: breaker.call_async(ok)) == "ok"
    assert breaker.current_state == "closed"


def test_an_async_client_can_be_given(redis_client: redis.Redis, prefix: str) -> None:
    async def main() -> str:
        async_client = aioredis.Redis.from_url(REDIS_URL)
        storage = RedisFleetStorage(redis_client, "dep", KeySpace(prefix), async_client)
        breaker = FleetBreaker("dep", BreakerPolicy(), storage)

        async def ok() -> str:
            return "ok"

        try:
            result: str = await breaker.call_async(ok)
            assert breaker.asyncio_client() is async_client
            return result
        finally:
            await async_client.aclose()

    assert asyncio.run(main()) == "ok"


def test_coroutine_functions_are_decorated_as_coroutines(
    redis_client: redis.Redis, prefix: str
) -> None:
    breaker = make(redis_client, prefix, fail_max=1)

    @breaker
    async def fetch(value: int) -> int:
        if value < 0:
            raise ConnectionError("down")
        return value

    assert asyncio.iscoroutinefunction(fetch)
    assert run(breaker, lambda: fetch(3)) == 3
    with pytest.raises(BreakerOpenError):
        run(breaker, lambda: fetch(-1))
    assert breaker.current_state == "open"


def test_a_cancelled_trial_hands_its_lease_back(redis_client: redis.Redis, prefix: str) -> None:
    breaker = make(redis_client, prefix)
    breaker.half_open()

    async def main() -> None:
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(breaker.call_async(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(breaker, main)
    assert breaker.current_state == "half-open"  # nobody's verdict
    assert breaker.admit().trial
