"""Work that always fails cannot hold a shared breaker open: it ends by its retry policy.

Before the bound on free trials, a failed half-open trial was never charged, so such work was
deferred again and again and reopened the breaker at every trial it won (9 of 12 always-failing
tasks were still waiting after 90 s). Here always-failing, flaky and healthy work go through one
breaker served by a ``celery worker`` with four processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from resilience_tasks.testing import Supervisor, wait_until
from tests.conftest import REDIS_URL, import_app_module

ROOT = Path(__file__).resolve().parent.parent
FREE_TRIALS = 1  # the manager's default


def test_always_failing_work_ends_and_the_breaker_closes(
    redis_client: redis.Redis, prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = f"svc-{unique}"
    env = {
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_PREFIX": prefix,
        "TEST_TEAM": f"team-{unique}",
        "TEST_RESOURCE": resource,
        "PYTHONPATH": str(ROOT),
    }
    live = import_app_module("tests.apps.livelock_app", env, monkeypatch)

    with Supervisor("tests.apps.livelock_app", env=env, cwd=ROOT) as fleet:
        fleet.worker("livelock", concurrency=4, ready=live.app)
        failing = [live.always_fails.delay(n) for n in range(12)]
        flaky = [live.flaky.delay(n) for n in range(12)]
        healthy = [live.healthy.delay(n) for n in range(12)]
        everything: list[AsyncResult] = [*failing, *flaky, *healthy]
        assert wait_until(lambda: all(r.ready() for r in everything), timeout=240), {
            r.id: r.state for r in everything if not r.ready()
        }
        for result in failing:
            with pytest.raises(ConnectionError):
                result.get(timeout=1)
        assert sorted(r.get(timeout=1) for r in flaky) == list(range(12))
        assert sorted(r.get(timeout=1) for r in healthy) == list(range(12))

        counts = {
            key.decode(): int(value)
            for key, value in redis_client.hgetall(f"{prefix}:run-count").items()
        }
        for n in range(12):  # its first call, or its free failed trials and one charged trial
            assert counts[f"always:{n}"] <= FREE_TRIALS + 1, counts

        # The breaker serves the rest of the fleet again: a healthy call closes it for good.
        after = live.healthy.delay(100)
        assert after.get(timeout=60) == 100
        assert wait_until(lambda: live.manager.breaker(resource).current_state == "closed", 30)
