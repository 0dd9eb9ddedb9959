"""The global rate holds whatever the number of worker processes (real ``celery worker``s)."""

from __future__ import annotations

import bisect
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL, import_app_module, pumping

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10
TASKS = 40


class AdmissionLog:
    """Watches the Redis server (MONITOR) for the limiter's writes: each LPUSH to the limit's
    window is one admission, stamped with the server's clock. Body start times would add the
    workers' scheduling delays to what is measured."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._connected = threading.Event()

    def _watch(self) -> None:
        with redis.Redis.from_url(REDIS_URL).monitor() as monitor:
            self._connected.set()
            for entry in monitor.listen():
                if self._stop.is_set():
                    return
                words = str(entry.get("command", "")).split()
                if len(words) == 3 and words[0].lower() == "lpush" and self.marker in words[1]:
                    self.stamps.append(float(words[2]))

    def __enter__(self) -> AdmissionLog:
        self._thread.start()
        self._connected.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        redis.Redis.from_url(REDIS_URL).ping()  # wakes the monitor so it sees the stop
        self._thread.join(10)


def busiest_second(starts: list[float]) -> int:
    """The most runs that started within any sliding one-second interval."""
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_the_fleet_rate_holds_with_several_workers(
    prefix: str,
    unique: str,
    redis_client: redis.Redis,
    workers: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **os.environ,
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_PREFIX": prefix,
        "TEST_TEAM": f"team-{unique}",
        "TEST_RESOURCE": f"api-{unique}",
        "TEST_LIMIT": f"{LIMIT}/second",
        "PYTHONPATH": str(ROOT),
    }
    keys = ("TEST_REDIS_URL", "TEST_PREFIX", "TEST_TEAM", "TEST_RESOURCE", "TEST_LIMIT")
    rate_app = import_app_module(
        "tests.apps.rate_app", {key: env[key] for key in keys}, monkeypatch
    )

    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.apps.rate_app",
                "worker",
                "-P",
                "solo",
                "-n",
                f"w{i}-{unique}@%h",
                "-l",
                "WARNING",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(workers)
    ]
    try:
        time.sleep(3)  # let every worker connect, so they all compete from the start
        with AdmissionLog(f"api-{unique}") as admissions:
            results = [rate_app.limited.delay(n) for n in range(TASKS)]
            with pumping(rate_app.manager, 0.2):  # work refused over a second waits in the store
                assert sorted(r.get(timeout=120) for r in results) == list(range(TASKS))
    finally:
        for process in processes:
            process.kill()
            process.wait(10)
    runs = [item.decode().split(":") for item in redis_client.lrange(f"{prefix}:runs", 0, -1)]
    assert sorted(int(n) for _, n in runs) == list(range(TASKS))  # each ran exactly once
    assert len(admissions.stamps) == TASKS
    assert busiest_second(admissions.stamps) <= LIMIT
    span = max(admissions.stamps) - min(admissions.stamps)
    print(
        f"{workers} workers: {TASKS} runs in {span:.2f}s "
        f"({(TASKS - LIMIT) / span if span else 0:.1f}/s after the first window)"
    )
