"""The retry budget, the concurrency limit and the result cache on a real 3-node Redis Cluster:
every script's keys share the deployment's hash tag, so none is refused for ``CROSSSLOT``, on
the sync and the asyncio clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from resilience_tasks.fallback.cache import ResultCache
from resilience_tasks.fallback.concurrency import FleetConcurrencyLimit
from resilience_tasks.fallback.policy import Concurrency, RetryBudget
from resilience_tasks.fallback.retry_budget import FleetRetryBudget
from resilience_tasks.state.connection import connect
from resilience_tasks.state.keys import KeySpace
from tests.state.servers import redis_cluster


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def client(ports: list[int]) -> redis.RedisCluster:
    made = connect("redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports))
    assert isinstance(made, redis.RedisCluster)
    return made


@pytest.fixture
def keys() -> KeySpace:
    return KeySpace(f"rt-{uuid.uuid4().hex[:8]}")


def async_client(ports: list[int]) -> aioredis.RedisCluster:
    return aioredis.RedisCluster(
        startup_nodes=[aioredis.cluster.ClusterNode("127.0.0.1", port) for port in ports]
    )


def test_the_three_primitives_run_on_the_cluster(
    client: redis.RedisCluster, keys: KeySpace, ports: list[int]
) -> None:
    budget = FleetRetryBudget(client, keys, "llm", RetryBudget(ratio=0.5, min_per_second=0))
    limit = FleetConcurrencyLimit(client, keys, "llm", Concurrency(limit=2))
    cache = ResultCache(client, keys, "answer")

    for _ in range(4):
        budget.deposit()
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]
    assert budget.balance()["calls"] == 4

    first, second = limit.acquire(), limit.acquire()
    assert first is not None and second is not None and limit.acquire() is None
    assert limit.release(first, "drop") and limit.current_limit() == 1.0
    assert limit.in_flight() == 1

    assert cache.put(("q",), {}, {"a": 1}, ttl=60, provider="p")
    hit = cache.get(("q",), {})
    assert hit is not None and hit.value == {"a": 1}

    async def main() -> None:
        aclient = async_client(ports)
        try:
            await budget.deposit_async(aclient)
            await budget.deposit_async(aclient)
            assert await budget.withdraw_async(aclient)
            assert (await budget.balance_async(aclient))["retries"] == 3
            assert await limit.acquire_async(aclient) is None  # limit 1, one in flight
            assert await limit.release_async(aclient, second, "success")
            assert await limit.in_flight_async(aclient) == 0
            assert await limit.current_limit_async(aclient) == 2.0
            assert await cache.put_async(aclient, ("r",), {}, [1], ttl=60, provider="q")
            hit = await cache.get_async(aclient, ("r",), {})
            assert hit is not None and hit.provider == "q"
        finally:
            await aclient.aclose()

    asyncio.run(main())
