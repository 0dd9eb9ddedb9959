"""A Celery app for the Redis outage tests, run as ``celery worker`` and ``celery beat``.

Configured from the environment by the test that starts it:

* ``OUTAGE_BROKER_URL``, ``OUTAGE_RESULT_URL``, ``OUTAGE_STATE_URL``: the broker, the result
  backend and the resilience state store (private ``redis-server`` processes, one or several);
* ``OUTAGE_PREFIX``, ``OUTAGE_TEAM``, ``OUTAGE_RESOURCE``: this test's names;
* ``OUTAGE_LOG``: a file where every body appends one line when it starts and one when it
  ends. A file, not Redis: a body that runs while Redis is down must still be seen;
* ``OUTAGE_DEPENDENCY_DOWN``: while this file exists, the dependency of ``dependent`` fails.
"""

from __future__ import annotations

import os
import time

from celery import Celery, current_task

from resilience_tasks import BreakerPolicy, ResilienceManager, RetryPolicy

BROKER_URL = os.environ["OUTAGE_BROKER_URL"]
RESULT_URL = os.environ["OUTAGE_RESULT_URL"]
STATE_URL = os.environ["OUTAGE_STATE_URL"]
LOG = os.environ["OUTAGE_LOG"]
DEPENDENCY_DOWN = os.environ["OUTAGE_DEPENDENCY_DOWN"]
RESOURCE = os.environ["OUTAGE_RESOURCE"]
HEALTHY = f"{RESOURCE}-healthy"
FLAKY = f"{RESOURCE}-flaky"

app = Celery("outage_app", broker=BROKER_URL, backend=RESULT_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
    task_default_queue=f"celery-{RESOURCE}",
)
manager = ResilienceManager(
    os.environ["OUTAGE_TEAM"],
    app=app,
    redis_url=STATE_URL,
    key_prefix=os.environ["OUTAGE_PREFIX"],
    visibility_timeout=float(os.environ.get("OUTAGE_VISIBILITY_TIMEOUT", "20")),
    pump_interval=0.5,
    worker_pump_interval=0.5,
)


class DependencyDown(Exception):
    """What the flaky dependency raises while it is down."""


def record(kind: str, value: int) -> None:
    """Append ``<task id> <kind> <value> <pid>`` to the log in one write (O_APPEND: atomic)."""
    line = f"{current_task.request.id} {kind} {value} {os.getpid()}\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@manager.task(resource=HEALTHY, rate_limit="1000/second")
def work(i: int, seconds: float) -> int:
    """Healthy work under a fleet rate limit."""
    record("start", i)
    time.sleep(seconds)
    record("end", i)
    return i * 2


@manager.task(
    resource=FLAKY,
    breaker=BreakerPolicy(fail_max=3, reset_timeout=1.0),
    retry=RetryPolicy.exponential(max_attempts=100, initial=0.2, maximum=1.0, jitter=0.1),
)
def dependent(i: int) -> int:
    """Work on a dependency that fails while ``OUTAGE_DEPENDENCY_DOWN`` exists."""
    record("start", i)
    if os.path.exists(DEPENDENCY_DOWN):
        record("failed", i)
        raise DependencyDown(f"dependency down for {i}")
    record("end", i)
    return i * 3
