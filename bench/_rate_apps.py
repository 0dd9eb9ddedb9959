"""The apps of ``bench/rate_limit.py`` (one limit, one task body, three systems), imported by its
driver and its workers; configured through ``BENCH_REDIS_URL`` and ``BENCH_RL_*``.

Every body appends one JSON record to ``RECORDS_KEY`` (number, start and end, pid, times sent
back); ours also records when its granting ``acquire`` began and returned.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import dramatiq
import redis
from celery import Celery
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from resilience_tasks import RateLimit, ResilienceManager

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
WORK_SECONDS = float(os.environ.get("BENCH_RL_WORK_MS", "10")) / 1000
MIN_BACKOFF_MS = int(os.environ.get("BENCH_RL_MIN_BACKOFF", "1000"))
MAX_BACKOFF_MS = int(os.environ.get("BENCH_RL_MAX_BACKOFF", "10000"))

#: The fleet-wide limit, per second, of every system.
LIMIT = 20
#: Redis list of the run records (one JSON object per executed task body).
RECORDS_KEY = "bench:rl:runs"
#: Key prefix of the resilience state (limiter windows, deferred store...).
PREFIX = "rtbench-rl"

OURS_QUEUE = "limited-api"
OURS_NOWAIT_QUEUE = "limited-api-nowait"
CELERY_QUEUE = "celery-rate-limited"
DRAMATIQ_QUEUE = "dramatiq-rate-limited"

_records = redis.Redis.from_url(REDIS_URL)


def _body(n: int, started: float, resent: int, admission: dict[str, Any] | None = None) -> None:
    """The task's work (a short sleep standing in for an API call), then its record."""
    if WORK_SECONDS:
        time.sleep(WORK_SECONDS)
    record = {"n": n, "start": started, "end": time.time(), "pid": os.getpid(), "resent": resent}
    record.update(admission or {})
    _records.rpush(RECORDS_KEY, json.dumps(record))


# -- ours ------------------------------------------------------------------------------------------

ours_app = Celery("bench_rl", broker=REDIS_URL, backend=REDIS_URL)
ours_app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)
manager = ResilienceManager("bench", app=ours_app, key_prefix=PREFIX, pump_interval=0.5)


class _AdmissionClock:
    """Wraps the limiter's ``acquire`` in this process: when the last granting call began and
    returned, and how many refusals came before it. The task body reads them."""

    def __init__(self, limiter: Any) -> None:
        self._acquire = limiter.acquire
        self.asked = 0.0
        self.answered = 0.0
        self.refused = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        asked = time.time()  # the window's stamp is taken inside the call (the server's clock)
        decision = self._acquire(*args, **kwargs)
        if decision.allowed:
            self.asked, self.answered = asked, time.time()
        else:
            self.refused += 1
        return decision

    def take(self) -> dict[str, Any]:
        taken = {"admitted": self.asked, "granted": self.answered, "refused": self.refused}
        self.refused = 0
        return taken


_limiter = getattr(manager, "limiter", None) or manager._limiter  # internal: timing only
_clock = _AdmissionClock(_limiter)
_limiter.acquire = _clock


def _deferrals(task: Any) -> int:
    headers = getattr(task.request, "headers", None) or {}
    book = headers.get("resilience") or getattr(task.request, "resilience", None) or {}
    return int(book.get("defer_count", 0))


@manager.task(  # type: ignore[untyped-decorator]
    resource=OURS_QUEUE, rate_limit=f"{LIMIT}/second", bind=True
)
def call(self: Any, n: int) -> None:
    """Ours, default ``RateLimit``: waits up to ``max_wait_in_worker`` (1 s), then defers."""
    _body(n, time.time(), _deferrals(self), _clock.take())


@manager.task(  # type: ignore[untyped-decorator]
    resource=OURS_NOWAIT_QUEUE,
    rate_limit=RateLimit(f"{LIMIT}/second", max_wait_in_worker=0.0),
    bind=True,
)
def call_nowait(self: Any, n: int) -> None:
    """Ours, pure deferral: every refusal goes to the deferred store."""
    _body(n, time.time(), _deferrals(self), _clock.take())


# -- Celery's own rate_limit -----------------------------------------------------------------------

celery_app = Celery("bench_rl_celery", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
    # what ResilienceManager installs into ours_app (resilience_tasks/adapter/install.py)
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    event_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 900.0},
)


@celery_app.task(rate_limit=f"{LIMIT}/s", queue=CELERY_QUEUE)  # type: ignore[untyped-decorator]
def celery_call(n: int) -> None:
    """Celery's ``rate_limit``: a token bucket in each worker instance."""
    _body(n, time.time(), 0)


# -- Dramatiq --------------------------------------------------------------------------------------

dramatiq_broker = RedisBroker(url=REDIS_URL)  # type: ignore[no-untyped-call]
dramatiq_broker.add_middleware(CurrentMessage())
dramatiq.set_broker(dramatiq_broker)
window = WindowRateLimiter(  # type: ignore[no-untyped-call]
    RedisBackend(url=REDIS_URL), "bench-rl-window", limit=LIMIT, window=1
)


@dramatiq.actor(
    queue_name=DRAMATIQ_QUEUE,
    broker=dramatiq_broker,
    max_retries=1000,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
)
def dramatiq_call(n: int) -> None:
    """Dramatiq's window limiter; a refusal raises ``RateLimitExceeded`` (retried)."""
    with window.acquire():
        started = time.time()
        message = CurrentMessage.get_current_message()
        _body(n, started, int(message.options.get("retries", 0)) if message else 0)
