"""A provider chain served by ``celery worker`` processes, for tests of the fallback protocols.

Three fault targets (real HTTP servers speaking the OpenAI chat API) stand for a primary, a
backup and a degraded local model; the test starts them and passes their addresses in the
environment. Every answer says which worker role and which provider served it.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from resilience_tasks import (
    BreakerPolicy,
    Concurrency,
    Provider,
    ResilienceManager,
    ResourceType,
    served,
)
from resilience_tasks.providers import openai_chat

REDIS_URL = os.environ["TEST_REDIS_URL"]
PREFIX = os.environ["TEST_PREFIX"]
CHAIN = os.environ["TEST_CHAIN"]
PROTOCOLS = os.environ.get("TEST_PROTOCOLS")
RESET = float(os.environ.get("TEST_RESET_TIMEOUT", "2"))
FAIL_MAX = int(os.environ.get("TEST_FAIL_MAX", "3"))

app = Celery("chain_app", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_default_queue=f"celery-{CHAIN}",
)
manager = ResilienceManager(
    os.environ["TEST_TEAM"],
    app=app,
    key_prefix=PREFIX,
    pump_interval=0.5,
    worker_pump_interval=0.5,
    visibility_timeout=float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "900")),
)
probe = redis.Redis.from_url(REDIS_URL)


def _provider(role: str, **options: Any) -> Provider:
    """One fault target (``TEST_<ROLE>_URL``) as an OpenAI-compatible provider."""
    return openai_chat(
        f"{CHAIN}-{role}",
        model="fault-chat",
        base_url=os.environ[f"TEST_{role.upper()}_URL"],
        api_key="test",
        timeout=5.0,
        **options,
    )


BREAKER = BreakerPolicy(fail_max=FAIL_MAX, reset_timeout=RESET, trial_lease=10.0)
chat = manager.providers(
    CHAIN,
    [
        _provider("primary", cost=0.01, quality=2, breaker=BREAKER),
        _provider("backup", cost=0.02, quality=2, breaker=BREAKER),
        _provider("local", cost=0.0, degraded=True, breaker=BREAKER),
    ],
    resource_type=ResourceType.API_QUOTA,
    cache_ttl=600,
    protocols=PROTOCOLS.split(",") if PROTOCOLS else None,
)


@manager.task(resource=CHAIN, name=f"{CHAIN}.answer")
def answer(prompt: str) -> dict[str, object]:
    text = chat(prompt)
    record = served()
    assert record is not None
    return {
        "text": text,
        "provider": record.provider,
        "protocol": record.protocol,
        "degraded": record.degraded,
        "stale": record.stale,
        "steps": record.steps,
        "role": os.environ.get("TEST_ROLE", "?"),
    }


# -- a bulkhead across worker processes ------------------------------------------------------

SLOW = f"{CHAIN}-slow"
manager.resource(SLOW, concurrency=Concurrency(limit=2, lease=5.0, retry_after=0.3))


@manager.task(resource=SLOW, name=f"{CHAIN}.slow_call")
def slow_call(n: int) -> int:
    """Hold a slot of SLOW's fleet-wide limit for a while; count how many are held at once."""
    inside = probe.incr(f"{PREFIX}:inside")
    probe.rpush(f"{PREFIX}:inside-seen", inside)
    try:
        probe.blpop([f"{PREFIX}:never"], timeout=float(os.environ.get("TEST_HOLD", "0.5")))
    finally:
        probe.decr(f"{PREFIX}:inside")
    return n


# -- a chain with only a degraded provider: its work always moves to the degraded queue --------

LOCAL_ONLY = f"{CHAIN}-localonly"
local_only = manager.providers(
    LOCAL_ONLY,
    [
        openai_chat(
            f"{CHAIN}-local-only",
            model="fault-chat",
            base_url=os.environ["TEST_LOCAL_URL"],
            api_key="test",
            timeout=5.0,
            degraded=True,
        )
    ],
)


@manager.task(resource=LOCAL_ONLY, name=f"{CHAIN}.local_only")
def ask_local(prompt: str) -> str:
    text: str = local_only(prompt)
    return text
