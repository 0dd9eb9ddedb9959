"""Fixtures that talk to the real Redis on 127.0.0.1:6379 and run real Celery workers.

Tests use Redis database 3 for broker and results, and a key prefix of their own for
resilience state, removed after each test. Nothing here fakes Redis or runs tasks eagerly.
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from resilience_tasks import ResilienceManager
from resilience_tasks.deferred import PumpThread
from resilience_tasks.testing import wait_until

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/3")


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # a missing server is a failure, never a skip
        pytest.fail(f"the tests need Redis at {REDIS_URL}: {exc}")
    return client


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    name = f"rt-test-{uuid.uuid4().hex[:8]}"
    yield name
    # KeySpace keys are ``{name}:...`` (the hash tag); test apps also write ``name:...``.
    keys = list(redis_client.scan_iter(f"*{name}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def unique() -> str:
    """A short unique name for queues, resources and teams of one test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def app(unique: str) -> Celery:
    celery_app = Celery(f"test-{unique}", broker=REDIS_URL, backend=REDIS_URL)
    # Queues of this test's own: suites running side by side on one Redis never share a queue.
    celery_app.conf.update(
        broker_connection_retry_on_startup=True,
        result_expires=600,
        task_default_queue=f"celery-{unique}",
    )
    return celery_app


@pytest.fixture
def manager(app: Celery, prefix: str, unique: str) -> ResilienceManager:
    return ResilienceManager(f"team-{unique}", app=app, key_prefix=prefix)


def pumping(manager: ResilienceManager, interval: float) -> PumpThread:
    """Run the deferred pump every ``interval`` seconds in a thread, as beat does every second."""
    return PumpThread(manager.pump, interval)


@pytest.fixture
def pump(manager: ResilienceManager) -> Iterator[None]:
    with pumping(manager, 0.1):
        yield


@pytest.fixture
def fast_pump(manager: ResilienceManager) -> Iterator[None]:
    with pumping(manager, 0.01):
        yield


@pytest.fixture
def worker(app: Celery) -> Iterator[object]:
    """Start an in-process worker (threads pool) once the test has declared its tasks."""
    from contextlib import ExitStack

    from celery.contrib.testing.worker import start_worker

    with ExitStack() as stack:

        def start(concurrency: int = 4) -> None:
            stack.enter_context(
                start_worker(
                    app,
                    pool="threads",
                    concurrency=concurrency,
                    perform_ping_check=False,
                    loglevel="WARNING",
                    shutdown_timeout=10,
                )
            )

        yield start


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    if not wait_until(predicate, timeout, interval=0.02):
        raise AssertionError("condition not met in time")


def import_app_module(module: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import a fresh copy of the app module that worker subprocesses run, configured as they
    are by ``env``; the environment is restored when the test ends (through ``monkeypatch``)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(sys.modules, module, raising=False)
    return importlib.import_module(module)
