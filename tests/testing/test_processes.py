"""The supervisor: a real worker answers a ping, runs tasks, reports its CPU, and is gone with
its pool children when the block ends; a process that dies shows its output."""

from __future__ import annotations

from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
from celery import Celery

from resilience_tasks.testing import Supervisor
from tests.conftest import REDIS_URL, import_app_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(unique: str) -> dict[str, str]:
    return {"TEST_REDIS_URL": REDIS_URL, "TEST_QUEUE": f"harness-{unique}", "PYTHONPATH": str(ROOT)}


def test_a_worker_answers_runs_tasks_and_leaves_no_process(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness_app = import_app_module("tests.testing.harness_app", env, monkeypatch)

    app: Celery = harness_app.app
    with Supervisor("tests.testing.harness_app", env=env, cwd=ROOT) as sup:
        worker = sup.worker("harness", queues=[env["TEST_QUEUE"]], concurrency=2, ready=app)
        assert harness_app.add.delay(2, 3).get(timeout=60) == 5
        pids = [worker.pid, *(c.pid for c in psutil.Process(worker.pid).children(True))]
        assert len(pids) == 3  # main process and two pool children
        assert worker.cpu_seconds() > 0
        assert worker.rss()[1] > worker.rss()[0] > 0
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )


def test_a_process_that_exits_shows_what_it_wrote(env: dict[str, str]) -> None:
    with Supervisor("tests.testing.no_such_module", env=env, cwd=ROOT) as sup:
        process = sup.start("broken", "worker")
        assert process.wait(timeout=120) != 0
        assert "no_such_module" in process.output()
        with pytest.raises(RuntimeError, match="exited"):
            process.wait_ready(app=None, timeout=60)
