"""Real ``celery worker`` and ``celery beat`` processes: crashes, poison, start-up errors.

The app lives in ``tests/apps/crash_app.py``; each test gives it its own key prefix, team and
queue through the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from resilience_tasks import DeadLetteredError
from resilience_tasks.testing import CeleryProcess, Supervisor
from tests.conftest import REDIS_URL, import_app_module, wait_for

ROOT = Path(__file__).resolve().parent.parent


class Fleet(Supervisor):
    """``celery -A <app>`` workers and beats of one test, all killed afterwards."""

    names = count()

    def worker_of(self, concurrency: int = 2) -> CeleryProcess:
        return self.worker(f"w{next(self.names)}-{self.env['TEST_TEAM']}", concurrency=concurrency)


def fleet_env(prefix: str, unique: str) -> dict[str, str]:
    return {
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_PREFIX": prefix,
        "TEST_TEAM": f"team-{unique}",
        "TEST_RESOURCE": f"svc-{unique}",
        "TEST_QUEUE": f"celery-{unique}",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def fleet(prefix: str, unique: str) -> Iterator[Fleet]:
    with Fleet("tests.apps.crash_app", env=fleet_env(prefix, unique), cwd=ROOT) as started:
        yield started


def import_app(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, module: str = "tests.apps.crash_app"
) -> Any:
    """The same app module the subprocesses run, configured with this test's settings."""
    keys = ("TEST_REDIS_URL", "TEST_PREFIX", "TEST_TEAM", "TEST_RESOURCE", "TEST_QUEUE")
    return import_app_module(module, {key: fleet.env[key] for key in keys}, monkeypatch)


def test_kill_9_of_a_worker_mid_task_loses_nothing(
    fleet: Fleet, redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_app = import_app(fleet, monkeypatch)
    first = fleet.worker_of(concurrency=2)
    results = [crash_app.slow_double.delay(i, 1.0) for i in range(8)]  # type: ignore[attr-defined]
    started_key = f"{prefix}:started"
    wait_for(lambda: redis_client.llen(started_key) >= 2, timeout=60)
    first.kill()  # two tasks are mid-run, unacknowledged
    fleet.worker_of(concurrency=2)
    values = [result.get(timeout=120) for result in results]
    assert sorted(values) == [2 * i for i in range(8)]
    started = [int(x) for x in redis_client.lrange(started_key, 0, -1)]
    assert set(started) == set(range(8))
    assert len(started) > 8  # the killed tasks really ran again: at-least-once, nothing lost


def test_a_message_that_keeps_killing_workers_is_dead_lettered(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_app = import_app(fleet, monkeypatch)
    fleet.worker_of(concurrency=1)
    result: AsyncResult = crash_app.kills_its_worker.delay()  # type: ignore[attr-defined]
    with pytest.raises(DeadLetteredError, match="delivered 4 times"):
        result.get(timeout=120)
    entry = crash_app.manager.dead_letter(result.id)  # type: ignore[attr-defined]
    assert entry is not None and "keeps killing" in entry.reason
    # and the fleet still serves other work
    assert crash_app.slow_double.delay(5, 0).get(timeout=60) == 10  # type: ignore[attr-defined]


def test_beat_drives_the_pump_and_deferred_work_returns(
    prefix: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The breaker stays open for an hour, so every task is refused however slow the machine;
    the workers run no pump of their own, so only beat can bring the work back."""
    env = fleet_env(prefix, unique)
    with Fleet("tests.testing.harness_app", env=env, cwd=ROOT) as fleet:
        harness = import_app(fleet, monkeypatch, "tests.testing.harness_app")
        manager = harness.manager  # type: ignore[attr-defined]
        breaker = manager.breaker(harness.RESOURCE)  # type: ignore[attr-defined]
        breaker.open()
        fleet.worker_of(concurrency=2)
        results = [harness.double.delay(i) for i in range(4)]  # type: ignore[attr-defined]
        wait_for(lambda: all(r.state == "DEFERRED" for r in results), timeout=120)
        assert manager.deferred_count() == 4
        breaker.close()  # parked work may come back now, and only the pump can publish it
        fleet.beat()
        assert [r.get(timeout=120) for r in results] == [0, 2, 4, 6]
        assert manager.deferred_count() == 0
        assert breaker.current_state == "closed"


def test_workers_pump_deferred_work_without_beat(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet.env["TEST_WORKER_PUMP"] = "0.2"
    crash_app = import_app(fleet, monkeypatch)
    breaker = crash_app.manager.breaker(crash_app.RESOURCE)  # type: ignore[attr-defined]
    breaker.open()
    fleet.worker_of(concurrency=2)
    results = [crash_app.slow_double.delay(i, 0) for i in range(4)]  # type: ignore[attr-defined]
    assert [r.get(timeout=60) for r in results] == [0, 2, 4, 6]
    assert crash_app.manager.deferred_count() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_unreachable_redis_gives_one_clear_line(fleet: Fleet, command: str) -> None:
    fleet.env["RESILIENCE_REDIS_URL"] = "redis://127.0.0.1:1/0"
    process = fleet.start(command, command, "-l", "WARNING")
    assert process.wait(timeout=60) != 0
    text = process.output()
    assert "Traceback" not in text
    last_line = text.strip().splitlines()[-1]  # beat routes stderr through its logger
    assert (
        "resilience-tasks: cannot reach the resilience state store at "
        "redis://127.0.0.1:1/0" in last_line
    )
