"""The fleet retry budget on the real Redis: the ratio, the floor, the sliding window, and an
outage hammered by eight processes that would each retry three times."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
from typing import Any

import redis
import redis.asyncio as aioredis

from resilience_tasks.fallback.policy import RetryBudget
from resilience_tasks.fallback.retry_budget import FleetRetryBudget
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL, wait_for


def make(client: redis.Redis, prefix: str, **budget: Any) -> FleetRetryBudget:
    return FleetRetryBudget(client, KeySpace(prefix), "dep", RetryBudget(**budget))


def test_retries_are_at_most_the_ratio_of_first_calls(
    redis_client: redis.Redis, prefix: str
) -> None:
    budget = make(redis_client, prefix, ratio=0.25, window=60, min_per_second=0)
    for _ in range(40):
        budget.deposit()
    granted = sum(budget.withdraw() for _ in range(30))
    assert granted == 10
    assert budget.balance() == {
        "calls": 40,
        "retries": 10,
        "allowed": 10.0,
        "remaining": 0,
        "window": 60,
    }
    budget.deposit()  # 41 calls earn 10.25 retries: still no whole one more
    assert not budget.withdraw()
    for _ in range(3):
        budget.deposit()
    assert budget.withdraw()


def test_an_idle_resource_can_still_retry_min_per_second(
    redis_client: redis.Redis, prefix: str
) -> None:
    budget = make(redis_client, prefix, ratio=0.5, window=3, min_per_second=2)
    assert budget.balance()["remaining"] == 6
    assert [budget.withdraw() for _ in range(7)] == [True] * 6 + [False]
    assert budget.balance()["retries"] == 6


def test_the_window_slides_and_old_buckets_go(redis_client: redis.Redis, prefix: str) -> None:
    budget = make(redis_client, prefix, ratio=1.0, window=2, min_per_second=0)
    for _ in range(3):
        budget.deposit()
    assert [budget.withdraw() for _ in range(4)] == [True, True, True, False]
    assert 0 < redis_client.ttl(budget.key) <= 3  # window + 1 s
    old = set(redis_client.hkeys(budget.key))
    assert old

    wait_for(lambda: budget.balance()["calls"] == 0)  # the server clock moved past them
    assert budget.balance()["retries"] == 0
    assert not budget.withdraw()  # nothing earned in the new window
    assert not old & set(redis_client.hkeys(budget.key))  # the withdrawal pruned them

    def earns_again() -> bool:
        budget.deposit()
        return budget.withdraw()

    wait_for(earns_again)


def test_deposits_alone_keep_the_hash_small(redis_client: redis.Redis, prefix: str) -> None:
    budget = make(redis_client, prefix, ratio=0.2, window=1, min_per_second=0)
    seen: set[bytes | str] = set()

    def deposit() -> bool:
        budget.deposit()
        fields = redis_client.hkeys(budget.key)
        assert len(fields) <= 2  # two kinds of count per second of the window
        seen.update(fields)
        return len(seen) >= 3  # deposits in three different seconds

    wait_for(deposit)


def test_async_twins(redis_client: redis.Redis, prefix: str) -> None:
    budget = make(redis_client, prefix, ratio=0.5, window=60, min_per_second=0)

    async def main() -> list[bool]:
        aclient = aioredis.Redis.from_url(REDIS_URL)
        try:
            await asyncio.gather(*(budget.deposit_async(aclient) for _ in range(10)))
            granted = await asyncio.gather(*(budget.withdraw_async(aclient) for _ in range(8)))
            assert (await budget.balance_async(aclient))["retries"] == 5
            return list(granted)
        finally:
            await aclient.aclose()

    assert sorted(asyncio.run(main())) == [False] * 3 + [True] * 5
    assert budget.balance()["calls"] == 10  # the same keys as the sync path


# -- an outage across processes ------------------------------------------------------------------

PROCESSES = 8
CALLS = 1200  # first calls per process, each followed by up to RETRIES retries
RETRIES = 3
# A one-second window: each server second is a window of its own, so the bound below is exact.
OUTAGE = {"ratio": 0.2, "window": 1, "min_per_second": 2.0}


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def caller(prefix: str, ready: Any, out: Any) -> None:
    """A worker during an outage: every call to the dependency fails, so each first call is
    followed by as many retries as the budget allows, up to ``RETRIES``. Reports its retries
    and the server times before its first call and after its last."""
    client = redis.Redis.from_url(REDIS_URL)
    budget = make(client, prefix, **OUTAGE)
    client.ping()
    ready.wait(60)
    first = server_time(client)
    retries = 0
    for _ in range(CALLS):
        budget.deposit()  # the first attempt (failed)
        for _ in range(RETRIES):
            if not budget.withdraw():
                break
            retries += 1  # the retry (failed too)
    out.put((retries, first, server_time(client)))


def test_the_budget_holds_for_eight_processes_under_an_outage(prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(target=caller, args=(prefix, ready, results)) for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    ready.wait(60)
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(10)

    calls = PROCESSES * CALLS
    retries = sum(retried for retried, _, _ in reports)
    # Every call and retry fell in these server seconds, and in each of them at most
    # ratio x (that second's calls) + min_per_second retries went out.
    seconds = (
        math.floor(max(end for _, _, end in reports))
        - math.floor(min(start for _, start, _ in reports))
        + 1
    )
    assert retries <= OUTAGE["ratio"] * calls + OUTAGE["min_per_second"] * seconds + 1e-6
    assert 0 < retries < calls  # retrying every failure thrice would be 3 x calls
    print(f"{calls} calls, {retries} retries over {seconds} server seconds")
