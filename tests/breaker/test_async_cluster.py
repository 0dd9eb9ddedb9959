"""``call_async`` on a real 3-node Redis Cluster: the asyncio client is derived from the sync
``RedisCluster`` and runs the same scripts on the same (one-slot) keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis

from resilience_tasks import BreakerOpenError, BreakerPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.connection import connect
from resilience_tasks.state.keys import KeySpace
from tests.state.servers import redis_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.RedisCluster]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        made = connect("redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports))
        assert isinstance(made, redis.RedisCluster)
        yield made


def test_call_async_trips_and_refuses_on_a_cluster(cluster: redis.RedisCluster) -> None:
    keys = KeySpace(f"rt-{uuid.uuid4().hex[:8]}")
    breaker = FleetBreaker(
        "llm", BreakerPolicy(fail_max=2), RedisFleetStorage(cluster, "llm", keys)
    )

    async def down() -> None:
        raise ConnectionError("dependency down")

    async def main() -> None:
        try:
            with pytest.raises(ConnectionError):
                await breaker.call_async(down)
            with pytest.raises(BreakerOpenError):  # the tripping call
                await breaker.call_async(down)
            with pytest.raises(BreakerOpenError):
                await breaker.call_async(down)
            assert isinstance(breaker.asyncio_client(), redis.asyncio.RedisCluster)
        finally:
            await breaker.aclose()

    asyncio.run(main())
    assert breaker.current_state == "open"  # the sync client reads what the async one wrote
    assert breaker.fail_counter == 2
