"""The deployment's beat schedule, in one place.

The resilience manager adds its own entry (the deferred pump, every ``PUMP_INTERVAL``
seconds). Entries for health probes and other periodic work go in ``SCHEDULE``. Run exactly
one beat per deployment; every entry carries a short ``expires`` so a backlog of stale runs is
dropped after an outage instead of executing all at once.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

#: Seconds between runs of the deferred pump: how late due work may come back, at most.
PUMP_INTERVAL = 1.0

SCHEDULE: dict[str, dict[str, Any]] = {}


def install(app: Celery) -> None:
    """Add ``SCHEDULE`` to ``app``'s beat schedule, keeping entries already there."""
    if SCHEDULE:
        app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **SCHEDULE}
