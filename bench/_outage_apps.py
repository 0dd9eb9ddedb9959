"""The app of ``bench/outage.py``: two dependencies, A (the one that hangs) and B (healthy), one
pair of tasks per system, every body one HTTP GET with a client timeout.

Configured through the environment the driver sets and its worker inherits: ``BENCH_REDIS_URL``,
``BENCH_PREFIX``, ``BENCH_TIMEOUT`` (the client's timeout, seconds), ``BENCH_RESET_TIMEOUT``
(every breaker's), ``BENCH_A_LIMIT`` (ours: A's fleet concurrency limit) and
``BENCH_B_LIMIT`` (ours: B's). A body that returns appends its end time to
``bench:done:<system>:<a|b>``.
"""

from __future__ import annotations

import functools
import os
import time
import urllib.error
import urllib.request
from typing import Any

import pybreaker
import redis
import tenacity
from celery import Celery

from resilience_tasks import BreakerPolicy, Concurrency, ResilienceManager, RetryPolicy

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
PREFIX = os.environ.get("BENCH_PREFIX", "rtbench-hang")
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "2"))
RESET_TIMEOUT = float(os.environ.get("BENCH_RESET_TIMEOUT", "10"))
A_LIMIT = int(os.environ.get("BENCH_A_LIMIT", "2"))
B_LIMIT = int(os.environ.get("BENCH_B_LIMIT", "4"))

#: Every system's retries: 3 attempts, waits of 0.5 s then 1 s, no jitter (runs repeat).
ATTEMPTS, FIRST_WAIT = 3, 0.5

app = Celery("bench_outage", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True, result_expires=3600, worker_hijack_root_logger=False
)
manager = ResilienceManager("bench", app=app, key_prefix=PREFIX)
client = redis.Redis.from_url(REDIS_URL)  # no decode_responses: pybreaker needs bytes


def done_key(system: str, dep: str) -> str:
    return f"bench:done:{system}:{dep}"


def get(url: str, system: str, dep: str) -> None:
    """GET ``url`` (a 5xx or a network error, a timeout included, is the dependency failing),
    then record the end of the body."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise ConnectionError(f"HTTP {error.code} from {url}") from None
    client.rpush(done_key(system, dep), repr(time.time()))


# -- plain Celery, the call retried in the worker by tenacity -----------------------------------

_tenacity = tenacity.retry(
    stop=tenacity.stop_after_attempt(ATTEMPTS),
    wait=tenacity.wait_exponential(multiplier=FIRST_WAIT, max=4.0),
    reraise=True,
)


@app.task(queue="tn-a")  # type: ignore[untyped-decorator]
def tenacity_a(url: str) -> None:
    _tenacity(get)(url, "tenacity", "a")


@app.task(queue="tn-b")  # type: ignore[untyped-decorator]
def tenacity_b(url: str) -> None:
    _tenacity(get)(url, "tenacity", "b")


# -- plain Celery, the task retried by Celery (autoretry_for: a countdown per retry) -------------

_AUTORETRY: dict[str, Any] = {
    "autoretry_for": (OSError,),  # ConnectionError and TimeoutError are OSErrors
    "max_retries": ATTEMPTS - 1,
    "retry_backoff": 1,  # Celery's smallest factor: countdowns of 1 s, then 2 s
    "retry_jitter": False,
}


@app.task(queue="ar-a", **_AUTORETRY)  # type: ignore[untyped-decorator]
def autoretry_a(url: str) -> None:
    get(url, "autoretry", "a")


@app.task(queue="ar-b", **_AUTORETRY)  # type: ignore[untyped-decorator]
def autoretry_b(url: str) -> None:
    get(url, "autoretry", "b")


# -- pybreaker on Redis, glued by hand: an open breaker retries the task after reset_timeout -----


@functools.cache
def pybreaker_for(dep: str) -> pybreaker.CircuitBreaker:
    """Built on first use: ``CircuitRedisStorage`` writes its keys when it is created."""
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"{PREFIX}:pb:{dep}"
    )
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=RESET_TIMEOUT, state_storage=storage)


def _pybreaker_call(task: Any, url: str, dep: str) -> None:
    try:
        pybreaker_for(dep).call(get, url, "pybreaker", dep)
    except pybreaker.CircuitBreakerError as refused:
        raise task.retry(exc=refused, countdown=RESET_TIMEOUT) from None


@app.task(bind=True, queue="pb-a", max_retries=None)  # type: ignore[untyped-decorator]
def pybreaker_a(self: Any, url: str) -> None:
    _pybreaker_call(self, url, "a")


@app.task(bind=True, queue="pb-b", max_retries=None)  # type: ignore[untyped-decorator]
def pybreaker_b(self: Any, url: str) -> None:
    _pybreaker_call(self, url, "b")


# -- ours ----------------------------------------------------------------------------------------

RETRY = RetryPolicy(max_attempts=ATTEMPTS, initial=FIRST_WAIT, maximum=4.0, jitter=0.0)

#: A breaker that counts failures only, pybreaker's thresholds.
FAILURES_ONLY = BreakerPolicy(fail_max=5, reset_timeout=RESET_TIMEOUT)
#: What we recommend for a dependency that can hang: two calls in a row slower than 1 s open the
#: breaker (a timeout is slow too), whatever fail_max says.
SLOW_CALLS = BreakerPolicy(
    fail_max=5, reset_timeout=RESET_TIMEOUT, slow_call_duration=1.0, slow_call_max=2
)

manager.resource("ob-a", breaker=FAILURES_ONLY)
manager.resource("ob-b", breaker=FAILURES_ONLY)
# The bulkhead: at most A_LIMIT calls to A in flight across the fleet; one over it leaves its
# worker slot through the deferred store instead of waiting in it.
manager.resource("o-a", breaker=SLOW_CALLS, concurrency=Concurrency(limit=A_LIMIT))
manager.resource("o-b", breaker=SLOW_CALLS, concurrency=Concurrency(limit=B_LIMIT))


@manager.task(resource="ob-a", retry=RETRY)
def ours_breaker_a(url: str) -> None:
    get(url, "ours-breaker", "a")


@manager.task(resource="ob-b", retry=RETRY)
def ours_breaker_b(url: str) -> None:
    get(url, "ours-breaker", "b")


@manager.task(resource="o-a", retry=RETRY)
def ours_a(url: str) -> None:
    get(url, "ours", "a")


@manager.task(resource="o-b", retry=RETRY)
def ours_b(url: str) -> None:
    get(url, "ours", "b")


#: Each system's (A task, B task, queues its worker consumes).
SYSTEMS: dict[str, tuple[Any, Any, tuple[str, str]]] = {
    "tenacity": (tenacity_a, tenacity_b, ("tn-a", "tn-b")),
    "autoretry": (autoretry_a, autoretry_b, ("ar-a", "ar-b")),
    "pybreaker": (pybreaker_a, pybreaker_b, ("pb-a", "pb-b")),
    "ours-breaker": (ours_breaker_a, ours_breaker_b, ("ob-a", "ob-b")),
    "ours": (ours_a, ours_b, ("o-a", "o-b")),
}
