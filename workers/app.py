"""A ready Celery app with resilience installed.

Configuration comes from the environment, the way container deployments set it:

* ``CELERY_BROKER_URL`` (default ``redis://127.0.0.1:6379/0``) and ``CELERY_RESULT_BACKEND``
  (default: the broker URL);
* ``RESILIENCE_REDIS_URL`` for the state store (default: the broker URL);
* ``RESILIENCE_TEAM`` (default ``default``) and ``RESILIENCE_VISIBILITY_TIMEOUT`` (seconds).

Start a deployment the usual Celery way: workers (``celery -A workers.app worker -E``) plus
exactly one beat (``celery -A workers.app beat``), which drives the deferred pump. Workers
started without ``-Q`` consume every resource queue and this team's control queue,
``resilience.control.<team>``. A setting with a wrong value stops the import with an error that
names the variable, not the keyword it ends up in.
"""

from __future__ import annotations

import os

from celery import Celery

import beat_schedule
from resilience_tasks import ConfigurationError, ResilienceManager


def _seconds(name: str, default: str) -> float:
    raw = os.environ.get(name, default)
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None


def _team() -> str:
    team = os.environ.get("RESILIENCE_TEAM", "default")
    if not team or ":" in team:
        raise ConfigurationError(
            f"RESILIENCE_TEAM must be a non-empty name without ':', got {team!r}"
        )
    return team


broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery(
    "workers",
    broker=broker_url,
    backend=os.environ.get("CELERY_RESULT_BACKEND", broker_url),
    include=["workers.tasks"],
)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
    result_expires=86_400,
)

manager = ResilienceManager(
    _team(),
    app=app,
    visibility_timeout=_seconds("RESILIENCE_VISIBILITY_TIMEOUT", "900"),
    pump_interval=beat_schedule.PUMP_INTERVAL,
)
beat_schedule.install(app)
