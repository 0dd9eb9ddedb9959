"""A Celery app with a resilience manager for the harness tests and the beat test, configured
from the environment: ``TEST_REDIS_URL``, ``TEST_QUEUE`` (default queue), ``TEST_PREFIX``,
``TEST_TEAM`` and ``TEST_RESOURCE``. The breaker stays open for an hour once opened, so a test
decides when it admits again; only beat runs the pump (no pump thread in workers).
"""

from __future__ import annotations

import os

from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager

REDIS_URL = os.environ["TEST_REDIS_URL"]
RESOURCE = os.environ.get("TEST_RESOURCE", "harness-resource")

app = Celery("harness", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    task_default_queue=os.environ["TEST_QUEUE"],
    worker_hijack_root_logger=False,
)
manager = ResilienceManager(
    os.environ.get("TEST_TEAM", "harness"),
    app=app,
    key_prefix=os.environ.get("TEST_PREFIX", "rt-harness"),
    pump_interval=0.5,
    worker_pump_interval=None,
)


@app.task(shared=False)  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    return x + y


@manager.task(resource=RESOURCE, breaker=BreakerPolicy(fail_max=3, reset_timeout=3600.0))
def double(x: int) -> int:
    return x * 2
