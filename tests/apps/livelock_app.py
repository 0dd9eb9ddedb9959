"""Always-failing, flaky and healthy tasks through one breaker, for ``celery worker`` processes.

Configured from the environment by the test that starts it; every run of a task body is
recorded in a Redis list, so the test can count the trials each piece of work ran.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager, RetryPolicy

REDIS_URL = os.environ["TEST_REDIS_URL"]
PREFIX = os.environ["TEST_PREFIX"]
RESOURCE = os.environ["TEST_RESOURCE"]

app = Celery("livelock_app", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
    task_default_queue=f"celery-{RESOURCE}",
)
manager = ResilienceManager(
    os.environ["TEST_TEAM"],
    app=app,
    key_prefix=PREFIX,
    pump_interval=0.5,
    worker_pump_interval=0.5,
)
runs = redis.Redis.from_url(REDIS_URL)
BREAKER = BreakerPolicy(fail_max=3, reset_timeout=1.0)


def ran(kind: str, n: int) -> int:
    """Record a run of ``kind`` ``n``; returns how many times it has run."""
    runs.rpush(f"{PREFIX}:runs", f"{kind}:{n}")
    return int(runs.hincrby(f"{PREFIX}:run-count", f"{kind}:{n}", 1))


@manager.task(resource=RESOURCE, breaker=BREAKER, retry=RetryPolicy.none())
def always_fails(n: int) -> None:
    ran("always", n)
    raise ConnectionError(f"always down ({n})")


@manager.task(resource=RESOURCE, retry=RetryPolicy.fixed(max_attempts=3, wait=0.05))
def flaky(n: int) -> int:
    if ran("flaky", n) == 1:
        raise TimeoutError(f"flaky ({n}) timed out once")
    return n


@manager.task(resource=RESOURCE, retry=RetryPolicy.none())
def healthy(n: int) -> int:
    ran("healthy", n)
    return n
