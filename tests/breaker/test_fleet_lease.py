"""Half-open across processes: the whole fleet sends exactly the permitted trial calls."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import redis

from resilience_tasks import BreakerPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL

PROCESSES = 8
ATTEMPTS = 50
POLICY = {"fail_max": 1, "reset_timeout": 600}


def contender(prefix: str, trial_calls: int, ready: Any, out: Any) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    breaker = FleetBreaker(
        "dep",
        BreakerPolicy(**POLICY, trial_calls=trial_calls),
        RedisFleetStorage(client, "dep", KeySpace(prefix)),
    )
    client.ping()
    ready.wait(60)  # every process starts hammering the half-open breaker at the same moment
    admitted = sum(breaker.admit().trial for _ in range(ATTEMPTS))  # attempts, not a time window
    out.put(admitted)


@pytest.mark.parametrize("trial_calls", [1, 3])
def test_exactly_the_permitted_trials_across_processes(prefix: str, trial_calls: int) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    opener = FleetBreaker(
        "dep", BreakerPolicy(**POLICY), RedisFleetStorage(client, "dep", KeySpace(prefix))
    )
    opener.half_open()
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(target=contender, args=(prefix, trial_calls, ready, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    ready.wait(60)
    admitted = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    assert sum(admitted) == trial_calls
    assert opener.current_state == "half-open"
