"""The deployable app as an operator starts it: installed, from a directory outside the repository.

``celery -A workers.app`` must not depend on the current directory (``beat_schedule`` ships in
the wheel), and workers started without ``-Q`` must consume the team's control queue
(``resilience.control.<team>``) as well as every resource queue. Each test runs a private
``redis-server``, so the default prefix and queue names of ``workers.app`` touch nothing shared.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience_tasks.testing import HTTPDependency, RedisServer, Supervisor
from resilience_tasks.testing.processes import QUIET_WORKER
from tests.conftest import wait_for


def outside(**settings: str) -> dict[str, str]:
    """This environment plus ``settings``, with nothing pointing into the repository: a process
    started outside it imports the installed package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESILIENCE_REDIS_URL")}
    env.update(settings)
    return env


def test_app_and_beat_schedule_import_outside_the_repository(tmp_path: Path) -> None:
    script = (
        "import beat_schedule, workers.app, workers.tasks\n"
        "print(beat_schedule.PUMP_INTERVAL)\n"
        "print(sorted(q.name for q in workers.app.app.conf.task_queues))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=outside(RESILIENCE_TEAM="importer"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "1.0",
        "['celery', 'http.example', 'http.example.degraded', 'http.json', 'http.json.degraded',"
        " 'resilience.control.importer']",
    ]


def test_celery_report_runs_outside_the_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "report"],
        cwd=tmp_path,
        env=outside(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "include: ['workers.tasks']" in result.stdout


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_worker_without_q_serves_the_control_queue_and_the_tasks(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    team = "smoke"
    env = outside(
        CELERY_BROKER_URL=redis_server.url(0),
        CELERY_RESULT_BACKEND=redis_server.url(1),
        RESILIENCE_REDIS_URL=redis_server.url(2),
        RESILIENCE_TEAM=team,
    )
    with Supervisor("workers.app", env=env, cwd=tmp_path) as supervisor, HTTPDependency() as http:
        supervisor.env = env  # exactly this environment: no PYTHONPATH into the repository
        nodename = f"smoke@{socket.gethostname()}"
        worker = supervisor.start(
            "worker",
            *("worker", "-c", "1", "-n", nodename, "-l", "INFO", *QUIET_WORKER),
            nodename=nodename,
        )
        beat = supervisor.beat("beat")

        # Beat sends the pump task to resilience.control.smoke; the worker, started without
        # -Q, consumes that queue and runs it.
        pump = f"resilience_tasks.pump.{team}["

        def pumped() -> bool:
            assert worker.alive, worker.tail()
            assert beat.alive, beat.tail()
            return any(
                pump in line and "succeeded" in line for line in worker.output().splitlines()
            )

        wait_for(pumped, timeout=120)
        assert f"resilience.control.{team}" in worker.output()

        # A client that only sends tasks: the same module, the workers' settings.
        client = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from workers.tasks import fetch_status\n"
                "print(fetch_status.delay(sys.argv[1]).get(timeout=90))\n",
                http.url,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert client.returncode == 0, client.stderr + worker.tail()
        assert client.stdout.strip() == "200"
        assert http.hits() == 1
