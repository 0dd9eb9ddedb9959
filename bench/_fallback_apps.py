"""The app of ``bench/failover.py``: a chain of two OpenAI-compatible providers (real fault
servers), called by a task that records what served it.

Configured through the environment the driver sets and its worker inherits:
``BENCH_REDIS_URL``, ``BENCH_PREFIX``, ``BENCH_PRIMARY_URL`` and ``BENCH_BACKUP_URL`` (the
servers' ``openai_base_url``), ``BENCH_TIMEOUT`` (the client's, seconds) and
``BENCH_RESET_TIMEOUT`` (the primary's breaker). Each task appends one JSON record to
``RECORDS``: its number, when its chain call started and ended, and the call's provenance.
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

from resilience_tasks import (
    BreakerPolicy,
    ResilienceManager,
    ResourceType,
    RetryPolicy,
    served,
)
from resilience_tasks.providers import openai_chat

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PREFIX = os.environ.get("BENCH_PREFIX", "rtbench-failover")
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "2"))
RESET_TIMEOUT = float(os.environ.get("BENCH_RESET_TIMEOUT", "5"))
RECORDS = "bench:served"
PRIMARY, BACKUP = "chat-primary", "chat-backup"

app = Celery("bench_failover", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True, result_expires=3600, worker_hijack_root_logger=False
)
manager = ResilienceManager("bench", app=app, key_prefix=PREFIX)
client = redis.Redis.from_url(REDIS_URL)

chat = manager.providers(
    "chat",
    [
        openai_chat(
            PRIMARY,
            model="fault-chat",
            base_url=os.environ.get("BENCH_PRIMARY_URL"),
            api_key="unused",
            timeout=TIMEOUT,
            cost=0.01,
            breaker=BreakerPolicy(fail_max=3, reset_timeout=RESET_TIMEOUT),
        ),
        openai_chat(
            BACKUP,
            model="fault-chat",
            base_url=os.environ.get("BENCH_BACKUP_URL"),
            api_key="unused",
            timeout=TIMEOUT,
            cost=0.02,
        ),
    ],
    resource_type=ResourceType.API_QUOTA,
)


@manager.task(resource="chat", retry=RetryPolicy.none())
def ask(number: int) -> None:
    started = time.time()
    chat(f"question {number}")
    record = served()
    assert record is not None  # the chain call above answered
    client.rpush(
        RECORDS,
        json.dumps(
            {
                "n": number,
                "start": started,
                "end": time.time(),
                "provider": record.provider,
                "protocol": record.protocol,
                "attempts": record.attempts,
                "steps": record.steps,
            }
        ),
    )
