"""The Celery app and tasks of the benchmarks, imported by the bench driver and its workers.

Configured through the environment (set by ``_common.load_apps`` and inherited by the worker
subprocesses): ``BENCH_REDIS_URL`` (broker, result backend and resilience state, one database
per bench script), ``BENCH_PREFIX`` (key prefix of the resilience state) and ``BENCH_TEAM``.

The ``ResilienceManager`` installs its settings into the app (JSON only, ``acks_late``,
``worker_prefetch_multiplier=1``, a visibility timeout), so the bare Celery tasks below run with
exactly the same settings as the resilient ones; only the task base class differs. Task names
are Celery's defaults (``_apps.<function>``).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from celery import Celery

from resilience_tasks import BreakerPolicy, ResilienceManager, RetryPolicy

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)
manager = ResilienceManager(
    os.environ.get("BENCH_TEAM", "bench"),
    app=app,
    key_prefix=os.environ.get("BENCH_PREFIX", "rtbench"),
)

# -- breaker_herd.py -----------------------------------------------------------------------------

HERD_RESOURCE = "herd-dep"
HERD_POLICY = BreakerPolicy(fail_max=5, reset_timeout=1.0)


@manager.task(
    resource=HERD_RESOURCE,
    breaker=HERD_POLICY,
    retry=RetryPolicy.none(),
)
def call_dependency(url: str) -> int:
    """GET ``url``; a 5xx answer or a network error is a failure of the dependency."""
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        raise ConnectionError(f"HTTP {error.code} from {url}") from None


# -- overhead.py -----------------------------------------------------------------------------------

OVERHEAD_RESOURCE = "overhead-noop"
OVERHEAD_BARE_QUEUE = "overhead-bare"


@manager.task(resource=OVERHEAD_RESOURCE, retry=RetryPolicy.none())
def noop_resilient() -> None:
    """Does nothing, through the resilience layer (closed breaker: the hot path)."""


@app.task(queue=OVERHEAD_BARE_QUEUE)  # type: ignore[untyped-decorator]
def noop_bare() -> None:
    """Does nothing, as a plain Celery task."""


# -- deferral.py -----------------------------------------------------------------------------------

DEFERRAL_RESOURCE = "deferral-target"
DEFERRAL_COUNTDOWN_QUEUE = "deferral-countdown"
#: Held open for an hour, like the countdown of the baseline.
DEFERRAL_POLICY = BreakerPolicy(fail_max=5, reset_timeout=3600.0)


@manager.task(
    resource=DEFERRAL_RESOURCE,
    breaker=DEFERRAL_POLICY,
    retry=RetryPolicy.none(),
)
def deferred_work(item: int) -> int:
    """Work that waits in the deferred store while its breaker is open."""
    return item


@app.task(queue=DEFERRAL_COUNTDOWN_QUEUE)  # type: ignore[untyped-decorator]
def countdown_work(item: int) -> int:
    """The same work parked as a Celery countdown (ETA) message."""
    return item
