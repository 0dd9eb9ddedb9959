"""A Celery app for tests that run ``celery worker`` and ``celery beat`` as subprocesses.

Configured from the environment by the test that starts it: the Redis URL, the key prefix,
the team, and a visibility timeout of a few seconds so a killed worker's tasks come back fast.
"""

from __future__ import annotations

import os
import signal
import time

import redis
from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager

REDIS_URL = os.environ["TEST_REDIS_URL"]

app = Celery("crash_app", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True, result_expires=600, worker_hijack_root_logger=False
)
manager = ResilienceManager(
    os.environ["TEST_TEAM"],
    app=app,
    key_prefix=os.environ["TEST_PREFIX"],
    visibility_timeout=float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "5")),
    max_deliveries=int(os.environ.get("TEST_MAX_DELIVERIES", "3")),
    pump_interval=0.5,
    worker_pump_interval=float(os.environ["TEST_WORKER_PUMP"])
    if "TEST_WORKER_PUMP" in os.environ
    else None,
)
RESOURCE = os.environ["TEST_RESOURCE"]
RECORDS = redis.Redis.from_url(REDIS_URL)  # where the tests read what ran


@manager.task(resource=RESOURCE, breaker=BreakerPolicy(fail_max=3, reset_timeout=1.0))
def slow_double(x: int, seconds: float) -> int:
    """Takes ``seconds``; records each start so tests can see redeliveries."""
    RECORDS.rpush(f"{os.environ['TEST_PREFIX']}:started", x)
    time.sleep(seconds)
    return x * 2


@manager.task(resource=RESOURCE)
def kills_its_worker() -> None:
    """A poison message: every delivery kills the process running it."""
    os.kill(os.getpid(), signal.SIGKILL)
