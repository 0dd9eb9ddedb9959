"""Real ``celery worker`` and ``celery beat`` processes: crashes, poison, start-up errors.

The app lives in ``tests/apps/crash_app.py``; each test gives it its own key prefix, team and
queue through the environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from resilience_tasks import DeadLetteredError
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


class Fleet:
    """Starts worker and beat subprocesses for one test and kills them all afterwards."""

    def __init__(self, prefix: str, unique: str) -> None:
        self.env = {
            **os.environ,
            "TEST_REDIS_URL": REDIS_URL,
            "TEST_PREFIX": prefix,
            "TEST_TEAM": f"team-{unique}",
            "TEST_RESOURCE": f"svc-{unique}",
            "PYTHONPATH": str(ROOT),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.crash_app", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def worker(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        return self.start(
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-l",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        )

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children: no warm shutdown, nothing acknowledged."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)


@pytest.fixture
def fleet(prefix: str, unique: str) -> Iterator[Fleet]:
    started = Fleet(prefix, unique)
    try:
        yield started
    finally:
        started.stop_all()


def import_app(fleet: Fleet) -> object:
    """The same app module the subprocesses run, configured with this test's settings."""
    for key in ("TEST_REDIS_URL", "TEST_PREFIX", "TEST_TEAM", "TEST_RESOURCE"):
        os.environ[key] = fleet.env[key]
    sys.modules.pop("tests.apps.crash_app", None)
    import tests.apps.crash_app as crash_app

    return crash_app


def test_kill_9_of_a_worker_mid_task_loses_nothing(
    fleet: Fleet, redis_client: redis.Redis, prefix: str
) -> None:
    crash_app = import_app(fleet)
    first = fleet.worker(concurrency=2)
    results = [crash_app.slow_double.delay(i, 1.0) for i in range(8)]  # type: ignore[attr-defined]
    started_key = f"{prefix}:started"
    deadline = time.monotonic() + 60
    while redis_client.llen(started_key) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.llen(started_key) >= 2, "the worker never started a task"
    fleet.kill(first)  # two tasks are mid-run, unacknowledged
    fleet.worker(concurrency=2)
    values = [result.get(timeout=120) for result in results]
    assert sorted(values) == [2 * i for i in range(8)]
    started = [int(x) for x in redis_client.lrange(started_key, 0, -1)]
    assert set(started) == set(range(8))
    assert len(started) > 8  # the killed tasks really ran again: at-least-once, nothing lost


def test_a_message_that_keeps_killing_workers_is_dead_lettered(fleet: Fleet, prefix: str) -> None:
    crash_app = import_app(fleet)
    fleet.worker(concurrency=1)
    result: AsyncResult = crash_app.kills_its_worker.delay()  # type: ignore[attr-defined]
    with pytest.raises(DeadLetteredError, match="delivered 4 times"):
        result.get(timeout=120)
    entry = crash_app.manager.dead_letters.get(result.id)  # type: ignore[attr-defined]
    assert entry is not None and "keeps killing" in entry.reason
    # and the fleet still serves other work
    assert crash_app.slow_double.delay(5, 0).get(timeout=60) == 10  # type: ignore[attr-defined]


def test_beat_drives_the_pump_and_deferred_work_returns(fleet: Fleet, tmp_path: Path) -> None:
    crash_app = import_app(fleet)
    breaker = crash_app.manager.breaker(crash_app.RESOURCE)  # type: ignore[attr-defined]
    breaker.open()
    fleet.worker(concurrency=2)
    fleet.start("beat", "-l", "WARNING", "-s", str(tmp_path / "beat-schedule"))
    results = [crash_app.slow_double.delay(i, 0) for i in range(4)]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not all(r.state == "DEFERRED" for r in results) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(r.state == "DEFERRED" for r in results)
    assert [r.get(timeout=60) for r in results] == [0, 2, 4, 6]  # a trial closed the breaker
    assert breaker.current_state == "closed"


def test_workers_pump_deferred_work_without_beat(fleet: Fleet) -> None:
    fleet.env["TEST_WORKER_PUMP"] = "0.2"
    crash_app = import_app(fleet)
    breaker = crash_app.manager.breaker(crash_app.RESOURCE)  # type: ignore[attr-defined]
    breaker.open()
    fleet.worker(concurrency=2)
    results = [crash_app.slow_double.delay(i, 0) for i in range(4)]  # type: ignore[attr-defined]
    assert [r.get(timeout=60) for r in results] == [0, 2, 4, 6]
    assert all(
        crash_app.manager.deferred.get(r.id) is None
        for r in results  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_unreachable_redis_gives_one_clear_line(fleet: Fleet, command: str) -> None:
    fleet.env["RESILIENCE_REDIS_URL"] = "redis://127.0.0.1:1/0"
    process = fleet.start(command, "-l", "WARNING")
    _, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert process.returncode != 0
    assert "Traceback" not in text
    last_line = text.strip().splitlines()[-1]  # beat routes stderr through its logger
    assert (
        "resilience-tasks: cannot reach the resilience state store at "
        "redis://127.0.0.1:1/0" in last_line
    )
