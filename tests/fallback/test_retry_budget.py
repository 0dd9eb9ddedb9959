"""The fleet retry budget on the real Redis: the ratio, the floor, the sliding window, and an
outage hammered by eight processes that would each retry three times."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
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
OUTAGE = {"ratio": 0.2, "window": 1, "min_per_second": 2.0}


def caller(prefix: str, ready: Any, out: Any) -> None:
    """A worker during an outage: every call to the dependency fails, so each first call is
    followed by as many retries as the budget allows, up to ``RETRIES``."""
    client = redis.Redis.from_url(REDIS_URL)
    budget = make(client, prefix, **OUTAGE)
    client.ping()
    ready.wait(60)
    retries = 0
    for _ in range(CALLS):
        budget.deposit()  # the first attempt (failed)
        for _ in range(RETRIES):
            if not budget.withdraw():
                break
            retries += 1  # the retry (failed too)
    out.put(retries)


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
    started = time.monotonic()
    retries = sum(results.get(timeout=120) for _ in processes)
    elapsed = time.monotonic() - started
    for process in processes:
        process.join(10)

    calls = PROCESSES * CALLS
    window = OUTAGE["window"]
    # The run spans at most this many windows of server seconds (measured generously: the
    # parent's clock runs from before the first call to after the last).
    windows = math.ceil(elapsed / window) + 1
    floor = OUTAGE["min_per_second"] * window * windows
    # Each window's retries are bounded by the calls of the sliding window that ends at its
    # last retry: those of the window itself, and some of the one before. So the total is at
    # most ratio x calls (x 2 at worst, for the overlap) plus the floor of every window.
    assert retries <= 2 * OUTAGE["ratio"] * calls + floor
    # The steady rate is ratio x calls; allow one window's share of calls for the overlap.
    assert retries <= OUTAGE["ratio"] * calls + floor + OUTAGE["ratio"] * calls / windows + 5
    assert 0 < retries < calls  # retrying everything thrice would be 3 x calls
    print(f"{calls} calls, {retries} retries in {elapsed:.2f}s ({windows} windows)")
