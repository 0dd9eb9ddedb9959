"""A Celery app whose one task is limited fleet-wide; each run records when it started."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from resilience_tasks import ResilienceManager

REDIS_URL = os.environ["TEST_REDIS_URL"]

app = Celery("rate_app", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True, result_expires=600, worker_hijack_root_logger=False
)
manager = ResilienceManager(
    os.environ["TEST_TEAM"], app=app, key_prefix=os.environ["TEST_PREFIX"], pump_interval=0.5
)
RESOURCE = os.environ["TEST_RESOURCE"]
RECORDS = redis.Redis.from_url(REDIS_URL)  # where the tests read what ran
LIMIT = os.environ.get("TEST_LIMIT", "10/second")


@manager.task(resource=RESOURCE, rate_limit=LIMIT, bind=True)
def limited(self: object, n: int) -> int:
    RECORDS.rpush(f"{os.environ['TEST_PREFIX']}:runs", f"{time.time()}:{n}")
    return n
