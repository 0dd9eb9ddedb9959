"""Half-open across processes: the whole fleet sends exactly the permitted trial calls."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import redis

from resilience_tasks import BreakerPolicy
from resilience_tasks.breaker import FleetBreaker, RedisFleetStorage
from resilience_tasks.state.keys import KeySpace
from tests.conftest import REDIS_URL

PROCESSES = 8


def contender(prefix: str, trial_calls: int, start_at: float, out: multiprocessing.Queue) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    breaker = FleetBreaker(
        "dep",
        BreakerPolicy(fail_max=1, reset_timeout=0.5, trial_calls=trial_calls),
        RedisFleetStorage(client, "dep", KeySpace(prefix)),
    )
    client.ping()
    time.sleep(max(0.0, start_at - time.time()))
    admitted = 0
    deadline = time.time() + 0.3  # every process hammers the half-open breaker for 0.3 s
    while time.time() < deadline:
        if breaker.admit().trial:
            admitted += 1
    out.put(admitted)


@pytest.mark.parametrize("trial_calls", [1, 3])
def test_exactly_the_permitted_trials_across_processes(prefix: str, trial_calls: int) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    opener = FleetBreaker(
        "dep",
        BreakerPolicy(fail_max=1, reset_timeout=0.5),
        RedisFleetStorage(client, "dep", KeySpace(prefix)),
    )
    opener.open()
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start_at = time.time() + 3.0  # after the spawned interpreters are up, past reset_timeout
    processes = [
        context.Process(target=contender, args=(prefix, trial_calls, start_at, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    admitted = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(10)
    assert sum(admitted) == trial_calls
    assert opener.current_state == "half-open"
