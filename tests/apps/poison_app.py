"""A Celery app for tests that push bad messages at ``celery worker`` subprocesses.

Configured from the environment by the test that starts it: the Redis URL, the key prefix,
the team and the queue. ``record`` takes any arguments, so every message that reaches it runs,
and records its task id in ``<prefix>:ran``: a test can account for every message it pushed
(run, or dead-lettered).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from resilience_tasks import ResilienceManager

REDIS_URL = os.environ["TEST_REDIS_URL"]
QUEUE = os.environ["TEST_QUEUE"]

app = Celery("poison_app", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
    task_default_queue=QUEUE,
)
manager = ResilienceManager(
    os.environ["TEST_TEAM"],
    app=app,
    key_prefix=os.environ["TEST_PREFIX"],
    visibility_timeout=30.0,
    worker_pump_interval=None,
)
RAN_KEY = f"{{{os.environ['TEST_PREFIX']}}}:ran"
_client = redis.Redis.from_url(REDIS_URL)


@app.task(name="poison_app.record", bind=True, shared=False)  # type: ignore[untyped-decorator]
def record(self: Any, *args: Any, **kwargs: Any) -> str:
    """Runs whatever it is given; notes its task id so the test can count it."""
    task_id = str(self.request.id)
    _client.rpush(RAN_KEY, task_id)
    return task_id
