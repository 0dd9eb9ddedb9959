"""The fleet concurrency limit on the real Redis: the limit across processes, leases of a
killed worker, AIMD moves, harmless releases, and the asyncio twins."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from resilience_tasks.errors import ConfigurationError
from resilience_tasks.fallback.concurrency import FleetConcurrencyLimit, Lease
from resilience_tasks.fallback.policy import Concurrency
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL, wait_for


def make(client: redis.Redis, prefix: str, **policy: Any) -> FleetConcurrencyLimit:
    policy.setdefault("lease", 60.0)
    return FleetConcurrencyLimit(client, KeySpace(prefix), "dep", Concurrency(**policy))


def held(limit: FleetConcurrencyLimit, count: int) -> list[Lease]:
    leases = [limit.acquire() for _ in range(count)]
    assert all(leases)
    return [lease for lease in leases if lease is not None]


def test_grants_up_to_the_limit_then_refuses(redis_client: redis.Redis, prefix: str) -> None:
    limit = make(redis_client, prefix, limit=3)
    leases = held(limit, 3)
    assert [lease.in_flight for lease in leases] == [1, 2, 3]
    assert {lease.limit for lease in leases} == {3.0}
    assert leases[0].resource == "dep" and len({lease.token for lease in leases}) == 3
    assert limit.acquire() is None
    assert limit.in_flight() == 3
    assert limit.release(leases[0], "ignore")
    assert limit.acquire("mine") is not None
    assert limit.acquire() is None


def test_a_token_holding_a_lease_gets_it_back_without_a_second_slot(
    redis_client: redis.Redis, prefix: str
) -> None:
    limit = make(redis_client, prefix, limit=2)
    first = limit.acquire("task-1")
    again = limit.acquire("task-1")
    assert first is not None and again is not None
    assert again.in_flight == 1 and limit.in_flight() == 1
    assert limit.acquire("task-2") is not None
    assert limit.acquire("task-3") is None


def test_successes_raise_the_limit_up_to_the_ceiling(
    redis_client: redis.Redis, prefix: str
) -> None:
    limit = make(redis_client, prefix, limit=4, max_limit=6)
    assert limit.current_limit() == 4.0
    limit.release(held(limit, 1)[0], "success")
    assert limit.current_limit() == 4.25  # a whole limit's worth of successes adds one
    for _ in range(60):
        limit.release(held(limit, 1)[0], "success")
    assert limit.current_limit() == 6.0
    assert len(held(limit, 6)) == 6
    assert limit.acquire() is None


def test_a_drop_multiplies_the_limit_by_backoff_never_below_min_limit(
    redis_client: redis.Redis, prefix: str
) -> None:
    limit = make(redis_client, prefix, limit=6, min_limit=2, backoff=0.5)
    limit.release(held(limit, 1)[0], "drop")
    assert limit.current_limit() == 3.0
    limit.release(held(limit, 1)[0], "drop")
    assert limit.current_limit() == 2.0  # 1.5, held at min_limit
    limit.release(held(limit, 1)[0], "drop")
    assert limit.current_limit() == 2.0
    leases = held(limit, 2)
    assert limit.acquire() is None
    limit.release(leases[0], "ignore")
    assert limit.current_limit() == 2.0  # ignore only frees the slot


def test_grants_follow_the_floor_of_the_limit(redis_client: redis.Redis, prefix: str) -> None:
    limit = make(redis_client, prefix, limit=3, backoff=0.5)
    limit.release(held(limit, 1)[0], "drop")
    assert limit.current_limit() == 1.5
    assert limit.acquire() is not None
    assert limit.acquire() is None


def test_a_burst_of_drops_decreases_the_limit_once(redis_client: redis.Redis, prefix: str) -> None:
    limit = make(redis_client, prefix, limit=8, backoff=0.5)
    in_flight = held(limit, 8)
    for lease in in_flight:  # all were granted before the first decrease
        limit.release(lease, "drop")
    assert limit.current_limit() == 4.0
    later = held(limit, 2)  # granted after it: their drop is news
    limit.release(later[0], "drop")
    assert limit.current_limit() == 2.0
    limit.release(later[1], "drop")
    assert limit.current_limit() == 2.0


def test_releasing_an_unknown_or_released_lease_is_harmless(
    redis_client: redis.Redis, prefix: str
) -> None:
    limit = make(redis_client, prefix, limit=4)
    leases = held(limit, 2)
    stranger = Lease(uuid.uuid4().hex, "dep", 4.0, 1, time.monotonic())
    assert not limit.release(stranger, "drop")
    assert not limit.release(stranger, "success")
    assert limit.current_limit() == 4.0 and limit.in_flight() == 2
    assert limit.release(leases[0], "drop")
    assert not limit.release(leases[0], "drop")  # counted once
    assert limit.current_limit() == 2.0 and limit.in_flight() == 1


def test_an_expired_lease_frees_its_slot_and_moves_nothing(
    redis_client: redis.Redis, prefix: str
) -> None:
    short = make(redis_client, prefix, limit=1, lease=0.2)
    lease = short.acquire()
    assert lease is not None
    wait_for(lambda: short.in_flight() == 0)
    assert not short.release(lease, "drop")
    assert short.current_limit() == 1.0
    assert short.acquire() is not None


def test_an_unknown_outcome_is_refused(redis_client: redis.Redis, prefix: str) -> None:
    limit = make(redis_client, prefix, limit=1)
    lease = held(limit, 1)[0]
    with pytest.raises(ConfigurationError, match="outcome"):
        limit.release(lease, "timeout")  # type: ignore[arg-type]
    assert limit.in_flight() == 1


def test_reset_forgets_the_adapted_limit(redis_client: redis.Redis, prefix: str) -> None:
    limit = make(redis_client, prefix, limit=4)
    limit.release(held(limit, 1)[0], "drop")
    assert limit.current_limit() == 2.0
    limit.reset()
    assert limit.current_limit() == 4.0


def test_async_twins(redis_client: redis.Redis, prefix: str) -> None:
    limit = make(redis_client, prefix, limit=3, backoff=0.5)

    async def main() -> None:
        aclient = aioredis.Redis.from_url(REDIS_URL)
        try:
            leases = await asyncio.gather(*(limit.acquire_async(aclient) for _ in range(10)))
            granted = [lease for lease in leases if lease is not None]
            assert len(granted) == 3
            assert await limit.in_flight_async(aclient) == 3
            assert await limit.release_async(aclient, granted[0], "drop")
            assert not await limit.release_async(aclient, granted[0], "drop")
            assert await limit.current_limit_async(aclient) == 1.5
            await limit.release_async(aclient, granted[1], "ignore")
            assert await limit.acquire_async(aclient, "mine") is None  # 1 in flight, limit 1
            await limit.release_async(aclient, granted[2], "success")
            assert await limit.current_limit_async(aclient) == 1.5 + 1 / 1.5
        finally:
            await aclient.aclose()

    asyncio.run(main())
    assert limit.in_flight() == 0


# -- across processes ----------------------------------------------------------------------------

PROCESSES = 5
GRANTS = 30  # calls each process makes
FLEET_LIMIT = 3


def contender(prefix: str, probe: str, ready: Any, out: Any) -> None:
    """Makes ``GRANTS`` calls under the fleet limit; the probe counts calls inside the body."""
    client = redis.Redis.from_url(REDIS_URL)
    limit = make(client, prefix, limit=FLEET_LIMIT)
    client.ping()
    ready.wait(60)
    most, refused, made = 0, 0, 0
    while made < GRANTS:
        lease = limit.acquire()
        if lease is None:
            refused += 1
            time.sleep(0.001)
            continue
        most = max(most, int(client.incr(probe)))
        time.sleep(0.003)  # the call
        client.decr(probe)
        limit.release(lease, "ignore")
        made += 1
    out.put((most, refused))


def test_the_limit_holds_across_processes(redis_client: redis.Redis, prefix: str) -> None:
    probe = f"{{{prefix}}}:probe"
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(target=contender, args=(prefix, probe, ready, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    ready.wait(60)
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(10)
    assert max(most for most, _ in reports) <= FLEET_LIMIT
    assert int(redis_client.get(probe) or 0) == 0
    assert make(redis_client, prefix, limit=FLEET_LIMIT).in_flight() == 0
    print(f"most in flight {max(m for m, _ in reports)}, refused {sum(r for _, r in reports)}")


def holder(prefix: str, out: Any) -> None:
    """Takes every slot with short leases, says so, and hangs until killed."""
    client = redis.Redis.from_url(REDIS_URL)
    limit = make(client, prefix, limit=2, lease=1.0)
    out.put([lease.token for lease in held(limit, 2)])
    time.sleep(600)


def test_a_killed_workers_leases_expire(redis_client: redis.Redis, prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=holder, args=(prefix, out))
    process.start()
    tokens = out.get(timeout=60)
    process.kill()  # SIGKILL: no release ever comes
    process.join(10)
    assert len(tokens) == 2

    survivor = make(redis_client, prefix, limit=2)  # long leases of its own
    mine: list[Lease] = []

    def take() -> bool:
        lease = survivor.acquire()
        if lease is not None:
            mine.append(lease)
        return len(mine) == 2

    wait_for(take)  # the dead worker's slots come back when its leases expire
    assert survivor.acquire() is None
    assert not {lease.token for lease in mine} & set(tokens)
    assert survivor.current_limit() == 2.0  # an expiry is not an outcome
