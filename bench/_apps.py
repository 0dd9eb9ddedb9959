"""The Celery app and tasks of the benchmarks (not ``rate_limit.py``: see ``_rate_apps.py``).

Configured through the environment the driver sets and its workers inherit: ``BENCH_REDIS_URL``
(broker, results and state: one database per benchmark) and ``BENCH_PREFIX``. Bare tasks share
every setting the manager installs into the app; only the task class differs.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from typing import Any

import pybreaker
import redis
from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager, RetryPolicy

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PREFIX = os.environ.get("BENCH_PREFIX", "rtbench")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True, result_expires=3600, worker_hijack_root_logger=False
)
manager = ResilienceManager("bench", app=app, key_prefix=PREFIX)
client = redis.Redis.from_url(REDIS_URL)  # no decode_responses: pybreaker needs bytes


def get(url: str) -> int:
    """GET ``url``; a 5xx answer or a network error is a failure of the dependency."""
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        raise ConnectionError(f"HTTP {error.code} from {url}") from None


def done(kind: str) -> None:
    """Count a finished body (the driver polls the counter instead of 1,000 results)."""
    client.incr(f"bench:done:{kind}")


# -- breaker_herd.py ------------------------------------------------------------------------------

HERD_RESOURCE = "herd-dep"


@manager.task(
    resource=HERD_RESOURCE,
    breaker=BreakerPolicy(fail_max=5, reset_timeout=1.0),
    retry=RetryPolicy.none(),
)
def call_dependency(url: str) -> int:
    return get(url)


# -- overhead.py ----------------------------------------------------------------------------------

OVERHEAD_RESOURCE = "overhead-noop"
OVERHEAD_BARE_QUEUE = "overhead-bare"


@manager.task(resource=OVERHEAD_RESOURCE, retry=RetryPolicy.none())
def noop_resilient() -> None:
    """Does nothing, through the resilience layer (closed breaker: the hot path)."""


@app.task(queue=OVERHEAD_BARE_QUEUE)  # type: ignore[untyped-decorator]
def noop_bare() -> None:
    """Does nothing, as a plain Celery task."""


OVERHEAD = {
    "bare": ("noop_bare", OVERHEAD_BARE_QUEUE),
    "ours": ("noop_resilient", OVERHEAD_RESOURCE),
}


# -- deferral.py ----------------------------------------------------------------------------------

DEFERRAL_RESOURCE = "deferral-target"
DEFERRAL_COUNTDOWN_QUEUE = "deferral-countdown"


@manager.task(
    resource=DEFERRAL_RESOURCE,
    breaker=BreakerPolicy(fail_max=5, reset_timeout=3600.0),
    retry=RetryPolicy.none(),
)
def deferred_work(item: int) -> int:
    return item


@app.task(queue=DEFERRAL_COUNTDOWN_QUEUE)  # type: ignore[untyped-decorator]
def countdown_work(item: int) -> int:
    return item


# -- long_outage.py -------------------------------------------------------------------------------

#: reset_timeout of both breakers and the countdown of the pybreaker glue (long_outage.py).
OUTAGE_RESET = float(os.environ.get("BENCH_OUTAGE_RESET", "10"))
OUTAGE_QUEUES = {"ours": ("outage-dep", "outage-healthy"), "pybreaker": ("pb-dep", "pb-healthy")}


@manager.task(
    resource="outage-dep",
    breaker=BreakerPolicy(fail_max=5, reset_timeout=OUTAGE_RESET),
    retry=RetryPolicy.none(),
)
def outage_call(url: str) -> None:
    get(url)
    done("dep")


@manager.task(resource="outage-healthy", retry=RetryPolicy.none())
def healthy_call(url: str) -> None:
    get(url)
    done("healthy")


@functools.cache
def pybreaker_for(name: str) -> pybreaker.CircuitBreaker:
    """Built on first use: ``CircuitRedisStorage`` writes its keys when it is created."""
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"{PREFIX}:pb:{name}"
    )
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=OUTAGE_RESET, state_storage=storage)


@app.task(bind=True, queue="pb-dep", max_retries=None)  # type: ignore[untyped-decorator]
def pb_outage_call(self: Any, url: str) -> None:
    """pybreaker glued by hand: an open breaker retries the task after ``reset_timeout``."""
    try:
        pybreaker_for("dep").call(get, url)
    except pybreaker.CircuitBreakerError as refused:
        raise self.retry(exc=refused, countdown=OUTAGE_RESET) from None
    done("dep")


@app.task(bind=True, queue="pb-healthy", max_retries=None)  # type: ignore[untyped-decorator]
def pb_healthy_call(self: Any, url: str) -> None:
    try:
        pybreaker_for("healthy").call(get, url)
    except pybreaker.CircuitBreakerError as refused:
        raise self.retry(exc=refused, countdown=OUTAGE_RESET) from None
    done("healthy")
