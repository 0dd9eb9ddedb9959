"""A task on a resource that plain decorated functions in the test process also use."""

from __future__ import annotations

import os

from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager

REDIS_URL = os.environ["TEST_REDIS_URL"]
RESOURCE = os.environ["TEST_RESOURCE"]
POLICY = BreakerPolicy(fail_max=2, reset_timeout=3.0)

app = Celery("decorated_app", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
    task_default_queue=f"celery-{RESOURCE}",
)
manager = ResilienceManager(
    os.environ["TEST_TEAM"],
    app=app,
    key_prefix=os.environ["TEST_PREFIX"],
    pump_interval=0.5,
    worker_pump_interval=0.5,
)


@manager.task(resource=RESOURCE, breaker=POLICY)
def call_tool(n: int) -> int:
    return n
