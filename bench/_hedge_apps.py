"""The app of ``bench/hedge.py``: the same two providers (real fault servers with a slow tail)
in two chains, one hedged and one not, each called by a task that records its latency.

Configured through the environment the driver sets and its worker inherits:
``BENCH_REDIS_URL``, ``BENCH_PREFIX``, ``BENCH_PRIMARY_URL``, ``BENCH_BACKUP_URL`` and
``BENCH_HEDGE_AFTER`` (seconds). Each task appends one JSON record to ``RECORDS``.
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

from resilience_tasks import ResilienceManager, ResourceType, RetryPolicy, served
from resilience_tasks.providers import openai_chat

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
PREFIX = os.environ.get("BENCH_PREFIX", "rtbench-hedge")
HEDGE_AFTER = float(os.environ.get("BENCH_HEDGE_AFTER", "0.5"))
RECORDS = "bench:hedge"

app = Celery("bench_hedge", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True, result_expires=3600, worker_hijack_root_logger=False
)
manager = ResilienceManager("bench", app=app, key_prefix=PREFIX)
client = redis.Redis.from_url(REDIS_URL)

#: Both chains call the same two providers: a slow call takes 5 s, well inside the timeout.
PROVIDERS = [
    openai_chat(
        "llm-a",
        model="fault-chat",
        base_url=os.environ.get("BENCH_PRIMARY_URL"),
        api_key="unused",
        timeout=30.0,
        cost=0.01,
    ),
    openai_chat(
        "llm-b",
        model="fault-chat",
        base_url=os.environ.get("BENCH_BACKUP_URL"),
        api_key="unused",
        timeout=30.0,
        cost=0.01,
    ),
]
plain = manager.providers("plain", PROVIDERS, resource_type=ResourceType.API_QUOTA)
hedged = manager.providers(
    "hedged", PROVIDERS, resource_type=ResourceType.API_QUOTA, hedge_after=HEDGE_AFTER
)
CHAINS = {"plain": plain, "hedged": hedged}


@manager.task(resource="plain", retry=RetryPolicy.none())
def ask(kind: str, number: int) -> None:
    """One chain call; its latency and provenance go to ``RECORDS``."""
    started = time.monotonic()
    CHAINS[kind](f"question {number}")
    latency = time.monotonic() - started
    record = served()
    assert record is not None  # the chain call above answered
    client.rpush(
        RECORDS,
        json.dumps(
            {
                "kind": kind,
                "latency": latency,
                "provider": record.provider,
                "protocol": record.protocol,
                "attempts": record.attempts,
                "cost": record.cost,
            }
        ),
    )
